"""Stopping a run (SIGINT/SIGTERM, or a library caller's stop event): clean, consistent, resumable."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from fastmigrate import ExitCode, FlavorOptions, migrate_flavors
from fastmigrate.fleet import Fleet, FleetSpec, check_fleet, create_fleet
from fastmigrate.schema import instance_extra, sysmeta

from .conftest import Database, summary

CLEAN = dict(busy=0.0, deleted=0.0)


async def assert_all_or_nothing(db: Database, fleet: Fleet) -> int:
    """Every instance has either its blob and no live flavor rows, or no blob and all its flavor rows."""
    async with db.engine.connect() as conn:
        blobs = {u for (u,) in await conn.execute(
            select(instance_extra.c.instance_uuid).where(instance_extra.c.flavor.is_not(None)))}
        rows = dict((await conn.execute(
            select(sysmeta.c.instance_uuid, func.count()).where(
                sysmeta.c.key.like("%instance!_type!_%", escape="!"), sysmeta.c.deleted == 0)
            .group_by(sysmeta.c.instance_uuid))).all())
    for uuid in fleet.expected:
        if uuid in blobs:
            assert uuid not in rows, uuid
        else:
            assert rows.get(uuid, 0) >= 10, uuid
    return len(blobs & fleet.expected.keys())


async def test_a_stop_commits_what_is_in_flight_and_starts_nothing_more(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=2000, seed=47, **CLEAN))
    stop = asyncio.Event()

    def after_first_batch(result: Any) -> None:
        if result.transactions:
            stop.set()

    result = await migrate_flavors([db.url], FlavorOptions(batch_size=50), on_progress=after_first_batch, stop=stop)
    r = result.databases[0]
    assert r.interrupted and result.exit_code == ExitCode.MORE
    assert 50 <= r.migrated < len(fleet.expected) // 2
    assert await assert_all_or_nothing(db, fleet) == r.migrated
    assert r.remaining == len(fleet.expected) - r.migrated
    rest = await migrate_flavors([db.url], FlavorOptions(batch_size=50))
    assert rest.exit_code == ExitCode.DONE
    assert await check_fleet(db.engine, fleet) == []


@pytest.mark.slow
async def test_sigterm_to_the_cli(sqlite_db: Database) -> None:
    fleet = await create_fleet(sqlite_db.engine, FleetSpec(instances=10_000, seed=53, **CLEAN))
    # --max-rate keeps each run going for many seconds (10,000 instances at 500/s): the signals must reach
    # a run in progress, even when a busy machine stalls this test's polling reads for a while.
    proc = subprocess.Popen([sys.executable, "-m", "fastmigrate", "flavors", "--db", sqlite_db.url,
                             "--batch-size", "25", "--max-rate", "500", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not await sqlite_db.scalar("SELECT COUNT(*) FROM instance_extra WHERE flavor IS NOT NULL"):
        assert time.monotonic() < deadline and proc.poll() is None
        await asyncio.sleep(0.05)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(proc.communicate, timeout=120)
    assert proc.returncode == ExitCode.MORE, err
    doc = summary(out)
    assert doc["databases"][0]["interrupted"] is True
    assert "SIGTERM: committing the batches in flight" in err
    migrated = await assert_all_or_nothing(sqlite_db, fleet)
    assert 0 < migrated == doc["databases"][0]["migrated"] < len(fleet.expected)

    # Twice: the batches in flight are rolled back, not committed.
    proc = subprocess.Popen([sys.executable, "-m", "fastmigrate", "flavors", "--db", sqlite_db.url,
                             "--batch-size", "25", "--max-rate", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blobs = "SELECT COUNT(*) FROM instance_extra WHERE flavor IS NOT NULL"
    while await sqlite_db.scalar(blobs) == migrated:
        assert time.monotonic() < deadline and proc.poll() is None
        await asyncio.sleep(0.05)
    assert proc.poll() is None
    # Two different signals, back to back: the same one twice may merge into one, and a pause between them
    # lets the batches in flight commit (the run ends) before the second arrives.
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(proc.communicate, timeout=120)
    assert proc.returncode == ExitCode.MORE, err
    assert "rolling back the batches in flight" in err and "Traceback" not in err
    assert await assert_all_or_nothing(sqlite_db, fleet) < len(fleet.expected)
    rest = await migrate_flavors([sqlite_db.url])
    assert rest.exit_code == ExitCode.DONE
    assert await check_fleet(sqlite_db.engine, fleet) == []


async def test_a_cancel_that_comes_with_the_stop_is_not_lost() -> None:
    # The second signal's cancel lands in the same loop iteration as the first one's stop, while a writer
    # pauses: the pause must end cancelled (Python 3.11's wait_for dropped it, and the run hung).
    from fastmigrate.pipeline import _pause

    stop = asyncio.Event()
    pausing = asyncio.create_task(_pause(30.0, stop))
    await asyncio.sleep(0)  # the pause is waiting
    stop.set()
    pausing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(pausing), timeout=5)
    assert pausing.cancelled()
