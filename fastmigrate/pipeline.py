"""Wires reader -> transform -> writer for one database, with bounded queues and an explicit end.

Queue sizes: each queue holds ``queue_depth`` batches (default 2). One batch waiting in front of each
stage is enough for every stage to find work ready when it finishes the last one (the overlap that makes
the database the bottleneck); more would only buy memory. At most about ``2 * queue_depth + 2 + writers``
batches are alive at once, whatever the size of the fleet.

Batch size: fixed with ``batch_size``; otherwise every committed transaction reports how long it took, and
the next batches (and pages) are sized to take about ``target_seconds`` (``throttle.next_batch_size``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.ext.asyncio import AsyncEngine

from . import reader
from .db import galera_enabled, global_status, retrying
from .flavortables import FlavorTables
from .options import FlavorOptions
from .results import DatabaseResult
from .throttle import GALERA_STATUS, GaleraSample, galera_pressure, next_batch_size, overloaded, rate_pause
from .transform import Broken, Migration, transform
from .writer import WriteOptions, write_batch

__all__ = ["run_pipeline"]

log = logging.getLogger(__name__)

Pages = asyncio.Queue[reader.Page | None]
Batches = asyncio.Queue[list[Migration] | None]


@dataclass
class _Run:
    """What the stages of one database's run share."""

    engine: AsyncEngine
    cfg: FlavorOptions
    result: DatabaseResult
    stop: asyncio.Event
    on_batch: Callable[[DatabaseResult], None] | None
    started: float = field(default_factory=time.monotonic)
    galera: GaleraSample | None = None  # the last sample of a Galera node
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)  # writers pass the throttle one at a time
    admitted: int = 0  # instances in the batches let past the throttle: written or being written
    tables: FlavorTables | None = None  # the flavor tables (extra specs, legacy flavors), read by reader and writers
    writers: int = field(init=False)
    read: reader.ReadOptions = field(init=False)
    write: WriteOptions = field(init=False)

    def __post_init__(self) -> None:
        self.read = dataclasses.replace(self.cfg.read, flavors=self.tables)
        self.write = dataclasses.replace(self.cfg.write, read=self.read)
        self.writers = self.cfg.writers_on(self.engine.dialect.name)
        self.result.batch_size = self.cfg.first_batch_size  # now: fixed, or adapted after every transaction

    def tick(self) -> None:
        self.result.seconds = time.monotonic() - self.started
        if self.on_batch is not None:
            self.on_batch(self.result)

    def committed(self, done: int, seconds: float) -> None:
        cfg = self.cfg
        if cfg.adaptive:
            self.result.batch_size = next_batch_size(self.result.batch_size, done, seconds, cfg.target_seconds,
                                                     cfg.min_batch_size, cfg.max_batch_size)


async def run_pipeline(engine: AsyncEngine, cfg: FlavorOptions, result: DatabaseResult,
                       on_batch: Callable[[DatabaseResult], None] | None = None,
                       stop: asyncio.Event | None = None, tables: FlavorTables | None = None) -> None:
    """Migrate until done; when ``stop`` is set, commit the batches being written, drop the queued ones
    (they are left as they were, for the next run) and return. ``tables``: nova's flavor tables, for extra
    specs and legacy flavors."""
    run = _Run(engine, cfg, result, stop or asyncio.Event(), on_batch, tables=tables)
    result.galera = not cfg.dry_run and await galera_enabled(engine)
    pages: Pages = asyncio.Queue(cfg.queue_depth)
    batches: Batches = asyncio.Queue(cfg.queue_depth)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_read(run, pages))
            tasks.create_task(_transform(run, pages, batches))
            for _ in range(run.writers):
                tasks.create_task(_write(run, batches))
    except BaseExceptionGroup as failed:
        # One stage failed and the TaskGroup cancelled the others (rolling back what they had in flight):
        # report the failure itself, not the group.
        raise failed.exceptions[0] from None
    result.seconds = time.monotonic() - run.started


# Instances one page may look at while it skips migrated ones: a few tens of milliseconds of index probes.
_MAX_WINDOW = 50_000


async def _read(run: _Run, out: Pages) -> None:
    cfg, result = run.cfg, run.result
    last_id = 0
    taken = 0
    read_opts = run.read
    window = result.batch_size
    while not run.stop.is_set():
        limit = result.batch_size  # a page is about a batch: what the transformer cuts next
        window = max(window, limit)
        page, retries = await retrying(partial(reader.read_next, run.engine, last_id, limit, read_opts, window))
        result.retries += retries
        if page.scanned == 0:
            break
        last_id = page.last_id
        window = reader.next_window(window, page.scanned, page.found, limit, max(limit, _MAX_WINDOW))
        if cfg.max_count is not None:
            del page.candidates[cfg.max_count - taken:]
            taken += len(page.candidates)
        await out.put(page)
        if cfg.max_count is not None and taken >= cfg.max_count:
            result.stopped_early = True
            break
    await out.put(None)


