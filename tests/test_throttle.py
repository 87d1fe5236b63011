"""Throttling: pure decisions, and the writer obeying them."""

from __future__ import annotations

import asyncio

import pytest

from fastmigrate import ExitCode, FlavorOptions, UsageError, migrate_flavors
from fastmigrate.fleet import FleetSpec, check_fleet, create_fleet
from fastmigrate.throttle import overloaded, parse_max_load, rate_pause

from .conftest import Database

CLEAN = dict(busy=0.0, deleted=0.0)


@pytest.mark.pure
@pytest.mark.parametrize(("done", "elapsed", "max_rate", "pause"), [
    (0, 0.0, 100.0, 0.0),
    (500, 2.0, 100.0, 3.0),  # 500 at 100/s take 5 s: 3 more to wait
    (500, 6.0, 100.0, 0.0),  # behind the rate already
    (500, 0.1, None, 0.0),
    (500, 0.1, 0, 0.0),
])
def test_rate_pause(done: int, elapsed: float, max_rate: float | None, pause: float) -> None:
    assert rate_pause(done, elapsed, max_rate) == pytest.approx(pause)


@pytest.mark.pure
def test_overloaded_names_what_is_over() -> None:
    limits = {"Threads_running": 25.0, "wsrep_local_recv_queue": 100.0}
    assert overloaded({"Threads_running": 25.0}, limits) == []
    assert overloaded({"Threads_running": 31.0, "wsrep_local_recv_queue": 7.0}, limits) == ["Threads_running=31>25"]
    assert overloaded({}, limits) == []  # not reported (no Galera): not over


@pytest.mark.pure
def test_parse_max_load() -> None:
    assert parse_max_load("Threads_running=25, Threads_connected=800") == {"Threads_running": 25.0,
                                                                            "Threads_connected": 800.0}
    for bad in ("", "Threads_running", "Threads_running=lots", "=5", "Threads running=5", "x=-1"):
        with pytest.raises(UsageError):
            parse_max_load(bad)


async def test_sleep_pauses_between_batches(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=200, seed=89, **CLEAN))
    result = await migrate_flavors([db.url], FlavorOptions(batch_size=50, sleep=0.05))
    r = result.databases[0]
    assert r.migrated == len(fleet.expected) and r.transactions == 4
    assert r.throttled_seconds >= 0.05 * (r.transactions - 1)  # our own accounting, not the clock's verdict
    assert await check_fleet(db.engine, fleet) == []


async def test_max_rate_holds_back(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=200, seed=97, **CLEAN))
    result = await migrate_flavors([db.url], FlavorOptions(batch_size=50, max_rate=400))
    assert result.databases[0].throttled_seconds > 0  # 200 instances at 400/s: about 0.4 s of pauses
    assert await check_fleet(db.engine, fleet) == []


@pytest.mark.mariadb
async def test_max_load_waits_while_the_server_is_busy(mariadb_db: Database) -> None:
    await create_fleet(mariadb_db.engine, FleetSpec(instances=100, seed=101, **CLEAN))
    stop = asyncio.Event()
    # Threads_running is at least 1 (the sampling query itself): a limit of 0 is never met.
    run = asyncio.create_task(migrate_flavors([mariadb_db.url], FlavorOptions(max_load=(("Threads_running", 0),)),
                                              stop=stop))
    await asyncio.sleep(2.5)
    stop.set()
    r = (await run).databases[0]
    assert r.migrated == 0 and r.interrupted
    assert r.throttled_by is not None and r.throttled_by.startswith("Threads_running=")
    relaxed = await migrate_flavors([mariadb_db.url], FlavorOptions(max_load=(("Threads_running", 10_000),)))
    assert relaxed.exit_code == ExitCode.DONE and relaxed.databases[0].throttled_by is None


async def test_max_load_needs_mysql(sqlite_db: Database) -> None:
    await create_fleet(sqlite_db.engine, FleetSpec(instances=10, seed=1))
    result = await migrate_flavors([sqlite_db.url], FlavorOptions(max_load=(("Threads_running", 5),)))
    assert result.exit_code == ExitCode.USAGE and "--max-load reads MySQL" in result.databases[0].error
