"""SIGKILL at random moments, then a rerun: the end state is the one an uninterrupted run reaches."""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from fastmigrate import ExitCode, FlavorOptions, migrate_flavors
from fastmigrate.fleet import FleetSpec, check_fleet, create_fleet
from fastmigrate.schema import instance_extra, instances, sysmeta

from .conftest import Database

SPEC = FleetSpec(instances=50_000, seed=79, busy=0.0)


async def content(db: Database) -> str:
    """What nova sees, independent of the ids given to inserted rows and of the timestamps of this run."""
    digest = hashlib.sha256()
    async with db.engine.connect() as conn:
        for row in await conn.execute(select(instances).order_by(instances.c.id)):
            digest.update(repr(tuple(row)).encode())
        for row in await conn.execute(select(sysmeta.c.id, sysmeta.c.instance_uuid, sysmeta.c.key, sysmeta.c.value,
                                             sysmeta.c.deleted).order_by(sysmeta.c.id)):
            digest.update(repr(tuple(row)).encode())
        extras = sorted((r[0], r[1] or "", r[2] != 0) for r in await conn.execute(
            select(instance_extra.c.instance_uuid, instance_extra.c.flavor, instance_extra.c.deleted)))
        digest.update(repr(extras).encode())
    return digest.hexdigest()


@pytest.mark.slow
async def test_twenty_sigkills_change_nothing_in_the_end(db: Database, tmp_path: Any) -> None:
    fleet = await create_fleet(db.engine, SPEC)
    rng = random.Random(83)
    kills = 0
    while kills < 20:
        proc = subprocess.Popen([sys.executable, "-m", "fastmigrate", "flavors", "--db", db.url,
                                 "--batch-size", "50", "--max-rate", "1500"],  # 20 runs never finish the fleet
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(rng.uniform(0.8, 1.6))  # about half of it is starting Python
        if proc.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        kills += 1
    assert kills >= 20, "the fleet migrated too fast to be killed 20 times: make it bigger"
    final = await migrate_flavors([db.url], FlavorOptions(batch_size=50))
    assert final.exit_code == ExitCode.DONE, final.databases[0].error
    last = final.databases[0]
    assert 0 < last.migrated < len(fleet.expected)  # the killed runs did real work
    # ...and the last run resumed instead of rescanning: pages for what was left (plus a few to cross the
    # migrated part in growing windows), not one page per 50 instances of the whole fleet.
    assert last.scanned == len(fleet.expected) - len(fleet.deleted)
    assert last.pages <= last.migrated // 50 + 20 < last.scanned // 50
    assert await check_fleet(db.engine, fleet) == []
    killed_state = await content(db)

    # The same fleet, migrated in one go, in a second database of the same kind.
    async for reference in _twin(db, tmp_path):
        await create_fleet(reference.engine, SPEC)
        assert (await migrate_flavors([reference.url])).exit_code == ExitCode.DONE
        assert await content(reference) == killed_state


async def _twin(db: Database, tmp_path: Any) -> Any:
    from .conftest import _database

    async for twin in _database(db.backend, tmp_path, "reference"):
        yield twin
