"""placement audit on MariaDB: a nova_api with placement's tables, two cells, planted orphans."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from benchmarks.placement_fleet import (NOVA_SIDE, ORPHANED, PlacementFleet, create_nova_side,
                                        create_placement_fleet, uuid_of)
from fastmigrate.cli import main
from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.errors import ConnectionFailed, SchemaError, UsageError
from fastmigrate.placement import PlacementOptions, copy_placement
from fastmigrate.placement.audit import AuditOptions, _delete, audit_placement
from fastmigrate.output import Track
from fastmigrate.placement.report import audit_json, audit_tracks, format_audit
from fastmigrate.placement.results import AuditResult, Orphan
from fastmigrate.results import ExitCode

from .conftest import Database, summary

FLEET = PlacementFleet(3_000, seed=7)
SMALL = AuditOptions(chunk_size=700)  # several chunks, ends between consumers


def consumer(seq: int) -> str:
    return uuid_of("consumer", FLEET.seed, seq)


def planted(kinds: frozenset[str]) -> set[str]:
    return {consumer(seq) for seq in range(1, FLEET.consumers + 1) if NOVA_SIDE.get(seq % 100) in kinds}


ORPHANS = planted(ORPHANED)  # 90: deleted, finished migrations, unknown to nova
# Another service's consumer: only a custom class, no record in nova. Not nova's, so never an orphan.
NOT_NOVA = "0000aaaa-0000-4000-8000-000000000001"


@pytest.fixture
async def nova(mariadb_db: Database, mariadb_cells: list[Database]) -> tuple[Database, list[Database]]:
    """nova_api holding placement's tables (not extracted yet), and two cells mapped in cell_mappings."""
    await create_placement_fleet(mariadb_db.engine, FLEET)
    await create_nova_side(mariadb_db.engine, [(cell.engine, cell.url) for cell in mariadb_cells], FLEET)
    await mariadb_db.execute(f"INSERT INTO allocations (resource_provider_id, consumer_id, resource_class_id, used) "
                             f"VALUES (1, '{NOT_NOVA}', 10000, 1)")
    await mariadb_db.execute(f"INSERT INTO consumers (uuid, project_id, user_id) VALUES ('{NOT_NOVA}', 1, 1)")
    return mariadb_db, mariadb_cells


async def _allocations(db: Database) -> dict[str, int]:
    rows = await db.rows("SELECT consumer_id, COUNT(*) FROM allocations GROUP BY consumer_id")
    return {str(uuid): int(count) for uuid, count in rows}


async def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = await asyncio.to_thread(main, ["placement", "audit", *args, "--json"])
    return code, summary(capsys.readouterr().out)


# -- pure --------------------------------------------------------------------------------------------------


def _result(**changes: Any) -> AuditResult:
    orphan = Orphan("c-1", "instance deleted in cell1", ((11, 1, 0, 2), (12, 1, 1, 2048), (13, 2, 0, 1)), 0, 1)
    result = AuditResult("mysql+asyncmy://p:***@db/placement", "mysql+asyncmy://n:***@db/nova_api",
                         cells=["cell cell1"], consumers=10, allocations=30, orphans=[orphan],
                         providers={1: ("rp-1", "compute-1"), 2: ("rp-2", None)},
                         class_names={0: "VCPU", 1: "MEMORY_MB"}, seconds=1.5)
    for name, value in changes.items():
        setattr(result, name, value)
    return result


@pytest.mark.pure
def test_exit_codes_follow_what_is_left() -> None:
    orphan = _result().orphans[0]
    assert _result().exit_code == ExitCode.DIFFERENCES  # orphans listed
    assert _result(delete=True, deleted=[orphan]).exit_code == ExitCode.DONE
    assert _result(delete=True, changed=[orphan]).exit_code == ExitCode.MORE
    assert _result(orphans=[]).exit_code == ExitCode.DONE
    assert _result(orphans=[], no_root=[("rp-3", "x")]).exit_code == ExitCode.DIFFERENCES
    # an allocation without a consumers row blocks, unless it was an orphan this run deleted
    assert _result(orphans=[], no_consumer=[("c-9", 3)]).exit_code == ExitCode.DIFFERENCES
    assert _result(delete=True, deleted=[orphan], no_consumer=[("c-1", 3)]).exit_code == ExitCode.DONE


