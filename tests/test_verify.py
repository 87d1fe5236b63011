"""fastmigrate verify: an independent re-read that finds what nova could not load."""

from __future__ import annotations

import json

import pytest

from fastmigrate import ExitCode, FlavorOptions, migrate_flavors, verify_flavors
from fastmigrate.blobcheck import blob_problems
from fastmigrate.fleet import FleetSpec, create_fleet

from .conftest import Database

CLEAN = dict(busy=0.0, deleted=0.0)
GOOD = {"id": 1, "name": "m1.tiny", "memory_mb": 512, "vcpus": 1, "root_gb": 1, "ephemeral_gb": 0,
        "flavorid": "1", "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None, "extra_specs": {}}


def blob(cur: object, version: str = "1.2", **data: object) -> str:
    prim = {"nova_object.name": "Flavor", "nova_object.namespace": "nova", "nova_object.version": version,
            "nova_object.data": dict(GOOD, **data)} if cur is None else cur
    return json.dumps({"cur": prim, "old": {}, "new": None})  # as nova writes it: spaces, {} for none


@pytest.mark.pure
@pytest.mark.parametrize(("text", "problem"), [
    (blob(None), None),
    (None, "no flavor blob"),
    ("{", "not JSON"),
    ('{"cur": null, "old": null}', "lacks new"),
    (blob(1), "cur is not a Flavor primitive"),
    (blob(None, version="1.3"), "version '1.3' is not one nova 34 loads"),
    (blob(None, memory_mb="512"), "memory_mb is str '512'"),
    (blob(None, vcpus=True), "vcpus is bool True"),
    (blob(None, flavorid=None), "flavorid is null"),
    (blob(None, extra_specs={"hw:numa_mem.0": 512}), "extra_specs is not a dict of strings"),
])
def test_blob_problems(text: str | None, problem: str | None) -> None:
    found = blob_problems(text)
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


@pytest.mark.pure
def test_a_missing_property_is_reported() -> None:
    doc = json.loads(blob(None))
    del doc["cur"]["nova_object.data"]["swap"]
    assert blob_problems(json.dumps(doc)) == ["cur: swap is missing"]


async def test_verify_after_a_clean_migration(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=400, seed=103, deleted=0.02, busy=0.0))
    assert (await migrate_flavors([db.url])).exit_code == ExitCode.DONE
    run = await verify_flavors([db.url])
    assert run.exit_code == ExitCode.DONE and run.databases[0].mismatches == []
    assert run.databases[0].checked == len(fleet.expected) - len(fleet.deleted)


async def test_verify_lists_what_is_not_migrated_or_was_tampered_with(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=400, seed=107, busy=0.02, deleted=0.0))
    await migrate_flavors([db.url])
    done = sorted(u for u in fleet.expected if u not in fleet.busy)
    await db.execute("UPDATE instance_extra SET flavor = '{\"cur\": 1, \"old\": null, \"new\": null}' "
                     "WHERE instance_uuid = :u", u=done[0])
    await db.execute("INSERT INTO instance_extra (instance_uuid, deleted, created_at) VALUES (:u, 0, '2016-01-01')",
                     u=done[1])
    run = await verify_flavors([db.url])
    assert run.exit_code == ExitCode.DIFFERENCES
    found = dict(run.databases[0].mismatches)
    assert found[done[0]] == "cur is not a Flavor primitive"
    assert found[done[1]].startswith("2 instance_extra rows")
    assert {u for u, p in found.items() if p == "no flavor blob"} == fleet.busy
    assert len(found) == len(fleet.busy) + 2


async def test_verify_compares_the_blob_with_kept_rows(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=300, seed=109, **CLEAN))
    await migrate_flavors([db.url], FlavorOptions(soft_delete=True))
    assert (await verify_flavors([db.url])).exit_code == ExitCode.DONE
    uuid = sorted(fleet.expected)[0]
    key = "`key`" if db.backend == "mariadb" else "key"
    await db.execute(f"UPDATE instance_system_metadata SET value = '77' WHERE instance_uuid = :u AND {key} = "
                     "'instance_type_vcpus'", u=uuid)
    run = await verify_flavors([db.url])
    assert run.databases[0].mismatches == [
        (uuid, "current flavor in the blob differs from its soft-deleted system_metadata rows")]
    await db.execute(f"UPDATE instance_system_metadata SET deleted = 0 WHERE instance_uuid = :u AND {key} = "
                     "'instance_type_vcpus'", u=uuid)
    (mismatch,) = (await verify_flavors([db.url])).databases[0].mismatches
    assert mismatch == (uuid, "1 flavor row(s) still live in system_metadata beside the blob")


async def test_verify_include_deleted(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=400, seed=131, deleted=0.05, busy=0.0))
    assert fleet.deleted
    await migrate_flavors([db.url], FlavorOptions(include_deleted=True))
    run = await verify_flavors([db.url], include_deleted=True)
    # soft-deleted instances checked too, their blobs compared with the rows nova soft-deleted with them
    assert run.databases[0].mismatches == [] and run.databases[0].checked == len(fleet.expected)
    assert (await verify_flavors([db.url])).databases[0].checked == len(fleet.expected) - len(fleet.deleted)
