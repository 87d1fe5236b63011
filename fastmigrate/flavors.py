"""``migrate_flavors``: the library call behind ``fastmigrate flavors``."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from typing import Protocol
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from . import reader
from .db import (DATABASE_ERRORS, STATEMENT_TIMEOUT_ERRNOS, check_schema, check_writable, connect_engine, mask,
                 mysql_errno, normalize_url, scrub)
from .errors import FastmigrateError, UsageError
from .flavortables import FlavorTables
from .options import FlavorOptions
from .pipeline import run_pipeline
from .results import DatabaseResult, ExitCode, RunResult

__all__ = ["flavor_status", "guarded", "migrate_flavors"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[DatabaseResult], None]
_FAILURES: tuple[type[Exception], ...] = (*DATABASE_ERRORS, OSError)


async def flavor_status(databases: Sequence[str], options: FlavorOptions = FlavorOptions(), *,
                        on_progress: ProgressCallback | None = None, stop: asyncio.Event | None = None,
                        cells: Sequence[str | None] = ()) -> RunResult:
    """Read only: what a run would find (left, busy, broken) and the rows nova's Liberty blocker migration
    291 counts. A dry run on read-only sessions, plus that count."""
    return await migrate_flavors(databases, dataclasses.replace(options, dry_run=True), on_progress=on_progress,
                                 stop=stop, cells=cells, _status=True)


async def migrate_flavors(databases: Sequence[str], options: FlavorOptions = FlavorOptions(), *,
                          on_progress: ProgressCallback | None = None, stop: asyncio.Event | None = None,
                          cells: Sequence[str | None] = (), _status: bool = False) -> RunResult:
    """Move every candidate instance's flavor from system_metadata into instance_extra.flavor.

    All URLs are parsed, and every database's schema and write privileges checked, before anything is
    written anywhere; then the databases are migrated concurrently. Errors of one database are recorded in
    its result (the others go on); invalid usage raises :class:`UsageError`. Setting ``stop`` ends the run
    early and cleanly: batches being written commit, nothing else is started, and results say ``interrupted``.
    ``cells`` names the databases in reports (by position) when they came from cell_mappings.
    """
    if not databases:
        raise UsageError("name at least one database with --db URL")
    urls = [normalize_url(text) for text in databases]
    secrets = [url.password for url in urls]
    # Labels show the URL as the operator wrote it (driver and all), password masked.
    results = [DatabaseResult(database=mask(text), cell=cell, dry_run=options.dry_run)
               for text, cell in itertools.zip_longest(databases, cells[:len(databases)])]
    engines = [connect_engine(url, pool_size=options.writers_on(url.get_backend_name()) + 1,
                              read_only=options.dry_run, statement_timeout=options.statement_timeout)
               for url in urls]
    try:
        # Every database is checked before any is written to: one that is no nova database stops them all
        # (the command line is wrong); one that cannot be reached is reported and the others go on.
        await asyncio.gather(*(guarded(_check(e, options, r), r, secrets) for e, r in zip(engines, results)))
        if any(r.error_code == ExitCode.USAGE for r in results):
            for r in results:
                if r.error is None:
                    r.error, r.error_code = "not started: another --db is invalid (see its error)", ExitCode.FAILED
        else:
            await asyncio.gather(*(guarded(_migrate(e, options, r, on_progress, stop, _status), r, secrets)
                                   for e, r in zip(engines, results) if r.error is None))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    return RunResult(databases=results, dry_run=options.dry_run, command="status" if _status else "flavors")


async def _check(engine: AsyncEngine, options: FlavorOptions, result: DatabaseResult) -> None:
    if options.max_load and engine.dialect.name != "mysql":
        raise UsageError(f"{result.database}: --max-load reads MySQL/MariaDB status variables; "
                         "use --sleep or --max-rate on SQLite")
    await check_schema(engine, result.database)
    if not options.dry_run:
        await check_writable(engine, result.database, soft_delete=options.soft_delete)


async def _migrate(engine: AsyncEngine, options: FlavorOptions, result: DatabaseResult,
                   on_progress: ProgressCallback | None, stop: asyncio.Event | None, status: bool) -> None:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        result.pending_before = await reader.count_pending(conn, options.include_deleted)
    log.info("%s: %s instances without a flavor blob%s", result.cell or result.database,
             f"{result.pending_before:,}", " (dry run)" if options.dry_run else "")
    tables = FlavorTables(merge_specs=options.flavor_extra_specs, api_url=options.api_db)
    try:
        await tables.open(engine, result.cell or result.database)
        await run_pipeline(engine, options, result, on_progress, stop, tables)
    finally:
        await tables.close()
    result.interrupted = stop is not None and stop.is_set()
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if options.dry_run:
            result.remaining = result.pending_before
        else:
            result.remaining = await reader.count_pending(conn, options.include_deleted)
        if status:
            result.blocker_rows = await reader.count_blockers(conn)


class _Outcome(Protocol):
    database: str
    error: str | None
    error_code: int


async def guarded(work: Awaitable[None], result: _Outcome, secrets: list[str | None]) -> None:
    """Record a database's failure in its result, so the other databases go on."""
    try:
        await work
    except FastmigrateError as exc:
        result.error, result.error_code = scrub(str(exc), secrets), exc.exit_code
        log.error("%s", result.error)
    except _FAILURES as exc:
        # Whatever was committed stays committed and is consistent (one batch, one transaction).
        text = str(getattr(exc, "orig", None) or exc)
        advice = "committed batches are kept, rerun to continue"
        if mysql_errno(exc) in STATEMENT_TIMEOUT_ERRNOS:
            advice = ("a statement ran longer than --statement-timeout allows: lower --batch-size, or raise "
                      "--statement-timeout; " + advice)
        result.error = scrub(f"{result.database}: {text}; {advice}", secrets)
        result.error_code = ExitCode.FAILED
        log.error("%s", result.error)
