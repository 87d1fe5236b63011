"""copy, sync and verify: placement's 11 tables from nova_api into a placement database.

How the three divide the outage:

- ``copy`` runs while nova still runs: chunks of ``chunk_size`` rows in key order, read from the source in
  autocommit (no snapshot held open) and written to the target one transaction per chunk, several tables at
  once. The result is not a consistent snapshot (the source keeps changing); it is most of the data, in place.
- ``sync`` runs again, during the outage, when placement's writers are stopped: it compares the two sides
  chunk by chunk with checksums computed in each server and re-copies only what differs, row by row (rows
  deleted at the source are deleted). Little changed, little to do.
- ``verify`` compares the same checksums and changes nothing: exit 0 when equal, 3 with the differing ranges.

When both databases are on one server and the target's user may read the source, rows never travel through
fastmigrate: each chunk is one ``INSERT ... SELECT`` from the source database, run in the target's session
(READ COMMITTED, so the source rows are read without locks). Otherwise they are read and written back
(multi-row INSERTs), reading the next chunk while writing this one.

Every write is idempotent: a copy chunk replaces its key range (DELETE of the range, then INSERT, in one
transaction), and a sync repair deletes every key it then inserts, so a chunk retried after a lost
connection, whose commit may or may not have happened, is written once. Target sessions run with
``NO_AUTO_VALUE_ON_ZERO`` (the VCPU resource class is id 0 in an extracted placement) and without foreign-key
checks (self-referencing provider trees; tables copied concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db import (DATABASE_ERRORS, connect_engine, mask, mysql_errno, mysql_url, read_catalog, read_rows,
                  retrying, schema_problems)
from ..errors import FastmigrateError, SchemaError, UsageError
from . import statements, tracking
from .results import PlacementRun, TableResult
from .schema import (ALEMBIC_VERSION, COPY_ORDER, DEFERRED_INDEXES, INITIAL_REVISION, SPECS, TableSpec, add_indexes,
                     alembic_version, bare_tables)
from .statements import Key

__all__ = ["PlacementOptions", "TargetNotEmpty", "copy_placement", "sync_placement", "untrack_placement",
           "verify_placement"]

log = logging.getLogger(__name__)
TARGET_SETTINGS = ("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')",
                   "SET SESSION foreign_key_checks = 0")
Progress = Callable[[PlacementRun], None]
_REQUIRED = {name: spec.columns for name, spec in SPECS.items()}  # what both sides must have


@dataclass(frozen=True, slots=True)
class PlacementOptions:
    chunk_size: int = 5_000  # rows per chunk: one transaction of a copy, one checksum of a sync or verify
    parallel: int = 3  # tables worked on at once
    replace: bool = False  # copy: empty a target that holds placement data instead of refusing it
    statement_timeout: float = 0  # seconds; 0: the server's own limit
    in_server: bool = True  # copy with INSERT ... SELECT when both databases are on one server
    track_changes: bool = False  # copy, sync: install change tracking in nova_api (see tracking.py)
    checksums: bool = False  # sync: compare checksums even when the change log could be followed

    def __post_init__(self) -> None:
        for name, low in (("chunk_size", 1), ("parallel", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise UsageError(f"{name.replace('_', '-')} must be a whole number of at least {low}, not {value!r}")


class TargetNotEmpty(FastmigrateError):
    """The target already holds placement data (exit 2): the operator decides, with --replace."""


@dataclass(slots=True)
class _Sides:
    source: AsyncEngine
    target: AsyncEngine
    run: PlacementRun
    source_db: str | None = None  # the source database's name, when the target's sessions can read it in place
    target_name: str = ""  # host:port/database of the target as its URL names it: whom a change log is kept for
    writer: AsyncEngine | None = None  # a session that may write nova_api: change tracking only

    def source_writer(self, opts: PlacementOptions) -> AsyncEngine:
        """The one engine that writes nova_api, and only the change log and its triggers."""
        if self.writer is None:
            self.writer = connect_engine(self.source.url, pool_size=1, statement_timeout=opts.statement_timeout)
        return self.writer

    async def close(self) -> None:
        await self.source.dispose()
        await self.target.dispose()
        if self.writer is not None:
            await self.writer.dispose()


def _open(command: str, source_url: str, target_url: str, opts: PlacementOptions) -> _Sides:
    """Both engines: the source read-only always, the target read-only for verify."""
    source, target = mysql_url(source_url), mysql_url(target_url)
    if (source.host, source.port, source.database) == (target.host, target.port, target.database):
        raise UsageError(f"--from and --to are the same database ({mask(target_url)}); placement goes to a "
                         "database of its own, e.g. .../placement")
    pool = opts.parallel + 2
    return _Sides(
        connect_engine(source, pool_size=pool, read_only=True, statement_timeout=opts.statement_timeout),
        connect_engine(target, pool_size=pool, read_only=command == "verify", statement_timeout=opts.statement_timeout,
                       settings=TARGET_SETTINGS),
        PlacementRun(command, mask(source_url), mask(target_url)),
        target_name=f"{target.host}:{target.port or 3306}/{target.database}",
    )


async def _check_source(source: AsyncEngine, label: str) -> None:
    found, _ = await read_catalog(source, label, COPY_ORDER)
    problems = schema_problems(found, _REQUIRED)
    if problems:
        raise SchemaError(f"{label}: not a nova_api database holding placement's tables: "
                          f"{'; '.join(problems)}. Point --from at nova's API database ([api_database]/connection "
                          "in nova.conf)")


async def _target_tables(sides: _Sides) -> set[str]:
    """The placement tables the target has; refuses a target that has some of them but not all, or has them
    without the columns placement's initial schema gives them."""
    found, _ = await read_catalog(sides.target, sides.run.target, [*COPY_ORDER, ALEMBIC_VERSION])
    present = set(found) - {ALEMBIC_VERSION}
    if present and (problems := schema_problems(found, _REQUIRED)):
        raise SchemaError(f"{sides.run.target}: holds some of placement's tables but not as placement creates "
                          f"them: {'; '.join(problems)}. Point --to at an empty database (CREATE DATABASE "
                          "placement) or at one `placement-manage db sync` created")
    return set(found)


