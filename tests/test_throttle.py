"""Throttling: pure decisions, and the writer obeying them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastmigrate import ExitCode, FlavorOptions, UsageError, migrate_flavors
from fastmigrate.fleet import FleetSpec, check_fleet, create_fleet
from fastmigrate.throttle import GaleraSample, galera_pressure, next_batch_size, overloaded, parse_max_load, rate_pause

from fastmigrate.writer import write_batch

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


@pytest.mark.pure
@pytest.mark.parametrize(("size", "done", "seconds", "expected"), [
    (500, 500, 0.5, 500),  # on target: stay
    (500, 500, 0.4, 625),  # a bit fast: a bit bigger
    (500, 500, 0.1, 1000),  # much too fast: double, no more, in one step
    (500, 500, 5.0, 250),  # much too slow (a lock wait, retries): halve, no less
    (500, 500, 0.6, 417),
    (4000, 4000, 0.1, 5000),  # never over the maximum
    (60, 60, 3.0, 50),  # never under the minimum
    (500, 20, 0.01, 1000),  # a small last batch: its per-instance time counts, still damped
    (500, 0, 0.0, 500),  # nothing written: nothing learnt
    (500, 500, 0.0, 1000),  # a clock too coarse to see it: treated as very fast
])
def test_next_batch_size_aims_at_the_target_time(size: int, done: int, seconds: float, expected: int) -> None:
    assert next_batch_size(size, done, seconds, target=0.5, low=50, high=5000) == expected


@pytest.mark.pure
def test_next_batch_size_converges() -> None:
    """Against a server that takes 0.1 ms per instance plus 20 ms per transaction, sizes settle where a
    transaction takes the target time, within a few steps."""
    size = 500
    for _ in range(12):
        size = next_batch_size(size, size, 0.020 + size * 0.0001, target=0.5, low=50, high=100_000)
    assert size == 4800


@pytest.mark.pure
def test_batch_size_options() -> None:
    assert FlavorOptions().adaptive and FlavorOptions().first_batch_size == 500
    assert FlavorOptions(min_batch_size=1000, max_batch_size=2000).first_batch_size == 1000
    assert FlavorOptions().writers_on("mysql") == 2
    assert FlavorOptions().writers_on("sqlite") == 1
    assert FlavorOptions(writers=3).writers_on("sqlite") == 3
    fixed = FlavorOptions(batch_size=70)
    assert not fixed.adaptive and fixed.first_batch_size == 70
    for bad in (dict(min_batch_size=600, max_batch_size=500), dict(target_seconds=0), dict(max_batch_size=0)):
        with pytest.raises(UsageError):
            FlavorOptions(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("target", "settles_at"), [(0.01, 20), (60, 400)])
async def test_adaptive_batches_follow_the_transaction_time(db: Database, monkeypatch: pytest.MonkeyPatch,
                                                            target: float, settles_at: int) -> None:
    """A target no transaction can meet (each takes 30 ms more here) shrinks batches to the minimum; one
    every transaction meets grows them to the maximum. Either way the result is the same."""
    from fastmigrate import pipeline

    async def slow_write(*args: Any) -> Any:
        await asyncio.sleep(0.03)
        return await write_batch(*args)

    monkeypatch.setattr(pipeline, "write_batch", slow_write)
    fleet = await create_fleet(db.engine, FleetSpec(instances=3000, seed=103, **CLEAN))
    result = await migrate_flavors([db.url], FlavorOptions(target_seconds=target, min_batch_size=20,
                                                           max_batch_size=400))
    r = result.databases[0]
    assert r.batch_size == settles_at and r.migrated == len(fleet.expected)
    # 3000 instances, starting at 500 per batch (the batches already cut when the first commits keep that
    # size): six transactions at a fixed 500; far more once halved down to 20; at most nine on the way up.
    assert r.transactions > 30 if settles_at == 20 else r.transactions <= 9
    assert await check_fleet(db.engine, fleet) == []


async def test_sleep_pauses_between_batches(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=200, seed=89, **CLEAN))
    result = await migrate_flavors([db.url], FlavorOptions(batch_size=50, sleep=0.05))
    r = result.databases[0]
    assert r.migrated == len(fleet.expected) and r.transactions == 4
    assert r.throttled_seconds >= 0.05 * (r.transactions - 1)  # our own accounting, not the clock's verdict
    assert await check_fleet(db.engine, fleet) == []


async def test_max_rate_holds_back(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=200, seed=97, **CLEAN))
    result = await migrate_flavors([db.url], FlavorOptions(batch_size=50, max_rate=200))
    r = result.databases[0]
    assert r.throttled_seconds > 0
    # The limit's own guarantee, whatever the machine's speed: the last batch starts no earlier than the ones
    # before it allow at 200/s, even with two writers in flight (MariaDB's default).
    assert r.seconds >= (r.migrated - 50) / 200
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


def galera(at: float, paused: float | None, recv_queue: float | None = 0, fc_limit: float = 16) -> GaleraSample:
    return GaleraSample(at, paused, recv_queue, fc_limit)


@pytest.mark.pure
def test_galera_sample_reads_what_the_node_reports() -> None:
    newer = {"wsrep_flow_control_paused_ns": 2.5e9, "wsrep_flow_control_paused": 0.01,
             "Uptime_since_flush_status": 100.0, "wsrep_local_recv_queue": 3.0,
             "wsrep_flow_control_interval_high": 256.0}
    assert GaleraSample.of(newer, 7.0) == galera(7.0, 2.5, 3.0, 256.0)  # the nanosecond total wins
    older = {"wsrep_flow_control_paused": 0.01, "Uptime_since_flush_status": 100.0}
    assert GaleraSample.of(older, 7.0) == galera(7.0, 1.0, None, 16.0)  # fraction x time: a running total
    assert GaleraSample.of({}, 7.0) == galera(7.0, None, None, 16.0)


@pytest.mark.pure
def test_galera_pressure() -> None:
    calm = galera(10.0, 5.0)
    assert galera_pressure(None, calm, 0.0, None) == []  # a first sample has nothing to compare with
    assert galera_pressure(galera(9.0, 5.0), calm, 0.0, None) == []  # no new pause
    assert galera_pressure(galera(9.0, 4.9), calm, 0.0, None) == [
        "wsrep flow control paused replication 10% of the last 1.0 s"]  # any pause, by default
    assert galera_pressure(galera(9.0, 4.9), calm, 0.25, None) == []  # tolerated share
    assert galera_pressure(galera(9.0, 9.0), calm, 0.0, None) == []  # FLUSH STATUS reset the total
    assert galera_pressure(galera(9.0, None), calm, 0.0, None) == []  # nothing known about pauses
    queued = galera(10.0, 5.0, recv_queue=9)
    assert galera_pressure(None, queued, 0.0, None) == ["wsrep_local_recv_queue=9>8"]  # half of fc_limit 16
    assert galera_pressure(None, queued, 0.0, 20) == []
    assert galera_pressure(None, galera(10.0, 5.0, 100, 256), 0.0, None) == []  # 100 <= 256 / 2


async def test_galera_flow_control_holds_the_run_back(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated Galera node whose flow control pauses replication during the first seconds: the writer
    waits until the pauses stop, then migrates everything."""
    from fastmigrate import pipeline

    fleet = await create_fleet(db.engine, FleetSpec(instances=300, seed=107, **CLEAN))
    samples = 0

    async def node_status(engine: Any, names: Any) -> dict[str, float]:
        nonlocal samples
        samples += 1
        busy = min(samples, 3)  # paused 0.5 s more at each of the first three samples, then never again
        return {"wsrep_flow_control_paused_ns": busy * 0.5e9, "wsrep_local_recv_queue": 0.0,
                "wsrep_flow_control_interval_high": 16.0}

    async def on(engine: Any) -> bool:
        return True

    monkeypatch.setattr(pipeline, "galera_enabled", on)
    monkeypatch.setattr(pipeline, "global_status", node_status)
    result = await migrate_flavors([db.url], FlavorOptions(batch_size=100))
    r = result.databases[0]
    assert r.galera and r.migrated == len(fleet.expected)
    assert r.throttled_by is not None and r.throttled_by.startswith("wsrep flow control paused replication")
    assert r.throttled_seconds >= 2 * 0.9  # two rechecks found new pauses (our accounting, not the clock)
    assert samples >= 3 + r.transactions - 1
    assert await check_fleet(db.engine, fleet) == []


@pytest.mark.mariadb
async def test_a_plain_mariadb_is_no_galera_node(mariadb_db: Database) -> None:
    from fastmigrate.db import galera_enabled, global_status

    assert not await galera_enabled(mariadb_db.engine)
    status = await global_status(mariadb_db.engine, ["Threads_running", "wsrep_flow_control_paused_ns"])
    assert status["Threads_running"] >= 1 and "wsrep_flow_control_paused_ns" not in status
    await create_fleet(mariadb_db.engine, FleetSpec(instances=20, seed=109, **CLEAN))
    r = (await migrate_flavors([mariadb_db.url], FlavorOptions(max_recv_queue=0))).databases[0]
    assert not r.galera and r.throttled_seconds == 0 and r.exit_code == ExitCode.DONE
