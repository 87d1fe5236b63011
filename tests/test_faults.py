"""Faults: retryable errors are retried by number, with backoff and a fresh connection; nothing is lost."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from fastmigrate import ExitCode, FlavorOptions, migrate_flavors
from fastmigrate.db import connect_engine, mysql_errno, normalize_url, retrying
from fastmigrate.fleet import FleetSpec, check_fleet, create_fleet

from .conftest import Database

CLEAN = dict(busy=0.0, deleted=0.0)


def mysql_error(errno: int) -> OperationalError:
    return OperationalError("UPDATE ...", {}, Exception(errno, "from the server"))


@pytest.mark.pure
@pytest.mark.parametrize("errno", [1205, 1213, 2006, 2013])
async def test_retryable_errors_are_retried_with_backoff(errno: int) -> None:
    calls, slept = [], []

    async def operation() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise mysql_error(errno)
        return "done"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    assert await retrying(operation, sleep=sleep) == ("done", 2)
    assert slept == [0.05, 0.1]


@pytest.mark.pure
async def test_other_errors_and_exhausted_retries_are_raised() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def duplicate() -> None:
        raise mysql_error(1062)  # duplicate key: retrying cannot help

    with pytest.raises(OperationalError):
        await retrying(duplicate, sleep=sleep)
    assert slept == []

    async def deadlock() -> None:
        raise mysql_error(1213)

    with pytest.raises(OperationalError):
        await retrying(deadlock, attempts=3, sleep=sleep)
    assert slept == [0.05, 0.1, 0.2]


@pytest.mark.slow
@pytest.mark.mariadb
async def test_lock_wait_timeouts_are_waited_out(mariadb_db: Database) -> None:
    fleet = await create_fleet(mariadb_db.engine, FleetSpec(instances=300, seed=67, **CLEAN))
    blocker = connect_engine(normalize_url(mariadb_db.url))
    try:
        async with blocker.connect() as conn:
            trans = await conn.begin()
            await conn.execute(text("SELECT id FROM instance_extra WHERE id <= 5 FOR UPDATE"))  # nova, busy
            # A 2 s statement budget: lock waits give up after 1 s (1205) and are retried.
            options = FlavorOptions(batch_size=50, statement_timeout=2)
            run = asyncio.create_task(migrate_flavors([mariadb_db.url], options))
            await asyncio.sleep(3.5)
            assert not run.done()
            await trans.rollback()
        result = await run
    finally:
        await blocker.dispose()
    assert result.exit_code == 0
    assert result.databases[0].retries >= 2
    assert await check_fleet(mariadb_db.engine, fleet) == []


@pytest.mark.slow
@pytest.mark.mariadb
async def test_killed_connections_are_replaced(mariadb_db: Database) -> None:
    fleet = await create_fleet(mariadb_db.engine, FleetSpec(instances=4000, seed=71, **CLEAN))
    schema = make_url(mariadb_db.url).database
    run = asyncio.create_task(migrate_flavors([mariadb_db.url], FlavorOptions(batch_size=20)))
    killed = 0
    for _ in range(3):  # three times during the run, every connection fastmigrate has open
        while not await mariadb_db.scalar("SELECT COUNT(*) FROM instance_extra WHERE flavor IS NOT NULL"):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        async with mariadb_db.engine.connect() as conn:
            ids = (await conn.execute(text(
                "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"),
                {"db": schema})).scalars().all()
            for cid in ids:
                try:
                    await conn.execute(text(f"KILL CONNECTION {int(cid)}"))
                    killed += 1
                except DBAPIError as exc:
                    if mysql_errno(exc) != 1094:  # unknown thread: it closed between the listing and the kill
                        raise
    result = await run
    assert killed >= 3 and not run.exception()
    assert result.exit_code == 0, result.databases[0].error
    assert result.databases[0].retries >= 1
    assert await check_fleet(mariadb_db.engine, fleet) == []


@pytest.mark.pure
def test_session_settings_give_lock_waits_half_the_budget() -> None:
    from fastmigrate.db import session_settings

    assert session_settings("10.11.19-MariaDB-0+deb12u1", 10) == [
        "SET SESSION group_concat_max_len = 16777216", "SET SESSION in_predicate_conversion_threshold = 0",
        "SET SESSION innodb_lock_wait_timeout = 5", "SET SESSION max_statement_time = 10"]
    assert "SET SESSION in_predicate_conversion_threshold = 0" not in session_settings("10.3.17-MariaDB", 10)
    assert session_settings("8.0.36", 2.5)[1:] == [
        "SET SESSION innodb_lock_wait_timeout = 1", "SET SESSION max_execution_time = 2500"]
    assert session_settings("5.5.5-10.6.1-MariaDB", 0) == ["SET SESSION group_concat_max_len = 16777216",
                                                            "SET SESSION in_predicate_conversion_threshold = 0"]


@pytest.mark.mariadb
async def test_sessions_carry_the_statement_budget(mariadb_db: Database) -> None:
    engine = connect_engine(normalize_url(mariadb_db.url), statement_timeout=3)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT @@max_statement_time, @@innodb_lock_wait_timeout"))).one()
            assert (float(row[0]), int(row[1])) == (3.0, 1)
            with pytest.raises(Exception) as cut_off:
                await conn.execute(text("SELECT SLEEP(5) FROM DUAL WHERE 1 = (SELECT 1)"))
    finally:
        await engine.dispose()
    from fastmigrate.db import STATEMENT_TIMEOUT_ERRNOS, mysql_errno
    assert mysql_errno(cut_off.value) in STATEMENT_TIMEOUT_ERRNOS


@pytest.mark.slow
@pytest.mark.mariadb
async def test_a_deadlock_with_nova_is_retried(mariadb_db: Database) -> None:
    """nova holds an instance_extra row and then wants that instance's sysmeta rows, which the batch has
    locked while it waits for the same instance_extra row: a deadlock. The competitor has written far more
    (heavier in InnoDB's eyes), so the batch is the victim, and it is retried."""
    fleet = await create_fleet(mariadb_db.engine, FleetSpec(instances=20, seed=113, without_extra=0.0, **CLEAN))
    target = sorted(fleet.expected)[0]
    nova = connect_engine(normalize_url(mariadb_db.url))
    deadlocks = "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE VARIABLE_NAME = 'INNODB_DEADLOCKS'"
    before = int(await mariadb_db.scalar(deadlocks))
    await mariadb_db.execute("CREATE TABLE junk (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB")
    try:
        async with nova.connect() as conn:
            trans = await conn.begin()
            await conn.execute(text("INSERT INTO junk (v) SELECT seq FROM seq_1_to_20000"))
            await conn.execute(text("SELECT id FROM instance_extra WHERE instance_uuid = :u FOR UPDATE"),
                               {"u": target})
            run = asyncio.create_task(migrate_flavors([mariadb_db.url], FlavorOptions(batch_size=50)))
            for _ in range(200):  # until the batch holds its sysmeta locks and waits for the extra row
                waiting = await mariadb_db.scalar(
                    "SELECT COUNT(*) FROM information_schema.processlist "
                    "WHERE info LIKE '%FROM instance!_extra%FOR UPDATE' ESCAPE '!'")
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert waiting
            await asyncio.sleep(0.2)
            await conn.execute(text("SELECT id FROM instance_system_metadata WHERE instance_uuid = :u FOR UPDATE"),
                               {"u": target})
            await trans.commit()
        result = await run
    finally:
        await nova.dispose()
    r = result.databases[0]
    assert result.exit_code == ExitCode.DONE, r.error
    assert int(await mariadb_db.scalar(deadlocks)) > before  # a real deadlock, detected by InnoDB
    assert r.retries >= 1 and r.migrated == len(fleet.expected)
    assert await check_fleet(mariadb_db.engine, fleet) == []