async def _first_rows(conn: AsyncConnection) -> list[str]:
    """The placement tables of the target that hold any row."""
    full = []
    for name in COPY_ORDER:
        if (await conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM `{name}`)")).scalar():
            full.append(name)
    return full


async def _revision(conn: AsyncConnection) -> str | None:
    return (await conn.exec_driver_sql(f"SELECT MAX(version_num) FROM `{ALEMBIC_VERSION}`")).scalar()


async def _prepare_target(sides: _Sides, opts: PlacementOptions) -> None:
    """An empty target gets placement's initial schema; one with placement data is refused, or with
    ``replace`` emptied (its schema and alembic revision kept)."""
    run = sides.run
    tables = await _target_tables(sides)
    if not tables & set(COPY_ORDER):
        # Secondary indexes come after the rows (see DEFERRED_INDEXES): an unstamped schema is one of ours.
        bare = MetaData()
        bare_tables(bare)
        async with sides.target.begin() as conn:
            await conn.run_sync(bare.create_all)
        run.created_schema = True
        return
    async with sides.target.begin() as conn:
        if ALEMBIC_VERSION not in tables:
            await conn.run_sync(alembic_version.create)
        full = await _first_rows(conn)
        revision = await _revision(conn)
        if not full:
            return
        if not opts.replace:
            state = (f"at alembic revision {revision}" if revision
                     else "without an alembic revision (an unfinished copy?)")
            raise TargetNotEmpty(
                f"{run.target}: already holds placement data ({', '.join(full)}), {state}. A placement service "
                "that started against it has filled traits and resource classes with ids of its own, which "
                "the copy must not mix with nova's. Stop placement, then rerun with --replace to empty these "
                "tables and copy again (its schema and alembic revision are kept); or, to bring an unfinished "
                "copy up to date instead, run `fastmigrate placement sync`")
        for name in COPY_ORDER:
            await conn.exec_driver_sql(f"TRUNCATE TABLE `{name}`")
        run.replaced = True


async def _missing_indexes(sides: _Sides) -> dict[str, list[tuple[str, bool, tuple[str, ...]]]]:
    """The secondary indexes a copy has yet to build: only in a schema of ours, not stamped yet (a schema
    placement made, or took to head, has the indexes its revision wants)."""
    async with sides.target.connect() as conn:
        if await _revision(conn) is not None:
            return {}
    _, indexes = await read_catalog(sides.target, sides.run.target, DEFERRED_INDEXES)
    missing = {name: [i for i in wanted if i[0] not in indexes.get(name, {})]
               for name, wanted in DEFERRED_INDEXES.items()}
    return {name: wanted for name, wanted in missing.items() if wanted}


