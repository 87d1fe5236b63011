"""Writes one batch of blobs and removes the rows they replace, in one transaction.

Concurrency: the reader reads without locks, so by the time a batch is written nova may have changed an
instance (resized it, deleted it, migrated it itself). The transaction therefore starts by locking what it
is about to change and checking it against what was read:

1. the instance's flavor rows, via their fingerprint (a locking read on the ``instance_uuid`` index: under
   REPEATABLE READ its next-key locks also keep anyone from inserting a new flavor row for the instance);
2. its ``instance_extra`` row: by primary key, or, for an instance that has none, through the uuid index
   with its gaps, so that no row can be inserted for it meanwhile (``reader.lock_extras``).

An instance whose rows or extra row changed is re-read right there, under those locks, and transformed
afresh: it is written from current data or not at all, never half-migrated. Only then come the writes,
each checked by row count, and the commit. A blob is written if and only if the rows it replaces are
deleted in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, UTC

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import reader, statements
from .db import Sleep, retrying
from .errors import FastmigrateError
from .schema import instance_extra
from .transform import Broken, Migration, transform

__all__ = ["BatchOutcome", "WriteOptions", "write_batch"]


@dataclass(frozen=True, slots=True)
class WriteOptions:
    soft_delete: bool = False
    read: reader.ReadOptions = reader.ReadOptions()
    retries: int = 6
    # One UPDATE statement carries at most this many bytes of blobs (well under max_allowed_packet).
    statement_bytes: int = 1_000_000
    ids_per_statement: int = 2_000


@dataclass(slots=True)
class BatchOutcome:
    migrated: int = 0
    rebuilt: int = 0  # of those, legacy instances whose flavor came from instance_types
    rows_removed: int = 0
    busy: list[str] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    skipped: int = 0  # migrated or deleted by someone else between read and write
    refreshed: int = 0  # changed between read and write, re-read under lock
    retries: int = 0
    left_behind: list[tuple[str, str]] = field(default_factory=list)


class InvariantViolated(FastmigrateError):
    """A locked row did not behave as locked rows must: the batch was rolled back, nothing is lost."""


async def write_batch(engine: AsyncEngine, batch: Sequence[Migration], opts: WriteOptions,
                      sleep: Sleep = asyncio.sleep) -> BatchOutcome:
    """Commit ``batch``; retried from scratch, in a new transaction, on a retryable MySQL error.

    A connection lost during COMMIT leaves it unknown whether the batch committed. Retrying is still safe:
    the new attempt's locked re-read finds the instances that did commit with a blob and without their rows,
    re-reads them, and counts them as skipped instead of writing anything twice.
    """

    async def attempt() -> BatchOutcome:
        async with engine.begin() as conn:
            return await _write(conn, batch, opts)

    outcome, retries = await retrying(attempt, attempts=opts.retries, sleep=sleep)
    outcome.retries = retries
    return outcome


async def _write(conn: AsyncConnection, batch: Sequence[Migration], opts: WriteOptions) -> BatchOutcome:
    outcome = BatchOutcome()
    uuids = [m.uuid for m in batch]
    now_prints = await reader.fingerprints(conn, uuids, opts.read.include_deleted)
    now_extras = await reader.lock_extras(conn, [m.extra_id for m in batch if m.extra_id is not None],
                                          [m.uuid for m in batch if m.extra_id is None])
    ready: list[Migration] = []
    stale: list[str] = []
    for m in batch:
        target = reader.choose_extra(m.instance_deleted, now_extras.get(m.uuid, ()))
        if now_prints.get(m.uuid) == m.fingerprint and target == m.extra_id:
            ready.append(m)
        else:
            stale.append(m.uuid)
    if stale:
        outcome.refreshed = len(stale)
        fresh = await reader.load(conn, stale, opts.read, lock=True)
        outcome.busy.extend(fresh.busy)
        outcome.broken.extend(fresh.broken)
        outcome.skipped += len(fresh.done)
        for candidate in fresh.candidates:
            result = transform(candidate)
            if isinstance(result, Broken):
                outcome.broken.append(result)
            else:
                ready.append(result)

    now = datetime.now(UTC).replace(tzinfo=None)  # nova stores naive UTC
    await _write_blobs(conn, [m for m in ready if m.extra_id is not None], now, opts)
    new_rows = [m for m in ready if m.extra_id is None]
    if new_rows:
        await conn.execute(insert(instance_extra), [
            {"instance_uuid": m.uuid, "flavor": m.blob, "created_at": now, "deleted": 0} for m in new_rows
        ])
    outcome.rows_removed = await _remove_rows(conn, ready, now, opts)
    outcome.migrated = len(ready)
    outcome.rebuilt = sum(m.rebuilt for m in ready)
    outcome.left_behind = [(m.uuid, note) for m in ready for note in m.left_behind]
    return outcome


async def _write_blobs(conn: AsyncConnection, todo: Sequence[Migration], now: datetime, opts: WriteOptions) -> None:
    # One multi-row UPDATE per chunk (an executemany of UPDATEs is a round trip per row on asyncmy).
    # 'flavor IS NULL' is redundant under our locks; it makes the statement safe on its own.
    for chunk in _chunks_by_bytes(todo, opts.statement_bytes):
        sql, params = statements.blob_update(conn.dialect.paramstyle, [(m.extra_id, m.blob) for m in chunk
                                                                       if m.extra_id is not None], now)
        result = await conn.exec_driver_sql(sql, params)
        if result.rowcount != len(chunk):
            raise InvariantViolated(f"updated {result.rowcount} of {len(chunk)} locked instance_extra rows; "
                                    "the batch was rolled back; rerun")


async def _remove_rows(conn: AsyncConnection, ready: Sequence[Migration], now: datetime, opts: WriteOptions) -> int:
    # By primary key only: exactly the rows that were read and went into a blob committed here.
    if opts.soft_delete:
        ids = [i for m in ready for i in m.live_row_ids]  # already soft-deleted rows stay as they are
    else:
        ids = [i for m in ready for i in m.row_ids]
    for start in range(0, len(ids), opts.ids_per_statement):
        chunk = ids[start:start + opts.ids_per_statement]
        sql, params = statements.row_removal(conn.dialect.paramstyle, chunk, now, soft=opts.soft_delete)
        result = await conn.exec_driver_sql(sql, params)
        if result.rowcount != len(chunk):
            raise InvariantViolated(f"removed {result.rowcount} of {len(chunk)} locked system_metadata rows; "
                                    "the batch was rolled back; rerun")
    return len(ids)


def _chunks_by_bytes(items: Sequence[Migration], limit: int) -> Iterator[list[Migration]]:
    chunk: list[Migration] = []
    size = 0
    for m in items:
        if chunk and size + len(m.blob) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(m)
        size += len(m.blob)
    if chunk:
        yield chunk
