"""The benchmark's fleet, small: generated inside MariaDB, migrated, and checked against the oracle that
knows every instance's flavors from the generator's hashes alone. Correctness only: timings belong to
benchmarks/, never to tests."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from benchmarks.sql_fleet import create_sql_fleet, oracle
from fastmigrate import ExitCode, FlavorOptions, migrate_flavors, verify_flavors
from fastmigrate.fleet import check_fleet
from fastmigrate.schema import instance_extra, instances, sysmeta

from .conftest import Database

pytestmark = pytest.mark.mariadb
N = 10_000


async def test_the_benchmark_fleet_migrates_as_its_oracle_says(mariadb_db: Database) -> None:
    await create_sql_fleet(mariadb_db.engine, N, seed=11, chunk=3_000)
    fleet = oracle(N, seed=11)
    async with mariadb_db.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(instances))).scalar_one()
        rows = (await conn.execute(select(func.count()).select_from(sysmeta))).scalar_one()
        soft = (await conn.execute(select(func.count()).select_from(sysmeta)
                                   .where(sysmeta.c.deleted != 0))).scalar_one()
        extras = (await conn.execute(select(func.count()).select_from(instance_extra))).scalar_one()
        # Rows of one instance are contiguous in id order, except the scattered instances' late rows.
        spread = (await conn.execute(select(func.count()).select_from(
            select(sysmeta.c.instance_uuid).where(sysmeta.c.deleted == 0).group_by(sysmeta.c.instance_uuid)
            .having(func.max(sysmeta.c.id) - func.min(sysmeta.c.id) > 100).subquery()))).scalar_one()
    assert count == N and len(fleet.expected) == N
    assert 17 * N < rows < 20 * N and 0.005 < soft / rows < 0.02  # about 18 rows each, about 1% soft-deleted
    assert extras == N - len(fleet.without_extra) and 200 < len(fleet.without_extra) < 400
    assert 20 < len(fleet.busy) < 100 and 20 < len(fleet.deleted) < 100
    assert 0.05 * N < spread < 0.15 * N
    resizing = sum(1 for slots in fleet.expected.values() if slots["old"] is not None)
    stashed = sum(1 for slots in fleet.expected.values() if slots["cur"] and slots["cur"][1])  # type: ignore[index]
    assert 100 < resizing < 300 and 350 < stashed < 650

    result = await migrate_flavors([mariadb_db.url], FlavorOptions())
    r = result.databases[0]
    assert r.error is None and not r.broken
    assert r.migrated == N - len(fleet.deleted) - len(fleet.busy) and set(r.busy) == fleet.busy
    assert result.exit_code == ExitCode.MORE  # the busy instances wait for the next run
    assert await check_fleet(mariadb_db.engine, fleet) == []
    verified = (await verify_flavors([mariadb_db.url])).databases[0]
    assert verified.checked == N - len(fleet.deleted)
    assert {uuid for uuid, _ in verified.mismatches} == fleet.busy  # only the busy ones are not migrated yet


async def test_the_in_server_reference_does_the_same_work(mariadb_db: Database) -> None:
    """The yardstick is only fair if it produces what fastmigrate produces: the same blobs, by the oracle."""
    from benchmarks.reference import reference_migrate

    await create_sql_fleet(mariadb_db.engine, 3_000, seed=13)
    fleet = oracle(3_000, seed=13)
    report = await reference_migrate(mariadb_db.engine)
    migrated = 3_000 - len(fleet.deleted) - len(fleet.busy)
    assert report["build_rows"] == migrated
    assert report["update_rows"] + report["insert_rows"] == migrated
    assert await check_fleet(mariadb_db.engine, fleet) == []
    verified = (await verify_flavors([mariadb_db.url])).databases[0]
    assert {uuid for uuid, _ in verified.mismatches} == fleet.busy  # every blob loads as nova reads it


async def test_the_upstream_style_baseline_migrates_its_sample(mariadb_db: Database) -> None:
    from benchmarks.baseline import baseline_migrate
    from fastmigrate.db import normalize_url

    await create_sql_fleet(mariadb_db.engine, 1_000, seed=17)
    fleet = oracle(1_000, seed=17)
    report = baseline_migrate(normalize_url(mariadb_db.url), limit=400)
    assert report["migrated"] == 400
    # The sample is migrated correctly; the rest is untouched, and fastmigrate finishes it.
    assert (await migrate_flavors([mariadb_db.url], FlavorOptions())).databases[0].migrated == \
        1_000 - len(fleet.deleted) - len(fleet.busy) - 400
    assert await check_fleet(mariadb_db.engine, fleet) == []