async def _build_indexes(sides: _Sides, opts: PlacementOptions) -> None:
    """Build the indexes the copy deferred, one ALTER TABLE per table, ``opts.parallel`` tables at a time."""
    missing = await _missing_indexes(sides)
    gate = asyncio.Semaphore(opts.parallel)

    async def build(name: str) -> None:
        async with gate, sides.target.connect() as conn:
            await conn.exec_driver_sql(add_indexes(name, missing[name]))

    async with asyncio.TaskGroup() as tasks:
        for name in sorted(missing, key=lambda n: -COPY_ORDER.index(n)):
            tasks.create_task(build(name))
    sides.run.indexes_built = sum(len(wanted) for wanted in missing.values())


async def _stamp(sides: _Sides) -> None:
    """Mark the schema as placement's initial revision, once every table is copied: `placement-manage db
    sync` then takes it to head. A revision already there (a schema placement created) is left alone."""
    async with sides.target.begin() as conn:
        if await _revision(conn) is None:
            await conn.exec_driver_sql(f"INSERT INTO `{ALEMBIC_VERSION}` (version_num) VALUES (%s)",
                                       (INITIAL_REVISION,))
            sides.run.stamped = INITIAL_REVISION


# Where a session is: equal on both sides only when both URLs reach the same server (a Galera cluster's
# other node is another server: its rows go through fastmigrate).
_WHERE = "SELECT @@hostname, @@port, @@datadir, DATABASE()"
_DENIED = frozenset({1044, 1142, 1143})  # access to the database, a table, a column refused


async def _find_source_in_reach(sides: _Sides, opts: PlacementOptions) -> None:
    """Whether the target's sessions can read the source's tables in place (same server, and the target's
    user may SELECT them): then chunks are copied inside the server."""
    if not opts.in_server:
        return
    (source,), (target,) = await asyncio.gather(read_rows(sides.source, _WHERE), read_rows(sides.target, _WHERE))
    if tuple(source[:3]) != tuple(target[:3]):
        return
    try:
        for name in COPY_ORDER:
            await read_rows(sides.target, f"SELECT 1 FROM `{source[3]}`.`{name}` LIMIT 0")
    except DATABASE_ERRORS as exc:
        if mysql_errno(exc) in _DENIED:
            return
        raise
    sides.source_db = str(source[3])
    sides.run.in_server = True


