"""Wires reader -> transform -> writer for one database, with bounded queues and an explicit end.

Queue sizes: each queue holds ``queue_depth`` batches (default 2). One batch waiting in front of each
stage is enough for every stage to find work ready when it finishes the last one (the overlap that makes
the database the bottleneck); more would only buy memory. At most about ``2 * queue_depth + 2 + writers``
batches are alive at once, whatever the size of the fleet.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from . import reader
from .db import global_status, retrying
from .options import FlavorOptions
from .results import DatabaseResult
from .throttle import overloaded, rate_pause
from .transform import Broken, Migration, transform
from .writer import write_batch

__all__ = ["run_pipeline"]


async def run_pipeline(engine: AsyncEngine, cfg: FlavorOptions, result: DatabaseResult,
                       on_batch: Callable[[DatabaseResult], None] | None = None,
                       stop: asyncio.Event | None = None) -> None:
    """Migrate until done; when ``stop`` is set, commit the batches being written, drop the queued ones
    (they are left as they were, for the next run) and return."""
    stop = stop or asyncio.Event()
    pages: asyncio.Queue[reader.Page | None] = asyncio.Queue(cfg.queue_depth)
    batches: asyncio.Queue[list[Migration] | None] = asyncio.Queue(cfg.queue_depth)
    started = time.monotonic()

    def tick() -> None:
        result.seconds = time.monotonic() - started
        if on_batch is not None:
            on_batch(result)

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_read(engine, cfg, pages, result, stop))
            tasks.create_task(_transform(pages, batches, cfg, result, tick, stop))
            for _ in range(cfg.writers):
                tasks.create_task(_write(engine, cfg, batches, result, tick, stop, started))
    except BaseExceptionGroup as failed:
        # One stage failed and the TaskGroup cancelled the others (rolling back what they had in flight):
        # report the failure itself, not the group.
        raise failed.exceptions[0] from None
    result.seconds = time.monotonic() - started


async def _read(engine: AsyncEngine, cfg: FlavorOptions, out: asyncio.Queue[reader.Page | None],
                result: DatabaseResult, stop: asyncio.Event) -> None:
    last_id = 0
    taken = 0
    read_opts = cfg.read
    window = limit = cfg.batch_size
    while not stop.is_set():
        page, retries = await retrying(partial(reader.read_next, engine, last_id, limit, read_opts, window))
        result.retries += retries
        if page.scanned == 0:
            break
        last_id = page.last_id
        found = len(page.candidates) + len(page.busy) + len(page.broken)
        window = reader.next_window(window, page.scanned, found, limit, max(limit, _MAX_WINDOW))
        if cfg.max_count is not None:
            del page.candidates[cfg.max_count - taken:]
            taken += len(page.candidates)
        await out.put(page)
        if cfg.max_count is not None and taken >= cfg.max_count:
            result.stopped_early = True
            break
    await out.put(None)


# Instances one page may look at while it skips migrated ones: a few tens of milliseconds of index probes.
_MAX_WINDOW = 50_000


async def _transform(inbox: asyncio.Queue[reader.Page | None], out: asyncio.Queue[list[Migration] | None],
                     cfg: FlavorOptions, result: DatabaseResult, tick: Callable[[], None], stop: asyncio.Event) -> None:
    # Batches are filled across pages: where most instances are migrated already (a resumed run), a page
    # holds few candidates, and a transaction per page would be mostly overhead.
    batch: list[Migration] = []
    size = 0  # bytes of blobs in batch
    while (page := await inbox.get()) is not None:
        if stop.is_set():
            continue  # drain: what was read but not written stays for the next run
        result.scanned += page.scanned
        result.pages += 1
        result.found += len(page.candidates) + len(page.busy) + len(page.broken)
        result.busy.extend(page.busy)
        result.broken.extend(page.broken)
        for candidate in page.candidates:
            outcome = transform(candidate)
            if isinstance(outcome, Broken):
                result.broken.append(outcome)
                continue
            if batch and size + len(outcome.blob) > cfg.max_transaction_bytes:
                await _emit(batch, out, cfg, result, tick)  # a transaction's writeset stays under the cap
                batch, size = [], 0
            batch.append(outcome)
            size += len(outcome.blob)
            if len(batch) >= cfg.batch_size:
                await _emit(batch, out, cfg, result, tick)
                batch, size = [], 0
        tick()
    if batch and not stop.is_set():
        await _emit(batch, out, cfg, result, tick)
    for _ in range(cfg.writers):
        await out.put(None)


async def _emit(batch: list[Migration], out: asyncio.Queue[list[Migration] | None], cfg: FlavorOptions,
                result: DatabaseResult, tick: Callable[[], None]) -> None:
    if cfg.dry_run:
        result.migrated += len(batch)
        result.left_behind.extend((m.uuid, note) for m in batch for note in m.left_behind)
        tick()
    else:
        await out.put(batch)


async def _write(engine: AsyncEngine, cfg: FlavorOptions, inbox: asyncio.Queue[list[Migration] | None],
                 result: DatabaseResult, tick: Callable[[], None], stop: asyncio.Event, started: float) -> None:
    write_opts = cfg.write
    first = True
    while (batch := await inbox.get()) is not None:
        if not stop.is_set():
            await _throttle(engine, cfg, result, stop, started, first)
            first = False
        if stop.is_set():
            continue
        outcome = await write_batch(engine, batch, write_opts)
        result.absorb(outcome)
        tick()


async def _throttle(engine: AsyncEngine, cfg: FlavorOptions, result: DatabaseResult, stop: asyncio.Event,
                    started: float, first: bool) -> None:
    """Wait as --sleep, --max-rate and --max-load ask, before a batch; a stop ends any wait at once."""
    wait = rate_pause(result.migrated, time.monotonic() - started, cfg.max_rate)
    if not first:
        wait = max(wait, cfg.sleep)
    if wait > 0:
        result.throttled_seconds += await _pause(wait, stop)
    limits = dict(cfg.max_load)
    while limits and not stop.is_set():
        over = overloaded(await global_status(engine, limits), limits)
        if not over:
            return
        result.throttled_by = ", ".join(over)
        result.throttled_seconds += await _pause(_LOAD_RECHECK_SECONDS, stop)


_LOAD_RECHECK_SECONDS = 1.0


async def _pause(seconds: float, stop: asyncio.Event) -> float:
    begun = time.monotonic()
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
    return time.monotonic() - begun
