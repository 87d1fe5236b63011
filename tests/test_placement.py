"""placement copy, sync and verify on MariaDB: nova_api's placement tables into a placement database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from fastmigrate.cli import main
from fastmigrate.errors import SchemaError, UsageError
from fastmigrate.placement import (PlacementOptions, TargetNotEmpty, copy_placement, sync_placement,
                                   verify_placement)
from fastmigrate.placement.copy import row_by_row_first
from fastmigrate.output import Track
from fastmigrate.placement.report import format_placement, placement_json, placement_tracks
from fastmigrate.placement.results import PlacementRun, TableResult
from fastmigrate.placement.schema import COPY_ORDER, INITIAL_REVISION, SPECS, placement_metadata
from fastmigrate.placement.statements import delete_keys, key_range
from fastmigrate.results import ExitCode

from .conftest import PLACEMENT_FLEET, Database, summary

FLEET = PLACEMENT_FLEET
SMALL = PlacementOptions(chunk_size=500)  # several chunks per big table


async def _contents(db: Database) -> dict[str, list[tuple[object, ...]]]:
    """Every copied column of every row, in key order, as text: equal on both sides after a copy."""
    out = {}
    async with db.engine.connect() as conn:
        for name, spec in SPECS.items():
            columns = ", ".join(f"`{c}`" for c in spec.columns)
            order = ", ".join(f"`{c}`" for c in spec.key)
            rows = await conn.exec_driver_sql(f"SELECT {columns} FROM `{name}` ORDER BY {order}")
            out[name] = [tuple(str(v) for v in row) for row in rows]
    return out


async def _indexes(db: Database) -> set[tuple[str, str, str, int]]:
    """(table, index, column, position) of every index of the database."""
    rows = await db.rows("SELECT table_name, index_name, column_name, seq_in_index FROM information_schema.statistics "
                         "WHERE table_schema = DATABASE()")
    return {(str(t), str(i), str(c), int(n)) for t, i, c, n in rows}


# -- pure --------------------------------------------------------------------------------------------------


@pytest.mark.pure
def test_key_ranges_expand_composite_keys_for_the_index() -> None:
    traits = SPECS["resource_provider_traits"]
    assert key_range(traits, (1, 2), (3, 4)) == (
        "((`trait_id` > 1) OR (`trait_id` = 1 AND `resource_provider_id` > 2)) AND "
        "((`trait_id` < 3) OR (`trait_id` = 3 AND `resource_provider_id` <= 4))")
    assert key_range(SPECS["allocations"], None, (10,)) == "`id` <= 10"
    assert key_range(SPECS["allocations"], None, None) == "TRUE"
    assert delete_keys(traits, [(1, 2)]) == "DELETE FROM `resource_provider_traits` WHERE " \
                                            "(`trait_id` = 1 AND `resource_provider_id` = 2)"
    with pytest.raises(ValueError):
        key_range(traits, (1,), None)


@pytest.mark.pure
def test_sync_skips_checksums_only_after_mostly_differing_chunks() -> None:
    assert not row_by_row_first([True] * 4)  # too little history
    assert not row_by_row_first([True] * 4 + [False] * 4)
    assert row_by_row_first([True] * 5 + [False] * 3)


@pytest.mark.pure
def test_bad_options_are_refused() -> None:
    with pytest.raises(UsageError, match="chunk-size"):
        PlacementOptions(chunk_size=0)


# -- MariaDB -----------------------------------------------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.parametrize("in_server", [True, False], ids=["in-server", "through-client"])
async def test_copy_creates_the_schema_copies_every_row_and_stamps(nova_api: Database, mariadb_target: Database,
                                                                   mariadb_cells: list[Database],
                                                                   in_server: bool) -> None:
    scratch = mariadb_cells[0]  # placement's schema as its own metadata creates it, indexes and all
    async with scratch.engine.begin() as conn:
        await conn.run_sync(placement_metadata.create_all)
    placement_indexes = await _indexes(scratch)
    run = await copy_placement(nova_api.url, mariadb_target.url, PlacementOptions(chunk_size=500,
                                                                                  in_server=in_server))
    assert run.in_server is in_server  # both databases are on the test server
    assert run.exit_code == ExitCode.DONE and run.created_schema and run.stamped == INITIAL_REVISION
    assert {t.table: t.rows_copied for t in run.tables} == FLEET.row_counts
    # 9,000 rows in chunks of 500; in the server, the chunks are cut at the 500th key and the open-ended last
    # one (past the source's last key) is one more
    assert run.table("allocations").chunks == (19 if in_server else 18)
    assert run.indexes_built == 17
    assert await _indexes(mariadb_target) == placement_indexes
    assert await _contents(mariadb_target) == await _contents(nova_api)
    assert await mariadb_target.scalar("SELECT version_num FROM alembic_version") == INITIAL_REVISION
    # placement's schema, not nova_api's: no can_host, and the target's own charset
    assert await mariadb_target.scalar(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() "
        "AND table_name = 'resource_providers' AND column_name = 'can_host'") == 0
    assert await mariadb_target.scalar("SELECT external_id FROM projects WHERE id = 1") == "projé-1"
    assert await mariadb_target.scalar("SELECT name FROM resource_providers WHERE id = 1") == "nœud-1"
    assert (await verify_placement(nova_api.url, mariadb_target.url, SMALL)).exit_code == ExitCode.DONE


@pytest.mark.mariadb
async def test_copy_keeps_ids_of_zero(nova_api: Database, mariadb_target: Database) -> None:
    # Extracted placement gives VCPU the id 0; without NO_AUTO_VALUE_ON_ZERO an AUTO_INCREMENT column
    # turns an inserted 0 into the next id.
    async with nova_api.engine.begin() as conn:
        await conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        await conn.exec_driver_sql("INSERT INTO resource_classes (id, name) VALUES (0, 'VCPU')")
        await conn.exec_driver_sql("INSERT INTO traits (id, name) VALUES (0, 'HW_CPU_X86_AVX')")
    await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    assert await mariadb_target.scalar("SELECT name FROM resource_classes WHERE id = 0") == "VCPU"
    assert await mariadb_target.scalar("SELECT name FROM traits WHERE id = 0") == "HW_CPU_X86_AVX"


@pytest.mark.mariadb
async def test_a_target_with_placement_data_is_refused_untouched_unless_replace(
        nova_api: Database, mariadb_target: Database) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    # a placement service started against it: its own traits, with its own ids
    await mariadb_target.execute("INSERT INTO traits (id, name) VALUES (9001, 'COMPUTE_STATUS_DISABLED')")
    await mariadb_target.execute("UPDATE alembic_version SET version_num = '422ece571366'")
    before = await _contents(mariadb_target)
    with pytest.raises(TargetNotEmpty, match="--replace") as refused:
        await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    assert refused.value.exit_code == ExitCode.FAILED
    assert "422ece571366" in str(refused.value)
    assert await _contents(mariadb_target) == before
    run = await copy_placement(nova_api.url, mariadb_target.url, PlacementOptions(chunk_size=500, replace=True))
    assert run.replaced and run.stamped is None  # the revision placement wrote stays
    assert await _contents(mariadb_target) == await _contents(nova_api)
    assert await mariadb_target.scalar("SELECT version_num FROM alembic_version") == "422ece571366"


@pytest.mark.mariadb
async def test_a_source_that_is_not_nova_api_and_a_half_made_target_are_refused(
        nova_api: Database, mariadb_target: Database) -> None:
    with pytest.raises(SchemaError, match="not a nova_api database"):
        await copy_placement(mariadb_target.url, nova_api.url, SMALL)
    await mariadb_target.execute("CREATE TABLE traits (id INT PRIMARY KEY, name VARCHAR(255))")
    with pytest.raises(SchemaError, match="table projects is missing"):
        await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    assert await mariadb_target.scalar("SELECT COUNT(*) FROM traits") == 0
    with pytest.raises(UsageError, match="the same database"):
        await copy_placement(nova_api.url, nova_api.url, SMALL)


async def _change_source(db: Database) -> None:
    """What nova did between the copy and the outage: new, changed and deleted rows, in several tables."""
    for sql in [
        "INSERT INTO consumers (id, uuid, project_id, user_id, generation) VALUES (5000, 'new-consumer', 1, 1, 0)",
        "INSERT INTO allocations (id, resource_provider_id, consumer_id, resource_class_id, used) "
        "VALUES (20000, 3, 'new-consumer', 0, 2), (20001, 3, 'new-consumer', 1, 1024)",
        "DELETE FROM allocations WHERE id IN (4, 5, 6, 4500, 8999)",  # deleted instances, one at the very end
        "DELETE FROM consumers WHERE id IN (2, 1500)",
        "UPDATE resource_providers SET generation = generation + 1, updated_at = NULL WHERE id IN (1, 50)",
        "UPDATE inventories SET reserved = 7, allocation_ratio = 2.5 WHERE id = 10",
        "UPDATE projects SET external_id = 'projè-1' WHERE id = 1",
        "DELETE FROM resource_provider_traits WHERE resource_provider_id = 4",
        "INSERT INTO resource_provider_traits (trait_id, resource_provider_id) VALUES (30, 4)",
    ]:
        await db.execute(sql)


# (rows copied, rows deleted) per table after _change_source. Inside the server a changed row is updated in
# place (copied, not deleted); through fastmigrate it is deleted and copied again.
CHANGED = {
    True: {"consumers": (1, 2), "allocations": (2, 5), "resource_providers": (2, 0), "inventories": (1, 0),
           "projects": (1, 0), "resource_provider_traits": (1, 3)},
    False: {"consumers": (1, 2), "allocations": (2, 5), "resource_providers": (2, 2), "inventories": (1, 1),
            "projects": (1, 1), "resource_provider_traits": (1, 3)},
}


def _copied_and_deleted(run: PlacementRun) -> dict[str, tuple[int, int]]:
    return {t.table: (t.rows_copied, t.rows_deleted) for t in run.tables if t.rows_copied or t.rows_deleted}


@pytest.mark.mariadb
@pytest.mark.parametrize("in_server", [True, False], ids=["in-server", "through-client"])
async def test_sync_copies_only_what_changed_and_verify_then_agrees(nova_api: Database, mariadb_target: Database,
                                                                     in_server: bool) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    await _change_source(nova_api)
    found = await verify_placement(nova_api.url, mariadb_target.url, SMALL)
    assert found.exit_code == ExitCode.DIFFERENCES
    assert {t.table for t in found.tables if t.differing} == {
        "consumers", "allocations", "resource_providers", "inventories", "projects", "resource_provider_traits"}
    # the two ends of allocations differ: the first chunk and the open-ended last one
    allocations = found.table("allocations").differing
    assert allocations[0][0] is None and allocations[-1][1] is None

    run = await sync_placement(nova_api.url, mariadb_target.url, PlacementOptions(chunk_size=500,
                                                                                  in_server=in_server))
    assert run.exit_code == ExitCode.DONE and run.in_server is in_server
    assert _copied_and_deleted(run) == CHANGED[in_server]
    assert await _contents(mariadb_target) == await _contents(nova_api)
    assert (await verify_placement(nova_api.url, mariadb_target.url, SMALL)).exit_code == ExitCode.DONE
    again = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert sum(t.rows_copied + t.rows_deleted for t in again.tables) == 0


@pytest.mark.mariadb
async def test_a_target_user_who_may_not_read_nova_api_copies_through_fastmigrate(
        nova_api: Database, mariadb_target: Database) -> None:
    target_db = make_url(mariadb_target.url).database
    user = f"fm_{target_db[-12:]}"
    await mariadb_target.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        await mariadb_target.execute(f"GRANT ALL ON `{target_db}`.* TO '{user}'@'%'")
        url = make_url(mariadb_target.url).set(username=user, password="pw").render_as_string(hide_password=False)
        run = await copy_placement(nova_api.url, url, SMALL)
        assert not run.in_server and run.exit_code == ExitCode.DONE
        assert await _contents(mariadb_target) == await _contents(nova_api)
    finally:
        await mariadb_target.execute(f"DROP USER '{user}'@'%'")


@pytest.mark.mariadb
async def test_sync_converges_when_changes_are_everywhere(nova_api: Database, mariadb_target: Database) -> None:
    # Every chunk differs: sync stops computing checksums that are sure to differ and goes row by row.
    await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    await nova_api.execute("DELETE FROM allocations WHERE id % 97 = 0")
    await nova_api.execute("UPDATE allocations SET used = used + 1 WHERE id % 89 = 0")
    run = await sync_placement(nova_api.url, mariadb_target.url, PlacementOptions(chunk_size=100))
    allocations = run.table("allocations")
    assert allocations.chunks_repaired >= allocations.chunks - 2  # a window of 100 ids may miss both steps
    # deleted, and changed (updated in place; id 8633 = 97 * 89 is both)
    assert (allocations.rows_deleted, allocations.rows_copied) == (92, 101 - 1)
    assert await _contents(mariadb_target) == await _contents(nova_api)


@pytest.mark.mariadb
async def test_verify_lists_a_tampered_row_and_writes_nothing(nova_api: Database,
                                                              mariadb_target: Database) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    await mariadb_target.execute("UPDATE allocations SET used = used + 1 WHERE id = 1234")
    before = await _contents(mariadb_target)
    run = await verify_placement(nova_api.url, mariadb_target.url, SMALL)
    assert run.exit_code == ExitCode.DIFFERENCES
    assert [(t.table, t.differing) for t in run.tables if t.differing] == [("allocations", [((1000,), (1500,))])]
    assert await _contents(mariadb_target) == before


@pytest.mark.mariadb
async def test_an_interrupted_copy_is_completed_by_sync(nova_api: Database, mariadb_target: Database) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    indexes = await _indexes(mariadb_target)
    # as if the copy had died half-way: part of the rows, the deferred indexes not built, no stamp
    await mariadb_target.execute("DELETE FROM allocations WHERE id > 4000")
    await mariadb_target.execute("ALTER TABLE allocations DROP INDEX allocations_consumer_id_idx")
    await mariadb_target.execute("ALTER TABLE consumers DROP INDEX uniq_consumers0uuid")
    await mariadb_target.execute("DELETE FROM alembic_version")
    with pytest.raises(TargetNotEmpty, match="an unfinished copy"):
        await copy_placement(nova_api.url, mariadb_target.url, SMALL)
    found = await verify_placement(nova_api.url, mariadb_target.url, SMALL)
    assert found.missing_indexes == ["allocations_consumer_id_idx", "uniq_consumers0uuid"]
    assert found.exit_code == ExitCode.DIFFERENCES
    run = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert run.table("allocations").rows_copied == 5_000 and run.stamped == INITIAL_REVISION
    assert run.indexes_built == 2 and await _indexes(mariadb_target) == indexes
    assert await _contents(mariadb_target) == await _contents(nova_api)
    # Stamped, the schema is placement's to change: its head drops indexes (a082b8bb98d0) that no sync adds back.
    await mariadb_target.execute("ALTER TABLE placement_aggregates DROP INDEX ix_placement_aggregates_uuid")
    again = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    checked = await verify_placement(nova_api.url, mariadb_target.url, SMALL)
    assert again.indexes_built == 0 and checked.missing_indexes == [] and checked.exit_code == ExitCode.DONE
    assert not any(i[1] == "ix_placement_aggregates_uuid" for i in await _indexes(mariadb_target))


@pytest.mark.mariadb
def test_cli_exit_codes_and_masked_passwords(nova_api: Database, mariadb_target: Database,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    urls = ["--from", nova_api.url, "--to", mariadb_target.url, "--chunk-size", "1000"]
    assert main(["placement", "verify", *urls]) == ExitCode.USAGE  # no placement tables yet
    assert main(["placement", "copy", *urls, "--json"]) == ExitCode.DONE
    assert summary(capsys.readouterr().out)["stamped"] == "b4ed3a175331"
    assert main(["placement", "copy", *urls, "--json"]) == ExitCode.FAILED
    refused = capsys.readouterr()
    assert "--replace" in refused.err and "--replace" in summary(refused.out)["error"]
    assert main(["placement", "verify", *urls]) == ExitCode.DONE
    asyncio.run(_tamper(mariadb_target))
    assert main(["placement", "verify", *urls]) == ExitCode.DIFFERENCES
    assert "differs: traits keys (start .. end]" in capsys.readouterr().out
    assert main(["placement", "sync", *urls]) == ExitCode.DONE
    assert main(["placement", "verify", *urls]) == ExitCode.DONE
    with_password = nova_api.url.replace("root@", "root:s3cret@")
    assert main(["placement", "copy", "--from", with_password, "--to", mariadb_target.url]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "s3cret" not in err and "***" in err
    assert main(["placement", "copy", "--from", "sqlite:///x.db", "--to", mariadb_target.url]) == ExitCode.USAGE


async def _tamper(db: Database) -> None:
    await db.execute("UPDATE traits SET name = 'CUSTOM_TAMPERED' WHERE id = 7")
    await db.engine.dispose()


@pytest.mark.pure
def test_copy_order_covers_the_eleven_tables() -> None:
    assert len(COPY_ORDER) == 11 and set(COPY_ORDER) == set(SPECS)
    # hashed as utf8mb4 on both sides: every text column, found from the column types
    assert SPECS["resource_providers"].text_columns == {"uuid", "name"}
    assert SPECS["inventories"].text_columns == frozenset()


@pytest.mark.pure
def test_reports() -> None:
    run = PlacementRun("verify", "mysql://nova:***@db/nova_api", "mysql://placement:***@db/placement",
                       [TableResult("traits", source_rows=30, target_rows=30, chunks=1, seconds=0.04),
                        TableResult("allocations", source_rows=9_000, target_rows=9_001, chunks=2,
                                    differing=[((4500,), None)], seconds=0.5)], seconds=0.61, expected_rows=9_030)
    assert format_placement(run) == (
        "placement verify: mysql://nova:***@db/nova_api -> mysql://placement:***@db/placement\n"
        "table        source rows  target rows  copied  deleted  chunks  differing  seconds\n"
        "traits                30           30       0        0       1          0      0.0\n"
        "allocations        9,000        9,001       0        0       2          1      0.5\n"
        "differs: allocations keys (4500 .. end]\n"
        "1 differing key ranges: run `fastmigrate placement sync` (exit 3)\n")
    document = placement_json(run)
    assert '"exit_code": 3' in document and '"after": [\n            4500' in document
    assert placement_tracks(run) == [Track("placement verify", 9_030, 9_030, "rows")]


@pytest.mark.mariadb
async def test_urls_come_from_nova_conf_and_placement_conf(nova_api: Database, mariadb_target: Database,
                                                           tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    nova_conf, placement_conf = tmp_path / "nova.conf", tmp_path / "placement.conf"
    nova_conf.write_text(f"[api_database]\nconnection = {nova_api.url}\n")
    placement_conf.write_text(f"[placement_database]\nconnection = {mariadb_target.url}\n")
    both = ["--config-file", str(nova_conf), "--config-file", str(placement_conf)]
    assert await asyncio.to_thread(main, ["placement", "copy", *both, "--chunk-size", "1000"]) == ExitCode.DONE
    assert await asyncio.to_thread(main, ["placement", "verify", *both]) == ExitCode.DONE
    assert await asyncio.to_thread(main, ["placement", "verify", "--config-file", str(nova_conf)]) == ExitCode.USAGE
    assert "name placement_database (placement): --to URL" in capsys.readouterr().err