async def _count(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{name}`")).scalar_one())


async def _each_table(sides: _Sides, opts: PlacementOptions, work: Callable[[TableSpec, TableResult], Any],
                      on_progress: Progress | None) -> None:
    """``work`` on every table, ``opts.parallel`` at a time, the biggest first (they set the run's length)."""
    run = sides.run
    counts = await asyncio.gather(*(_count(sides.source, name) for name in COPY_ORDER))
    run.expected_rows = sum(counts)
    run.tables = [TableResult(name) for name in COPY_ORDER]
    gate = asyncio.Semaphore(opts.parallel)

    async def one(result: TableResult) -> None:
        async with gate:
            began = time.monotonic()
            await work(SPECS[result.table], result)
            result.seconds = round(time.monotonic() - began, 3)
            log.debug("%s: done in %.1f s", result.table, result.seconds)
            if on_progress:
                on_progress(run)

    order = sorted(run.tables, key=lambda t: -counts[COPY_ORDER.index(t.table)])
    async with asyncio.TaskGroup() as tasks:
        for result in order:
            tasks.create_task(one(result))


def _key_of(spec: TableSpec) -> Callable[[Sequence[Any]], Key]:
    positions = [spec.columns.index(c) for c in spec.key]
    return lambda row: tuple(int(row[i]) for i in positions)


Write = tuple[str, Sequence[tuple[Any, ...]] | None]  # SQL, and the rows of an executemany (None: none)


async def _transaction(engine: AsyncEngine, writes: Sequence[Write]) -> list[int]:
    """These writes to the target in one transaction, retried: the rows each one touched. READ COMMITTED, so
    that an INSERT ... SELECT reads the source without locking it."""
    async def attempt() -> list[int]:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                counts = []
                for sql, rows in writes:
                    result = await (conn.exec_driver_sql(sql, [tuple(r) for r in rows]) if rows
                                    else conn.exec_driver_sql(sql))
                    counts.append(result.rowcount)
                return counts

    counts, _ = await retrying(attempt)
    return counts


async def _ranges(sides: _Sides, spec: TableSpec, size: int) -> AsyncIterator[tuple[Key | None, Key | None]]:
    """The source's key order cut into ranges ``(low, high]`` of ``size`` rows; the last one is open-ended
    (target rows past the source's last key belong to it)."""
    low: Key | None = None
    while True:
        bound = await read_rows(sides.source, statements.boundary(spec, low, size))
        high: Key | None = tuple(int(v) for v in bound[0]) if bound else None
        yield low, high
        if high is None:
            return
        low = high


async def _copy_in_server(sides: _Sides, spec: TableSpec, result: TableResult, opts: PlacementOptions,
                          on_progress: Progress | None) -> None:
    assert sides.source_db is not None
    async for low, high in _ranges(sides, spec, opts.chunk_size):
        where = statements.key_range(spec, low, high)
        _, copied = await _transaction(sides.target, [(statements.delete_range(spec, where), None),
                                                      (statements.insert_select(spec, sides.source_db, where), None)])
        result.source_rows += copied
        result.rows_copied += copied
        result.chunks += 1
        if on_progress:
            on_progress(sides.run)


async def _copy_table(sides: _Sides, spec: TableSpec, result: TableResult, opts: PlacementOptions,
                      on_progress: Progress | None) -> None:
    if sides.source_db:
        return await _copy_in_server(sides, spec, result, opts, on_progress)
    # Reading the next chunk overlaps writing this one: a queue of one chunk between them.
    chunks: asyncio.Queue[tuple[Key | None, Key, list[tuple[Any, ...]]] | None] = asyncio.Queue(1)
    key_of = _key_of(spec)

    async def read() -> None:
        low: Key | None = None
        while True:
            rows = await read_rows(sides.source, statements.read_after(spec, low, opts.chunk_size))
            if not rows:
                break
            high = key_of(rows[-1])
            await chunks.put((low, high, rows))
            result.source_rows += len(rows)
            if len(rows) < opts.chunk_size:
                break
            low = high
        await chunks.put(None)

    async def write() -> None:
        while (chunk := await chunks.get()) is not None:
            low, high, rows = chunk
            await _transaction(sides.target, [(statements.delete_range(spec, statements.key_range(spec, low, high)),
                                               None), (statements.insert(spec), rows)])
            result.rows_copied += len(rows)
            result.chunks += 1
            if on_progress:
                on_progress(sides.run)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read())
        tasks.create_task(write())


# Sync goes straight to the row-by-row comparison, skipping the chunk checksums, when most recent chunks
# differed anyway (changes spread over the whole table, as deleted allocations are): a checksum that is
# sure to differ only costs a scan of the chunk on each side.
_RECENT = 8


def row_by_row_first(recent: Sequence[bool]) -> bool:
    """Whether the next chunk should skip its checksum, given whether each recent chunk differed."""
    return len(recent) == _RECENT and sum(recent) > _RECENT // 2


async def _walk(sides: _Sides, spec: TableSpec, result: TableResult, opts: PlacementOptions, *, repair: bool,
                on_progress: Progress | None) -> None:
    """Chunks of the source's key order, compared by checksum in each server; a differing chunk is listed
    (verify) or made equal row by row (sync). The last chunk is open-ended: target rows past the source's
    last key belong to it."""
    recent: deque[bool] = deque(maxlen=_RECENT)
    async for low, high in _ranges(sides, spec, opts.chunk_size):
        if repair and row_by_row_first(recent):
            differed = await _repair(sides, spec, result, low, high, count=True)
        else:
            sql = statements.checksum(spec, low, high)
            (source,), (target,) = await asyncio.gather(read_rows(sides.source, sql),
                                                        read_rows(sides.target, sql))
            result.source_rows += int(source[0])
            result.target_rows += int(target[0])
            differed = tuple(source) != tuple(target)
            if differed and repair:
                await _repair(sides, spec, result, low, high, count=False)
            elif differed:
                result.differing.append((low, high))
        result.chunks += 1
        result.chunks_repaired += int(differed and repair)
        recent.append(differed)
        if on_progress:
            on_progress(sides.run)


# Keys per statement when a sync deletes or reads rows by key.
_KEYS_PER_STATEMENT = 1_000


async def _repair(sides: _Sides, spec: TableSpec, result: TableResult, low: Key | None, high: Key | None, *,
                  count: bool) -> bool:
    """Make the target's ``(low, high]`` equal to the source's, touching only rows that differ: those gone
    at the source are deleted, those new or changed copied. Whether anything differed. ``count``: add the
    chunk's rows to the result (no checksum counted them)."""
    sql = statements.row_hashes(spec, low, high)
    source_rows, target_rows = await asyncio.gather(read_rows(sides.source, sql), read_rows(sides.target, sql))
    width = len(spec.key)
    source = {tuple(int(v) for v in row[:width]): row[width] for row in source_rows}
    target = {tuple(int(v) for v in row[:width]): row[width] for row in target_rows}
    if count:
        result.source_rows += len(source)
        result.target_rows += len(target)
    differing = {key for key, digest in target.items() if source.get(key) != digest}
    differing.update(key for key, digest in source.items() if target.get(key) != digest)
    if not differing:
        return False
    await _apply(sides, [(spec.name, sorted(differing))])
    return True


# A rewrite's statements, each with what its row count is: rows "deleted" from the target, rows "copied" to
# it, or "" (nothing to count).
Labelled = list[tuple[Write, str]]
_DUPLICATE = 1062


def _shares(logged: dict[str, set[Key]], parallel: int) -> list[list[tuple[str, Sequence[Key]]]]:
    """The logged keys cut into at most ``parallel`` transactions of about equal size. A table with a unique
    key besides its primary key stays in one (a name passed from one row to another is rewritten by both rows
    at once, see ``_apply``); the others (allocations) fill the shares up, cut by key."""
    shares: list[list[tuple[str, Sequence[Key]]]] = [[] for _ in range(parallel)]
    sizes = [0] * parallel
    level = -(-sum(len(keys) for keys in logged.values()) // parallel)
    whole = sorted((n for n in logged if SPECS[n].unique_columns), key=lambda n: -len(logged[n]))
    for name in [*whole, *(n for n in logged if not SPECS[n].unique_columns)]:
        keys, start = sorted(logged[name]), 0
        while start < len(keys):
            least = sizes.index(min(sizes))
            end = len(keys) if name in whole else start + max(level - sizes[least], 1)
            shares[least].append((name, keys[start:end]))
            sizes[least] += len(keys[start:end])
            start = end
    return [share for share in shares if share]


async def _apply(sides: _Sides, share: Sequence[tuple[str, Sequence[Key]]]) -> None:
    """Make these keys of these tables equal to the source's, in one target transaction, and count what it
    did in the run's table results. In place inside the server; where that trips a unique key (two rows of
    the batch swapped a name), and through fastmigrate, by deleting every key and copying the source's rows."""
    async def attempt(in_place: bool) -> None:
        writes = [(write, kind, name) for name, keys in share
                  for write, kind in await _rewrite(sides, SPECS[name], keys, in_place=in_place)]
        counts = await _transaction(sides.target, [write for write, _, _ in writes])
        for (_, kind, name), rows in zip(writes, counts):
            if kind == "deleted":
                sides.run.table(name).rows_deleted += rows
            elif kind == "copied":
                sides.run.table(name).rows_copied += rows

    try:
        await attempt(in_place=bool(sides.source_db))
    except DATABASE_ERRORS as exc:
        if mysql_errno(exc) != _DUPLICATE or not sides.source_db:
            raise
        await attempt(in_place=False)


async def _rewrite(sides: _Sides, spec: TableSpec, keys: Sequence[Key], *, in_place: bool) -> Labelled:
    """The statements that make the target's rows of ``keys`` equal to the source's, labelled. In place (in
    the server): staged, then deleted, updated, inserted (see ``statements.STAGE``). Otherwise every key is
    deleted first (a changed row is copied again), so a retry after a commit whose answer was lost writes
    nothing twice; the rows are copied in the server when it can, else read and written back."""
    batches = [keys[i:i + _KEYS_PER_STATEMENT] for i in range(0, len(keys), _KEYS_PER_STATEMENT)]
    if in_place and sides.source_db:
        return [item for batch in batches for item in [
            ((statements.drop_stage(), None), ""), ((statements.stage(spec, sides.source_db, batch), None), ""),
            ((statements.delete_unstaged(spec, batch), None), "deleted"),
            ((statements.update_from_stage(spec), None), "copied"),
            ((statements.insert_unstaged(spec), None), "copied"), ((statements.drop_stage(), None), "")]]
    labelled: Labelled = [((statements.delete_keys(spec, batch), None), "deleted") for batch in batches]
    if sides.source_db:
        return labelled + [((statements.insert_select(spec, sides.source_db, statements.keys_in(spec, batch)), None),
                            "copied") for batch in batches]
    rows = [row for batch in batches for row in await read_rows(sides.source, statements.read_keys(spec, batch))]
    return labelled + ([((statements.insert(spec), rows), "copied")] if rows else [])


# Refusals of CREATE TABLE / CREATE TRIGGER in nova_api: no grant (1044, 1142), SUPER needed (1227), binary
# logging on without log_bin_trust_function_creators (1419).
_NO_TRIGGERS = frozenset({1044, 1142, 1227, 1419})


async def _tracking_before(sides: _Sides, opts: PlacementOptions) -> bool:
    """Before a full pass (a copy, or a sync comparing checksums): install change tracking when asked.
    Whether the pass starts with the target's tracking whole: then, ended, it makes the log followable."""
    if opts.track_changes:
        writer = sides.source_writer(opts)
        try:
            sides.run.tracking.installed = await tracking.install(writer, sides.target_name)
            if sides.run.tracking.installed:
                log.info("installed %d triggers in nova_api: changes to placement's tables are logged from now on",
                         sides.run.tracking.installed)
        except DATABASE_ERRORS as exc:
            if mysql_errno(exc) not in _NO_TRIGGERS:
                raise
            with contextlib.suppress(*DATABASE_ERRORS):
                await tracking.drop(writer)  # what was made before the refusal: nothing half-installed stays
            text = str(getattr(exc, "orig", None) or exc)
            raise FastmigrateError(
                f"{sides.run.source}: cannot install change tracking ({text}). Grant nova_api's user CREATE, DROP "
                "and TRIGGER on it (with binary logging on, also SET GLOBAL log_bin_trust_function_creators = 1), "
                "or run without --track-changes: each sync then compares checksums") from None
    return (await tracking.read_state(sides.source)).whole(sides.target_name)


async def _tracking_after(sides: _Sides, opts: PlacementOptions, whole_pass: bool) -> None:
    """After a run: a full pass that began with the tracking whole makes the log followable; the note says
    what nova_api's tracking is now."""
    if whole_pass:
        await tracking.mark_complete(sides.source_writer(opts), sides.target_name)
    state = await tracking.read_state(sides.source)
    note = sides.run.tracking
    note.target, note.complete, note.pending = state.target, state.follows(sides.target_name), state.pending
    note.elsewhere = state.target not in (None, sides.target_name)


async def _replay(sides: _Sides, opts: PlacementOptions, state: tracking.Tracking,
                  on_progress: Progress | None) -> None:
    """Sync by the change log: batches of ``chunk_size`` x ``parallel`` entries whose keys are rewritten in
    ``parallel`` target transactions at once (each key in one of them), then the entries deleted. Entries
    logged after the sync began are left for the next."""
    run, writer = sides.run, sides.source_writer(opts)
    run.tables = [TableResult(name) for name in COPY_ORDER]
    run.expected_rows = state.pending
    batch = opts.chunk_size * opts.parallel
    while entries := await read_rows(sides.source, tracking.read_log(state.last, batch)):
        began = time.monotonic()
        logged: dict[str, set[Key]] = {}
        for _, name, k1, k2 in entries:
            logged.setdefault(str(name), set()).add(tracking.key_of(SPECS[str(name)], k1, k2))
        await asyncio.gather(*(_apply(sides, share) for share in _shares(logged, opts.parallel)))
        for name, found in logged.items():
            result = run.table(name)
            result.source_rows += len(found)
            result.chunks += 1
            result.seconds = round(result.seconds + time.monotonic() - began, 3)
        await tracking.forget(writer, [int(e[0]) for e in entries])
        run.tracking.replayed += len(entries)
        if on_progress:
            on_progress(run)
        if len(entries) < batch:
            break


async def _command(command: str, source_url: str, target_url: str, opts: PlacementOptions,
                   body: Callable[[_Sides], Any]) -> PlacementRun:
    sides = _open(command, source_url, target_url, opts)
    began = time.monotonic()
    try:
        await _check_source(sides.source, sides.run.source)
        await body(sides)
    finally:
        await sides.close()
    sides.run.seconds = round(time.monotonic() - began, 3)
    return sides.run


async def copy_placement(source_url: str, target_url: str, opts: PlacementOptions = PlacementOptions(), *,
                         on_progress: Progress | None = None) -> PlacementRun:
    """Copy placement's tables from nova_api (``source_url``) into a placement database (``target_url``),
    creating placement's initial schema in an empty target and stamping it once every table is copied."""

    async def body(sides: _Sides) -> None:
        if opts.track_changes:  # refused before the target is touched
            (await tracking.read_state(sides.source)).refuse_another(sides.target_name)
        await _prepare_target(sides, opts)
        await _find_source_in_reach(sides, opts)
        tracked = await _tracking_before(sides, opts)
        await _each_table(sides, opts, lambda spec, result: _copy_table(sides, spec, result, opts, on_progress),
                          on_progress)
        await _build_indexes(sides, opts)
        await _stamp(sides)
        await _tracking_after(sides, opts, tracked)

    return await _command("copy", source_url, target_url, opts, body)


async def _compare(command: str, source_url: str, target_url: str, opts: PlacementOptions, *, repair: bool,
                   on_progress: Progress | None) -> PlacementRun:
    async def body(sides: _Sides) -> None:
        tables = await _target_tables(sides)
        if not tables & set(COPY_ORDER):
            raise SchemaError(f"{sides.run.target}: has no placement tables; run `fastmigrate placement copy` "
                              "first")
        if not repair:
            await _each_table(sides, opts, lambda spec, result: _walk(sides, spec, result, opts, repair=False,
                                                                      on_progress=on_progress), on_progress)
            sides.run.missing_indexes = sorted(i[0] for wanted in (await _missing_indexes(sides)).values()
                                               for i in wanted)
            return await _tracking_after(sides, opts, whole_pass=False)
        await _find_source_in_reach(sides, opts)
        state = await tracking.read_state(sides.source)
        note = sides.run.tracking
        if state.follows(sides.target_name) and not opts.checksums and not opts.track_changes:
            log.info("following nova_api's change log: %s changes", f"{state.pending:,}")
            note.followed = True
            await _replay(sides, opts, state, on_progress)
            tracked = False
        else:
            note.why_checksums = ("--checksums" if opts.checksums else
                                  "--track-changes installs the tracking" if opts.track_changes
                                  else state.why_not(sides.target_name))
            log.info("comparing checksums: %s", note.why_checksums)
            tracked = await _tracking_before(sides, opts)
            await _each_table(sides, opts, lambda spec, result: _walk(sides, spec, result, opts, repair=True,
                                                                      on_progress=on_progress), on_progress)
        if ALEMBIC_VERSION in tables:
            await _build_indexes(sides, opts)  # a copy that was cut off is complete now
            await _stamp(sides)
        await _tracking_after(sides, opts, tracked)

    return await _command(command, source_url, target_url, opts, body)


async def sync_placement(source_url: str, target_url: str, opts: PlacementOptions = PlacementOptions(), *,
                         on_progress: Progress | None = None) -> PlacementRun:
    """Bring a copied target up to date: only the chunks whose checksums differ are compared row by row, and
    only the rows that differ are written."""
    return await _compare("sync", source_url, target_url, opts, repair=True, on_progress=on_progress)


async def verify_placement(source_url: str, target_url: str, opts: PlacementOptions = PlacementOptions(), *,
                           on_progress: Progress | None = None) -> PlacementRun:
    """Compare both sides chunk by chunk; change nothing. ``exit_code`` is 3 when any chunk differs."""
    return await _compare("verify", source_url, target_url, opts, repair=False, on_progress=on_progress)


async def untrack_placement(source_url: str, opts: PlacementOptions = PlacementOptions()) -> PlacementRun:
    """Remove the change tracking from nova_api: its triggers, then its log (what it still held is dropped:
    the next sync compares checksums)."""
    run = PlacementRun("untrack", mask(source_url), "")
    began = time.monotonic()
    engine = connect_engine(mysql_url(source_url), pool_size=1, statement_timeout=opts.statement_timeout)
    try:
        await _check_source(engine, run.source)
        state = await tracking.read_state(engine)
        run.tracking.target, run.tracking.pending = state.target, state.pending
        run.tracking.removed = await tracking.drop(engine)
    finally:
        await engine.dispose()
    run.seconds = round(time.monotonic() - began, 3)
    return run
