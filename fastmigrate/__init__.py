"""fastmigrate: fast, online, verifiable nova data migrations."""

from __future__ import annotations

from .errors import ConnectionFailed, FastmigrateError, SchemaError, UsageError
from .flavors import flavor_status, migrate_flavors
from .options import FlavorOptions
from .results import DatabaseResult, ExitCode, RunResult
from .verify import VerifyResult, VerifyRun, verify_flavors

__all__ = [
    "ConnectionFailed",
    "DatabaseResult",
    "ExitCode",
    "FastmigrateError",
    "FlavorOptions",
    "RunResult",
    "VerifyResult",
    "VerifyRun",
    "SchemaError",
    "UsageError",
    "flavor_status",
    "migrate_flavors",
    "verify_flavors",
]
__version__ = "0.1.0"
