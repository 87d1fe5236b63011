"""What Kilo's migration also did: extra specs merged from the flavor tables, legacy flavors rebuilt."""

from __future__ import annotations

import json

from sqlalchemy import insert, select

from fastmigrate import FlavorOptions, migrate_flavors
from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.flavortables import api_flavor_extra_specs, api_flavors, api_metadata
from fastmigrate.fleet import FLAVORS, TABLE_SPECS, FleetSpec, check_fleet, create_fleet
from fastmigrate.schema import instance_extra
from fastmigrate.verify import verify_flavors

from .conftest import Database

MIX = dict(instances=800, seed=41, stashed=0.3, resizing=0.1, busy=0.0, deleted=0.0, broken=6)


async def _blobs(db: Database) -> dict[str, dict[str, object]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(instance_extra.c.instance_uuid, instance_extra.c.flavor)
                                   .where(instance_extra.c.flavor.is_not(None)))).all()
    return {uuid: json.loads(blob) for uuid, blob in rows}


async def test_extra_specs_are_merged_and_legacy_flavors_rebuilt_from_instance_types(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(**MIX, flavor_tables=True, legacy=0.05))
    assert len(fleet.legacy) > 20
    result = await migrate_flavors([db.url], FlavorOptions(soft_delete=True))
    (entry,) = result.databases
    assert entry.rebuilt == len(fleet.legacy) and len(entry.broken) == 6
    # the oracle expects each live row's specs, stashed ones winning; never a deleted row's or deleted spec's
    assert await check_fleet(db.engine, fleet) == []
    blobs = await _blobs(db)
    specs = [blobs[u]["cur"]["nova_object.data"]["extra_specs"] for u in fleet.expected]  # type: ignore[index]
    assert all(s["quota:cpu_shares"] != "1" and "quota:vif_outbound_average" not in s for s in specs)
    assert any(s["hw:numa_cpus.0"] != "from-table" for s in specs)  # stashed won somewhere
    # the instance whose instance_type_id has no row is left for a human, and says so
    assert any("no instance_types row for its instance_type_id" in b.reason for b in entry.broken)
    # kept rows agree with the merged blobs (the stashed specs are all there); only the broken lack a blob
    (checked,) = (await verify_flavors([db.url])).databases
    assert {uuid for uuid, _ in checked.mismatches} == {b.uuid for b in entry.broken}


async def test_no_flavor_extra_specs_keeps_the_stashed_ones_only(db: Database) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(**MIX, flavor_tables=True, legacy=0.05))
    result = await migrate_flavors([db.url], FlavorOptions(flavor_extra_specs=False))
    assert result.databases[0].rebuilt == len(fleet.legacy)
    blobs = await _blobs(db)
    for uuid in fleet.expected:
        extra = blobs[uuid]["cur"]["nova_object.data"]["extra_specs"]  # type: ignore[index]
        assert "quota:cpu_shares" not in extra  # type: ignore[operator]


async def test_newton_and_later_read_extra_specs_from_nova_api(db: Database, tmp_path: object) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(**MIX))
    api_url = f"sqlite:///{tmp_path}/api.db"
    api = connect_engine(normalize_url(api_url))
    async with api.begin() as conn:
        await conn.run_sync(api_metadata.create_all)
        await conn.execute(insert(api_flavors), [dict(f) for f in FLAVORS])
        await conn.execute(insert(api_flavor_extra_specs), [
            {"flavor_id": f["id"], "key": k, "value": v} for f, specs in zip(FLAVORS, TABLE_SPECS)
            for k, v in specs.items()])
    await api.dispose()
    result = await migrate_flavors([db.url], FlavorOptions(api_db=api_url))
    assert result.databases[0].rebuilt == 0
    blobs = await _blobs(db)
    for uuid, slots in fleet.expected.items():
        for slot, entry in slots.items():
            if entry is not None:
                index, stashed = entry
                got = blobs[uuid][slot]["nova_object.data"]["extra_specs"]  # type: ignore[index]
                assert got == {**TABLE_SPECS[index], **stashed}
