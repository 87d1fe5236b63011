"""fastmigrate: fast, online, verifiable nova data migrations."""

from __future__ import annotations

from .errors import ConnectionFailed, FastmigrateError, SchemaError, UsageError
from .flavors import flavor_status, migrate_flavors
from .options import FlavorOptions
from .results import DatabaseResult, ExitCode, RunResult

__all__ = [
    "ConnectionFailed",
    "DatabaseResult",
    "ExitCode",
    "FastmigrateError",
    "FlavorOptions",
    "RunResult",
    "SchemaError",
    "UsageError",
    "flavor_status",
    "migrate_flavors",
]
__version__ = "0.1.0"
