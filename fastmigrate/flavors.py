"""``migrate_flavors``: the library call behind ``fastmigrate flavors``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from . import reader
from .db import check_schema, connect_engine, mask, normalize_url, scrub
from .errors import FastmigrateError, UsageError
from .options import FlavorOptions
from .pipeline import run_pipeline
from .results import DatabaseResult, ExitCode, RunResult

__all__ = ["flavor_status", "migrate_flavors"]

ProgressCallback = Callable[[DatabaseResult], None]


async def flavor_status(databases: Sequence[str], options: FlavorOptions = FlavorOptions(), *,
                        on_progress: ProgressCallback | None = None, stop: asyncio.Event | None = None) -> RunResult:
    """Read only: what a run would find (left, busy, broken) and the rows nova's Liberty blocker migration
    291 counts. A dry run on read-only sessions, plus that count."""
    return await migrate_flavors(databases, dataclasses.replace(options, dry_run=True), on_progress=on_progress,
                                 stop=stop, _status=True)


async def migrate_flavors(databases: Sequence[str], options: FlavorOptions = FlavorOptions(), *,
                          on_progress: ProgressCallback | None = None, stop: asyncio.Event | None = None,
                          _status: bool = False) -> RunResult:
    """Move every candidate instance's flavor from system_metadata into instance_extra.flavor.

    All URLs are parsed and every schema checked before anything is written anywhere; then the databases
    are migrated concurrently. Errors of one database are recorded in its result (the others go on);
    invalid usage raises :class:`UsageError`. Setting ``stop`` ends the run early and cleanly: batches being
    written commit, nothing else is started, and every result says ``interrupted``.
    """
    if not databases:
        raise UsageError("name at least one database with --db URL")
    urls = [normalize_url(text) for text in databases]
    secrets = [url.password for url in urls]
    # Labels show the URL as the operator wrote it (driver and all), password masked.
    results = [DatabaseResult(database=mask(text), dry_run=options.dry_run) for text in databases]
    await asyncio.gather(*(_one(url, options, result, secrets, on_progress, stop, _status)
                           for url, result in zip(urls, results)))
    return RunResult(databases=results, dry_run=options.dry_run, command="status" if _status else "flavors")


async def _one(url: URL, options: FlavorOptions, result: DatabaseResult, secrets: list[str | None],
               on_progress: ProgressCallback | None, stop: asyncio.Event | None, status: bool) -> None:
    engine = connect_engine(url, pool_size=options.writers + 1, read_only=options.dry_run)
    try:
        await check_schema(engine, result.database)
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            result.pending_before = await reader.count_pending(conn, options.include_deleted)
        await run_pipeline(engine, options, result, on_progress, stop)
        result.interrupted = stop is not None and stop.is_set()
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if options.dry_run:
                result.remaining = result.pending_before
            else:
                result.remaining = await reader.count_pending(conn, options.include_deleted)
            if status:
                result.blocker_rows = await reader.count_blockers(conn)
    except FastmigrateError as exc:
        result.error, result.error_code = scrub(str(exc), secrets), exc.exit_code
    except (DBAPIError, OSError) as exc:
        # Whatever was committed stays committed and is consistent (one batch, one transaction).
        text = str(getattr(exc, "orig", None) or exc)
        result.error = scrub(f"{result.database}: {text}; committed batches are kept, rerun to continue", secrets)
        result.error_code = ExitCode.FAILED
    finally:
        await engine.dispose()