async def _transform(run: _Run, inbox: Pages, out: Batches) -> None:
    # Batches are filled across pages: where most instances are migrated already (a resumed run), a page
    # holds few candidates, and a transaction per page would be mostly overhead.
    cfg, result = run.cfg, run.result
    batch: list[Migration] = []
    size = 0  # bytes of blobs in batch
    while (page := await inbox.get()) is not None:
        if run.stop.is_set():
            continue  # drain: what was read but not written stays for the next run
        result.scanned += page.scanned
        result.pages += 1
        result.found += page.found
        result.busy.extend(page.busy)
        result.broken.extend(page.broken)
        for candidate in page.candidates:
            outcome = transform(candidate)
            if isinstance(outcome, Broken):
                result.broken.append(outcome)
                continue
            if batch and size + len(outcome.blob) > cfg.max_transaction_bytes:
                await _emit(run, batch, out)  # a transaction's writeset stays under the cap
                batch, size = [], 0
            batch.append(outcome)
            size += len(outcome.blob)
            if len(batch) >= result.batch_size:
                await _emit(run, batch, out)
                batch, size = [], 0
        run.tick()
    if batch and not run.stop.is_set():
        await _emit(run, batch, out)
    for _ in range(run.writers):
        await out.put(None)


async def _emit(run: _Run, batch: list[Migration], out: Batches) -> None:
    if run.cfg.dry_run:
        run.result.migrated += len(batch)
        run.result.rebuilt += sum(m.rebuilt for m in batch)
        run.result.left_behind.extend((m.uuid, note) for m in batch for note in m.left_behind)
        run.tick()
    else:
        await out.put(batch)


async def _write(run: _Run, inbox: Batches) -> None:
    write_opts = run.write
    while (batch := await inbox.get()) is not None:
        if not run.stop.is_set():
            # One writer at a time waits: the pauses asked for are between the run's batches, whichever
            # writer commits them, and one status sample serves one decision.
            async with run.gate:
                await _throttle(run)
                run.admitted += len(batch)
        if run.stop.is_set():
            continue
        begun = time.monotonic()
        outcome = await write_batch(run.engine, batch, write_opts)
        run.committed(len(batch), time.monotonic() - begun)
        run.result.absorb(outcome)
        run.tick()


async def _throttle(run: _Run) -> None:
    """Wait as --sleep, --max-rate and --max-load ask, and on Galera while flow control is active or the
    receive queue is long, before a batch; a stop ends any wait at once."""
    cfg, result = run.cfg, run.result
    # --max-rate counts what is admitted, not what is committed: with several writers, batches in flight
    # would otherwise all start at once and the run would go faster than asked.
    wait = rate_pause(run.admitted, time.monotonic() - run.started, cfg.max_rate)
    if run.admitted:  # not before the first batch
        wait = max(wait, cfg.sleep)
    if wait > 0:
        result.throttled_seconds += await _pause(wait, run.stop)
    limits = dict(cfg.max_load)
    names = set(limits) | (set(GALERA_STATUS) if result.galera else set())
    while names and not run.stop.is_set():
        status = await global_status(run.engine, names)
        over = overloaded(status, limits)
        if result.galera:
            now = GaleraSample.of(status, time.monotonic())
            over += galera_pressure(run.galera, now, cfg.max_flow_control, cfg.max_recv_queue)
            run.galera = now
        if not over:
            return
        if result.throttled_by != ", ".join(over):
            log.info("%s: pausing while %s", result.cell or result.database, ", ".join(over))
        result.throttled_by = ", ".join(over)
        result.throttled_seconds += await _pause(_LOAD_RECHECK_SECONDS, run.stop)


_LOAD_RECHECK_SECONDS = 1.0


async def _pause(seconds: float, stop: asyncio.Event) -> float:
    """Wait ``seconds``, or less when ``stop`` is set; how long it waited. ``asyncio.timeout``, not
    ``wait_for``: on Python 3.11 ``wait_for`` drops a cancellation that arrives as the event is set (a stop
    and a second signal's cancel in the same loop iteration), and the run then hangs."""
    begun = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
    return time.monotonic() - begun