@pytest.mark.pure
def test_the_report_lists_each_orphan_per_provider_with_what_it_holds() -> None:
    text = format_audit(_result())
    assert "  orphaned                     1 consumers, 3 allocations, holding MEMORY_MB 2,048, VCPU 3\n" in text
    assert "  c-1  rp-1 (compute-1)  MEMORY_MB 2,048, VCPU 2  [instance deleted in cell1]\n" in text
    assert "  c-1  rp-2 (None)  VCPU 1  [instance deleted in cell1]\n" in text
    assert text.endswith("rerun with --delete to remove the orphaned allocations (placement's writers may keep "
                         "running) (1.5 s, exit 3)\n")
    assert audit_tracks(_result(expected_consumers=40)) == [Track("placement audit", 10, 40, "consumers")]
    doc = json.loads(audit_json(_result()))
    assert doc["held"] == {"VCPU": 3, "MEMORY_MB": 2048}
    assert doc["orphaned"][0]["allocations"][2] == {"id": 13, "provider": "rp-2", "provider_name": None,
                                                    "resource_class": "VCPU", "used": 1}


# -- MariaDB -----------------------------------------------------------------------------------------------


@pytest.mark.mariadb
async def test_audit_finds_exactly_the_planted_orphans(nova: tuple[Database, list[Database]],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    api, _ = nova
    before = await _allocations(api)
    result = await audit_placement(api.url, None, (), SMALL)
    assert {o.consumer for o in result.orphans} == ORPHANS
    reasons = {o.consumer: o.reason for o in result.orphans}
    assert reasons[consumer(101)] == "instance deleted in cell cell2"  # 101 % 2 = 1: the second cell
    assert reasons[consumer(103)] == "migration confirmed in cell cell2"
    assert reasons[consumer(106)] == "no instance, migration or build request"
    # the deleted instances still have their instance_mappings rows; the building ones are not orphans
    assert result.kept == {"migrating": 30, "building": 30, "mapped": 30}
    assert result.consumers == FLEET.consumers + 1 and result.not_nova == 1
    assert result.allocations == 3 * FLEET.consumers + 1
    assert sum(len(o.allocations) for o in result.orphans) == 3 * len(ORPHANS)
    assert result.held(result.orphans)["VCPU"] == sum(1 + seq % 8 for seq in range(1, FLEET.consumers + 1)
                                                      if consumer(seq) in ORPHANS)
    assert result.no_root == [] and result.no_consumer == []
    assert result.exit_code == ExitCode.DIFFERENCES
    assert await _allocations(api) == before  # looked, changed nothing

    code, doc = await _cli("--api-db", api.url, capsys=capsys)
    assert code == ExitCode.DIFFERENCES and {o["consumer"] for o in doc["orphaned"]} == ORPHANS
    assert doc["cells"] == ["cell cell1", "cell cell2"]


@pytest.mark.mariadb
async def test_delete_removes_the_orphans_only_and_reports_what_blocks_db_sync(
        nova: tuple[Database, list[Database]], mariadb_target: Database,
        capsys: pytest.CaptureFixture[str]) -> None:
    api, cells = nova
    await copy_placement(api.url, mariadb_target.url, PlacementOptions())
    placement = mariadb_target
    # What blocks placement's schema upgrades: a provider without its root, allocations without a consumer
    # record (one of a live instance, one of an orphan that --delete removes).
    await placement.execute("UPDATE resource_providers SET root_provider_id = NULL WHERE id = 3")
    await placement.execute(f"DELETE FROM consumers WHERE uuid IN ('{consumer(8)}', '{consumer(6)}')")
    before = await _allocations(placement)

    code, doc = await _cli("--api-db", api.url, "--placement-db", placement.url, "--cell-db", cells[0].url,
                     "--cell-db", cells[1].url, "--delete", capsys=capsys)
    assert set(doc["deleted"]) == ORPHANS and doc["changed"] == [] and doc["already_gone"] == []
    after = await _allocations(placement)
    assert after == {uuid: n for uuid, n in before.items() if uuid not in ORPHANS}
    listed = ", ".join(f"'{uuid}'" for uuid in ORPHANS)
    assert await placement.scalar(f"SELECT COUNT(*) FROM consumers WHERE uuid IN ({listed})") == 0
    assert doc["providers_without_root"] == [{"uuid": uuid_of("rp", FLEET.seed, 3), "name": "compute-3"}]
    assert doc["allocations_without_consumer"] == [{"consumer": consumer(8), "allocations": 3}]
    assert code == ExitCode.DIFFERENCES  # the blockers are still there
    assert await _allocations(api) == before | {uuid: 3 for uuid in (consumer(6), consumer(8))} | {NOT_NOVA: 1}

    code, doc = await _cli("--api-db", api.url, "--placement-db", placement.url, capsys=capsys)
    assert doc["orphaned"] == [] and code == ExitCode.DIFFERENCES
    await placement.execute("UPDATE resource_providers SET root_provider_id = id WHERE id = 3")
    await placement.execute(f"INSERT INTO consumers (uuid, project_id, user_id) VALUES ('{consumer(8)}', 1, 1)")
    code, doc = await _cli("--api-db", api.url, "--placement-db", placement.url, capsys=capsys)
    assert code == ExitCode.DONE


@pytest.mark.mariadb
async def test_delete_leaves_an_orphan_that_changed_since_it_was_read(nova: tuple[Database, list[Database]]) -> None:
    api, _ = nova
    result = await audit_placement(api.url, None, (), SMALL)
    bumped, grown, gone = consumer(1), consumer(3), consumer(6)
    # Between the audit's read and its delete: placement bumps one consumer's generation, another gets an
    # allocation more, a third's allocations are removed by placement itself.
    await api.execute(f"UPDATE consumers SET generation = generation + 1 WHERE uuid = '{bumped}'")
    await api.execute(f"INSERT INTO allocations (resource_provider_id, consumer_id, resource_class_id, used) "
                      f"VALUES (2, '{grown}', 0, 1)")
    await api.execute(f"DELETE FROM allocations WHERE consumer_id = '{gone}'")
    engine = connect_engine(normalize_url(api.url))
    result.delete = True
    try:
        await _delete(engine, result, 7)
    finally:
        await engine.dispose()
    assert {o.consumer for o in result.changed} == {bumped, grown}
    assert [o.consumer for o in result.gone] == [gone]
    assert {o.consumer for o in result.deleted} == ORPHANS - {bumped, grown, gone}
    assert result.exit_code == ExitCode.MORE
    left = await _allocations(api)
    assert left[bumped] == 3 and left[grown] == 4 and not ORPHANS - {bumped, grown} & left.keys()


@pytest.mark.mariadb
async def test_cells_left_out_templates_and_wrong_databases_are_refused(
        nova: tuple[Database, list[Database]]) -> None:
    api, cells = nova
    with pytest.raises(UsageError, match="placement commands work on MySQL/MariaDB"):
        await audit_placement(api.url, "sqlite:////tmp/placement.db")
    with pytest.raises(UsageError, match="maps 2 cells .* --cell-db names 1"):
        await audit_placement(api.url, None, [cells[0].url])
    with pytest.raises(SchemaError, match="not a nova_api database"):
        await audit_placement(cells[0].url, api.url)
    await api.execute("UPDATE cell_mappings SET database_connection = "
                      "'{scheme}://{username}:{password}@{hostname}/nova_cell1' WHERE id = 1")
    with pytest.raises(UsageError, match="cell cell1: its database_connection is a template"):
        await audit_placement(api.url)
    await api.execute("UPDATE cell_mappings SET database_connection = 'mysql+pymysql://nova:s3cret@127.0.0.1:1/x' "
                      "WHERE id = 1")
    with pytest.raises(ConnectionFailed, match="cell cell1: cannot connect") as failed:
        await audit_placement(api.url)
    assert "s3cret" not in str(failed.value)
