"""A small exception tree. Each error knows its exit code; messages name the way out."""

from __future__ import annotations

__all__ = ["ConnectionFailed", "FastmigrateError", "SchemaError", "UsageError"]


class FastmigrateError(Exception):
    """A run that cannot go on. Exit code 2 unless a subclass says otherwise."""

    exit_code = 2


class UsageError(FastmigrateError):
    """Invalid usage or input: a bad URL, a bad number. Exit code 127."""

    exit_code = 127


class SchemaError(UsageError):
    """The database is not a nova cell database, or not one fastmigrate knows."""


class ConnectionFailed(FastmigrateError):
    """The database could not be reached or refused the credentials."""
