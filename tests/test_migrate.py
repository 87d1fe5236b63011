"""The flavors contract, line by line, on SQLite and on MariaDB (the ``db`` fixture runs each on both)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from fastmigrate import ExitCode, FlavorOptions, migrate_flavors, reader
from fastmigrate.fleet import BROKEN_KINDS, FleetSpec, check_fleet, create_fleet
from fastmigrate.schema import instance_extra, instances, sysmeta

from .conftest import Database

CLEAN = dict(busy=0.0, deleted=0.0)  # a fleet with nothing to skip


async def run(db: Database, **options: Any) -> Any:
    result = await migrate_flavors([db.url], FlavorOptions(**options))
    return result


async def non_flavor_digest(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        q = select(sysmeta).where(~sysmeta.c.key.like("%instance!_type!_%", escape="!")).order_by(sysmeta.c.id)
        return list(await conn.execute(q))


async def test_fleet_migrates_completely_and_a_rerun_changes_nothing(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=1200, seed=7, broken=len(BROKEN_KINDS)))
    assert set(fleet.broken.values()) == set(BROKEN_KINDS)
    before_non_flavor = await non_flavor_digest(db)

    first = await run(db, batch_size=100)
    r = first.databases[0]
    assert await check_fleet(db.engine, fleet) == []
    in_scope = {u for u in fleet.expected if u not in fleet.deleted and u not in fleet.busy}
    assert r.migrated == len(in_scope)
    assert set(r.busy) == fleet.busy
    assert {b.uuid for b in r.broken} == set(fleet.broken)
    assert r.refreshed == 0  # nothing changed behind our back: the SQL and Python fingerprints agree
    assert r.found == r.migrated + len(r.busy) + len(r.broken)
    assert r.remaining == len(fleet.busy) + len(fleet.broken)
    assert first.exit_code == ExitCode.FAILED  # broken instances win over busy ones
    assert await non_flavor_digest(db) == before_non_flavor  # not one non-flavor row touched

    digest = await db.checksum()
    second = await run(db, batch_size=100)
    again = second.databases[0]
    assert again.migrated == 0
    assert await db.checksum() == digest
    # The rerun resumes instead of rescanning: migrated instances are skipped inside the server, so it reads
    # a handful of pages (growing windows) where the first run read one per 100 instances.
    assert again.scanned == r.scanned and set(again.busy) == fleet.busy
    assert r.pages >= 12 and again.pages <= 6


@pytest.mark.pure
@pytest.mark.parametrize(("window", "scanned", "found", "expected"), [
    (100, 100, 100, 100),  # all work: stay
    (100, 100, 0, 400),  # nothing to do here: look further, fourfold at most
    (400, 400, 2, 1600),
    (1600, 1600, 800, 200),  # dense again: back towards the page size...
    (6400, 6400, 6400, 100),  # ...never under it
    (40_000, 40_000, 0, 50_000),  # never over the cap
    (400, 37, 0, 400),  # the end of the table: unchanged
])
def test_next_window_follows_the_density_of_work(window: int, scanned: int, found: int, expected: int) -> None:
    from fastmigrate.reader import next_window
    assert next_window(window, scanned, found, limit=100, cap=50_000) == expected


async def test_blob_is_written_to_the_existing_row_or_one_new_live_row(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=600, seed=3, without_extra=0.2, **CLEAN))
    assert fleet.without_extra
    extra_ids_before = {u: i for i, u in await _extra_ids(db)}
    result = await run(db)
    assert result.exit_code == ExitCode.DONE
    rows = await _extra_rows(db)
    per_uuid: dict[str, list[Any]] = {}
    for row in rows:
        per_uuid.setdefault(row.instance_uuid, []).append(row)
    assert all(len(v) == 1 for v in per_uuid.values())  # never a second row
    for uuid in fleet.expected:
        (row,) = per_uuid[uuid]
        assert row.flavor is not None
        if uuid in fleet.without_extra:
            assert row.deleted == 0 and row.created_at is not None  # else nova never sees it
        else:
            assert row.id == extra_ids_before[uuid] and row.updated_at is not None


async def _extra_ids(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        return list(await conn.execute(select(instance_extra.c.id, instance_extra.c.instance_uuid)))


async def _extra_rows(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(instance_extra))).all())


async def test_busy_instances_are_skipped_unless_forced(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=800, seed=11, busy=0.05, deleted=0.0))
    first = await run(db)
    assert set(first.databases[0].busy) == fleet.busy
    assert first.exit_code == ExitCode.MORE
    forced = await run(db, force=True)
    assert forced.databases[0].migrated == len(fleet.busy)
    assert forced.exit_code == ExitCode.DONE
    assert await check_fleet(db.engine, fleet, force=True) == []


async def test_soft_deleted_instances_only_with_include_deleted(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=800, seed=5, deleted=0.05, busy=0.0))
    first = await run(db)
    assert first.exit_code == ExitCode.DONE
    assert await check_fleet(db.engine, fleet) == []  # the deleted ones were left alone
    second = await run(db, include_deleted=True)
    assert second.databases[0].migrated == len(fleet.deleted)
    assert await check_fleet(db.engine, fleet, include_deleted=True) == []
    assert (await run(db, include_deleted=True)).databases[0].migrated == 0


async def test_soft_delete_keeps_rows_marked_deleted(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=500, seed=9, **CLEAN))
    key = "`key`" if db.backend == "mariadb" else "key"
    live_flavor = f"SELECT COUNT(*) FROM instance_system_metadata WHERE {key} LIKE '%instance!_type!_%' ESCAPE '!' " \
                  "AND deleted = 0"
    soft = "SELECT COUNT(*) FROM instance_system_metadata WHERE deleted = id AND deleted_at IS NOT NULL"
    live_before, soft_before = await db.scalar(live_flavor), await db.scalar(soft)
    result = await run(db, soft_delete=True)
    assert result.exit_code == ExitCode.DONE
    assert result.databases[0].rows_removed == live_before
    assert await check_fleet(db.engine, fleet) == []
    assert await db.scalar("SELECT COUNT(*) FROM instance_system_metadata") == fleet.sysmeta_rows  # nothing removed
    assert await db.scalar(live_flavor) == 0
    assert await db.scalar(soft) == soft_before + live_before  # each replaced row marked deleted = id
    digest = await db.checksum()
    assert (await run(db, soft_delete=True)).databases[0].migrated == 0
    assert await db.checksum() == digest


async def test_dry_run_writes_nothing(db: Database) -> None:
    await create_fleet(db.engine, FleetSpec(instances=700, seed=13, broken=3))
    digest = await db.checksum()
    dry = await run(db, dry_run=True)
    assert await db.checksum() == digest
    real = await run(db)
    d, r = dry.databases[0], real.databases[0]
    assert (d.migrated, len(d.busy), len(d.broken), d.found) == (r.migrated, len(r.busy), len(r.broken), r.found)
    assert dry.exit_code == ExitCode.FAILED  # what the real run will meet: broken instances


async def test_dry_run_sessions_refuse_writes(db: Database) -> None:
    from sqlalchemy.exc import DBAPIError

    from fastmigrate.db import connect_engine, normalize_url

    await create_fleet(db.engine, FleetSpec(instances=10, seed=1))
    engine = connect_engine(normalize_url(db.url), read_only=True)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(select(sysmeta.c.id).limit(1))).scalar() is not None  # reads work
        with pytest.raises(DBAPIError):
            async with engine.begin() as conn:
                await conn.execute(sysmeta.delete())
    finally:
        await engine.dispose()
    assert await db.scalar("SELECT COUNT(*) FROM instance_system_metadata") > 0


async def test_max_count_stops_and_says_more_remains(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=500, seed=17, **CLEAN))
    first = await run(db, max_count=120, batch_size=50)
    r = first.databases[0]
    assert r.migrated == 120 and r.stopped_early
    assert r.remaining == len(fleet.expected) - 120
    assert first.exit_code == ExitCode.MORE
    rest = await run(db, batch_size=50)
    assert rest.databases[0].migrated == len(fleet.expected) - 120
    assert rest.exit_code == ExitCode.DONE
    assert await check_fleet(db.engine, fleet) == []


async def test_several_databases_at_once(db: Database, sqlite_db: Database) -> None:
    fleets = [await create_fleet(d.engine, FleetSpec(instances=300, seed=i, **CLEAN))
              for i, d in enumerate((db, sqlite_db))]
    result = await migrate_flavors([db.url, sqlite_db.url], FlavorOptions(batch_size=64))
    assert [d.migrated for d in result.databases] == [len(f.expected) for f in fleets]
    assert result.exit_code == ExitCode.DONE
    for d, f in zip((db, sqlite_db), fleets):
        assert await check_fleet(d.engine, f) == []


async def test_a_database_without_nova_tables_is_refused_before_any_write(db: Database) -> None:
    await db.execute("CREATE TABLE instances (id INTEGER PRIMARY KEY, uuid VARCHAR(36))")
    result = await run(db)
    assert result.exit_code == ExitCode.USAGE
    assert "table instance_system_metadata is missing" in result.databases[0].error
    assert "instances lacks column(s) deleted, task_state, vm_state" in result.databases[0].error


@pytest.mark.mariadb
async def test_a_missing_or_renamed_uuid_index_is_refused_with_the_fix(mariadb_db: Database) -> None:
    fleet = await create_fleet(mariadb_db.engine, FleetSpec(instances=20, seed=2, **CLEAN))
    before = await mariadb_db.checksum()
    await mariadb_db.execute("ALTER TABLE instance_system_metadata DROP INDEX instance_uuid")
    await mariadb_db.execute("ALTER TABLE instance_extra RENAME INDEX instance_extra_idx TO by_uuid")
    error = (await run(mariadb_db)).databases[0].error
    assert (await run(mariadb_db)).exit_code == ExitCode.USAGE
    assert "CREATE INDEX instance_uuid ON instance_system_metadata (instance_uuid)" in error
    assert "ALTER TABLE instance_extra RENAME INDEX by_uuid TO instance_extra_idx" in error
    assert await mariadb_db.checksum() == before
    await mariadb_db.execute("CREATE INDEX instance_uuid ON instance_system_metadata (instance_uuid)")
    await mariadb_db.execute("ALTER TABLE instance_extra RENAME INDEX by_uuid TO instance_extra_idx")
    assert (await run(mariadb_db)).exit_code == ExitCode.DONE
    assert await check_fleet(mariadb_db.engine, fleet) == []


@pytest.mark.mariadb
async def test_a_big_batch_is_looked_up_by_index_not_scanned(mariadb_db: Database) -> None:
    # MariaDB turns IN lists of 1,000+ values into a join with a temporary table, which it may run as a
    # scan of the whole table. That may not happen to a batch.
    await create_fleet(mariadb_db.engine, FleetSpec(instances=1500, seed=9, **CLEAN))
    async with mariadb_db.engine.connect() as conn:
        uuids = list((await conn.execute(select(instances.c.uuid))).scalars())
        rows, reads = await _handler_reads(conn, reader.flavor_rows(conn, uuids, include_deleted=False))
    assert len(rows) == 1500
    assert reads == {"Handler_read_key": 1500, "Handler_read_rnd_next": 0}


@pytest.mark.mariadb
async def test_stale_statistics_do_not_turn_lookups_into_scans(mariadb_db: Database) -> None:
    # Right after a restore InnoDB's statistics can say a table is nearly empty, and then a scan looks
    # cheapest. Lookups by uuid name nova's indexes, so the plan does not depend on them.
    await create_fleet(mariadb_db.engine, FleetSpec(instances=1500, seed=9, without_extra=0.0, **CLEAN))
    schema = make_url(mariadb_db.url).database
    for table in ("instance_system_metadata", "instance_extra"):
        await mariadb_db.execute(f"ALTER TABLE {table} STATS_AUTO_RECALC = 0")
        await mariadb_db.execute("UPDATE mysql.innodb_table_stats SET n_rows = 1, clustered_index_size = 1, "
                                 "sum_of_other_index_sizes = 1 WHERE database_name = :s AND table_name = :t",
                                 s=schema, t=table)
        await mariadb_db.execute("UPDATE mysql.innodb_index_stats SET stat_value = 1 "
                                 "WHERE database_name = :s AND table_name = :t", s=schema, t=table)
        await mariadb_db.execute(f"FLUSH TABLES {table}")  # the next open reads the statistics above
    async with mariadb_db.engine.connect() as conn:
        uuids = list((await conn.execute(select(instances.c.uuid))).scalars())
        rows, sysmeta_reads = await _handler_reads(conn, reader.flavor_rows(conn, uuids, include_deleted=False))
        extras, extra_reads = await _handler_reads(conn, reader.lock_extras(conn, [], uuids[:300]))
        await conn.rollback()
    assert len(rows) == 1500 and len(extras) == 300
    assert sysmeta_reads["Handler_read_rnd_next"] == 0 and extra_reads["Handler_read_rnd_next"] == 0


async def _handler_reads(conn: Any, work: Any) -> tuple[Any, dict[str, int]]:
    """What ``work`` returns, and how many index lookups and scanned rows (session handler counters) it took."""
    status = "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_key', 'Handler_read_rnd_next')"
    before = dict((await conn.exec_driver_sql(status)).all())
    answer = await work
    after = dict((await conn.exec_driver_sql(status)).all())
    return answer, {name: int(after[name]) - int(before[name]) for name in after}


async def test_a_resumed_run_fills_whole_batches(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=1000, seed=41, migrated=0.9, **CLEAN))
    todo = len(fleet.expected)
    assert 60 < todo < 140
    result = await run(db, batch_size=50)
    r = result.databases[0]
    assert r.migrated == todo and r.scanned == 1000
    assert r.transactions == -(-todo // 50)  # not one transaction per 50-instance page
    assert await check_fleet(db.engine, fleet) == []


async def test_transactions_stay_under_the_byte_cap(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=600, seed=73, **CLEAN))
    result = await run(db, batch_size=500, max_transaction_bytes=65_536)
    r = result.databases[0]
    total = await db.scalar("SELECT SUM(LENGTH(flavor)) FROM instance_extra")
    assert r.migrated == len(fleet.expected)
    assert r.transactions >= -(-total // 65_536) > 2  # cut by bytes, not by the 500-instance batch size
    assert await check_fleet(db.engine, fleet) == []


@pytest.mark.parametrize("writers", [1, 3])
async def test_batches_and_writers_do_not_change_the_outcome(db: Database, writers: int) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=900, seed=23, **CLEAN))
    result = await run(db, batch_size=37, writers=writers)
    assert result.databases[0].migrated == len(fleet.expected)
    assert await check_fleet(db.engine, fleet) == []


async def test_json_lists_every_broken_instance(db: Database) -> None:
    from fastmigrate.report import to_json

    fleet = await create_fleet(db.engine, FleetSpec(instances=600, seed=29, broken=6, **CLEAN))
    doc = json.loads(to_json(await run(db)))
    assert doc["schema_version"] == 2 and doc["exit_code"] == 2
    (entry,) = doc["databases"]
    assert {b["uuid"] for b in entry["broken_instances"]} == set(fleet.broken)
    assert all(b["reason"] for b in entry["broken_instances"])


async def test_status_reads_only_and_counts_what_blocks_nova(db: Database) -> None:
    from fastmigrate import flavor_status
    from fastmigrate.report import format_table

    fleet = await create_fleet(db.engine, FleetSpec(instances=800, seed=59, busy=0.02, deleted=0.02,
                                                    broken=len(BROKEN_KINDS)))
    live = [u for u in fleet.expected if u not in fleet.deleted]
    digest = await db.checksum()
    before = await flavor_status([db.url])
    assert await db.checksum() == digest
    s = before.databases[0]
    assert s.pending_before == len(live) + len(fleet.broken)
    assert s.migrated == len(live) - len(fleet.busy) and set(s.busy) == fleet.busy
    # every live instance but the one planted without flavor rows has its instance_type_id row
    assert s.blocker_rows == len(live) + len(fleet.broken) - 1
    assert before.exit_code == ExitCode.FAILED
    assert "blocker rows (291)" in format_table(before)

    await run(db, force=True)
    after = (await flavor_status([db.url])).databases[0]
    assert after.pending_before == len(fleet.broken) and after.migrated == 0
    assert after.blocker_rows == len(fleet.broken) - 1  # only the broken ones still block nova


async def test_status_is_zero_when_done(db: Database) -> None:
    from fastmigrate import flavor_status

    await create_fleet(db.engine, FleetSpec(instances=300, seed=61, **CLEAN))
    await run(db)
    done = await flavor_status([db.url])
    assert (done.databases[0].pending_before, done.databases[0].blocker_rows, done.exit_code) == (0, 0, 0)


def test_blob_updates_are_chunked_by_bytes() -> None:
    from fastmigrate.transform import Migration
    from fastmigrate.writer import _chunks_by_bytes

    def m(size: int) -> Migration:
        return Migration("u", False, 1, "x" * size, (), (), "")

    sizes = [[len(x.blob) for x in chunk] for chunk in _chunks_by_bytes([m(400), m(400), m(400), m(900)], 1000)]
    assert sizes == [[400, 400], [400], [900]]  # never over the limit, never an empty chunk


async def test_small_statement_limits_split_every_write(db: Database) -> None:
    """Several UPDATE and DELETE statements per transaction, each checked by row count."""
    from fastmigrate import reader
    from fastmigrate.transform import Migration, transform
    from fastmigrate.writer import WriteOptions, write_batch

    fleet = await create_fleet(db.engine, FleetSpec(instances=120, seed=127, without_extra=0.1, **CLEAN))
    async with db.engine.connect() as conn:
        page = await reader.read_page(conn, 0, 200, reader.ReadOptions())
    batch = [x for x in map(transform, page.candidates) if isinstance(x, Migration)]
    outcome = await write_batch(db.engine, batch, WriteOptions(statement_bytes=5_000, ids_per_statement=7))
    assert outcome.migrated == len(fleet.expected) and outcome.refreshed == 0
    assert outcome.rows_removed == sum(len(x.row_ids) for x in batch)
    assert await check_fleet(db.engine, fleet) == []
