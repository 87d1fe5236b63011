"""A live nova changes instances between the read and the write of their batch: nothing is lost."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from fastmigrate import reader
from fastmigrate.fleet import FleetSpec, create_fleet
from fastmigrate.schema import instance_extra, sysmeta
from fastmigrate.transform import Migration, transform
from fastmigrate.writer import WriteOptions, write_batch

from .conftest import Database


async def test_changes_after_the_read_are_written_from_fresh_data_or_left_alone(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=60, seed=31, busy=0.0, deleted=0.0, resizing=0.0,
                                                    without_extra=0.1))
    async with db.engine.connect() as conn:
        page = await reader.read_page(conn, 0, 100, reader.ReadOptions())
    batch = [m for m in map(transform, page.candidates) if isinstance(m, Migration)]
    assert len(batch) == len(fleet.expected)
    with_extra = [m.uuid for m in batch if m.extra_id is not None]
    without = [m.uuid for m in batch if m.extra_id is None]
    resized, grown, migrated_by_nova, deleted, flavorless = with_extra[:5]
    new_extra = without[0]
    key = "`key`" if db.backend == "mariadb" else "key"

    # What nova does meanwhile:
    await db.execute(f"UPDATE instance_system_metadata SET value = '99999' WHERE instance_uuid = :u "
                     f"AND {key} = 'instance_type_memory_mb' AND deleted = 0", u=resized)
    rows = [(f"old_instance_type_{p}", v) for p, v in (("id", "1"), ("name", "m1.tiny"), ("memory_mb", "512"),
            ("vcpus", "1"), ("root_gb", "1"), ("ephemeral_gb", "0"), ("flavorid", "1"), ("swap", "0"),
            ("rxtx_factor", "1.0"), ("vcpu_weight", None))]
    for k, v in rows:
        await db.execute(f"INSERT INTO instance_system_metadata (instance_uuid, {key}, value, deleted, created_at) "
                         "VALUES (:u, :k, :v, 0, '2016-01-01')", u=grown, k=k, v=v)
    await db.execute("UPDATE instance_extra SET flavor = '{\"cur\": \"by nova\"}' WHERE instance_uuid = :u",
                     u=migrated_by_nova)
    await db.execute("UPDATE instances SET deleted = id WHERE uuid = :u", u=deleted)
    await db.execute("UPDATE instance_system_metadata SET deleted = id WHERE instance_uuid = :u", u=deleted)
    await db.execute(f"DELETE FROM instance_system_metadata WHERE instance_uuid = :u AND {key} = 'instance_type_swap'",
                     u=flavorless)
    await db.execute("INSERT INTO instance_extra (instance_uuid, deleted, created_at) VALUES (:u, 0, '2016-01-01')",
                     u=new_extra)

    outcome = await write_batch(db.engine, batch, WriteOptions())
    assert outcome.refreshed == 6
    assert outcome.skipped == 2  # the one nova migrated, the one nova deleted
    assert [b.uuid for b in outcome.broken] == [flavorless]
    assert outcome.migrated == len(batch) - 3

    async with db.engine.connect() as conn:
        blobs = {u: (f, d) for u, f, d in await conn.execute(
            select(instance_extra.c.instance_uuid, instance_extra.c.flavor, instance_extra.c.deleted))}
        extra_count = {u: 0 for u in blobs}
        for (u,) in await conn.execute(select(instance_extra.c.instance_uuid)):
            extra_count[u] += 1
        left = {u: n for u, n in await conn.execute(
            select(sysmeta.c.instance_uuid, sysmeta.c.id).where(sysmeta.c.key.like("%instance!_type!_%", escape="!"),
                                                                  sysmeta.c.deleted == 0))}
    assert json.loads(blobs[resized][0])["cur"]["nova_object.data"]["memory_mb"] == 99999
    assert json.loads(blobs[grown][0])["old"]["nova_object.data"]["name"] == "m1.tiny"
    assert blobs[migrated_by_nova][0] == '{"cur": "by nova"}'  # untouched, and so are its rows:
    assert migrated_by_nova in left
    assert blobs[deleted][0] is None
    assert blobs[flavorless][0] is None and flavorless in left  # half a flavor is never migrated
    assert extra_count[new_extra] == 1 and blobs[new_extra][0] is not None  # nova's row was used, not a second
    for uuid in (resized, grown, new_extra):
        assert uuid not in left


@pytest.mark.mariadb
async def test_writers_lock_gaps_only_where_they_may_insert(mariadb_db: Database) -> None:
    # Concurrent writers deadlock when each inserts an instance_extra row into an index gap the other locked.
    # A batch's known rows are therefore locked alone (by primary key); only an instance without a row has
    # the gap around its uuid locked, which keeps nova from inserting a row for it meanwhile.
    await create_fleet(mariadb_db.engine, FleetSpec(instances=30, seed=4, without_extra=0.0, busy=0.0, deleted=0.0))
    async with mariadb_db.engine.connect() as conn:
        rows = (await conn.execute(select(instance_extra.c.id, instance_extra.c.instance_uuid)
                                   .order_by(instance_extra.c.instance_uuid))).all()
    ids = [extra_id for extra_id, _ in rows]
    low, high = rows[10][1], rows[11][1]
    between = low[:-1] + chr(ord(low[-1]) + 1)  # sorts right after a locked uuid, before the next one
    assert low < between < high

    async def insert_from_another_session() -> str:
        async with mariadb_db.engine.connect() as other:
            await other.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            try:
                await other.exec_driver_sql("INSERT INTO instance_extra (instance_uuid, deleted) VALUES (%s, 0)",
                                            (between,))
            except DBAPIError as exc:
                return str(exc.orig)
            finally:
                await other.rollback()
            return "inserted"

    async with mariadb_db.engine.begin() as conn:
        found = await reader.lock_extras(conn, ids, [])
        assert sorted(e.id for extras in found.values() for e in extras) == sorted(ids)
        assert await insert_from_another_session() == "inserted"
        await conn.rollback()
    async with mariadb_db.engine.begin() as conn:
        assert await reader.lock_extras(conn, [], [between]) == {}
        assert "1205" in await insert_from_another_session()  # lock wait timeout: the gap is held
        await conn.rollback()
