"""Every migrated blob loads through nova's own read path, ``Instance._flavor_from_db`` (nova 34).

Needs the ``nova`` extra (``pip install -e .[nova]``). Skipped without it, unless FASTMIGRATE_REQUIRE_NOVA=1
(as in CI), where a missing nova fails the run.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest
from sqlalchemy import select

from fastmigrate import FlavorOptions, migrate_flavors
from fastmigrate.fleet import FleetSpec, check_fleet, create_fleet, expected_flavor
from fastmigrate.schema import instance_extra

from .conftest import Database

pytestmark = pytest.mark.nova


@pytest.fixture(scope="module")
def nova_objects() -> Any:
    if os.environ.get("FASTMIGRATE_REQUIRE_NOVA") == "1":
        import nova  # noqa: F401  - fail loudly, not skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objects = pytest.importorskip("nova.objects",
                                      reason="the nova package is not installed: pip install -e .[nova]")
        objects.register_all()
    return objects


async def test_every_blob_loads_in_nova(db: Database, nova_objects: Any) -> None:
    fleet = await create_fleet(db.engine, FleetSpec(instances=1500, seed=37, resizing=0.2, stashed=0.3, busy=0.0,
                                                    flavor_tables=True, legacy=0.05))
    result = await migrate_flavors([db.url], FlavorOptions(include_deleted=True))
    assert result.exit_code == 0
    assert await check_fleet(db.engine, fleet, include_deleted=True) == []
    async with db.engine.connect() as conn:
        blobs = dict((await conn.execute(select(instance_extra.c.instance_uuid, instance_extra.c.flavor))).all())
    checked = 0
    for uuid, slots in fleet.expected.items():
        instance = nova_objects.Instance()
        instance._flavor_from_db(blobs[uuid])  # nova's exact read path
        for attr, slot in (("flavor", "cur"), ("old_flavor", "old"), ("new_flavor", "new")):
            loaded = getattr(instance, attr)
            want = expected_flavor(slots[slot])
            if want is None:
                assert loaded is None
                continue
            # Reading every field is what raises on a blob that lacks one.
            got = {f: getattr(loaded, f) for f in (*want, "disabled", "is_public")}
            assert got == dict(want, disabled=False, is_public=True), uuid
        checked += 1
    assert checked == len(fleet.expected) > 1000


def test_cell_templates_are_filled_as_nova_fills_them(nova_objects: Any) -> None:
    from nova.objects.cell_mapping import CellMapping

    from fastmigrate.deployment import format_db_url

    for default in ("mysql+pymysql://nova:p%40ss@db.example:3307/nova?charset=utf8",
                    "mysql+pymysql://nova@db/nova", "sqlite:////var/lib/nova/nova.sqlite"):
        for template in ("{scheme}://{username}:{password}@{hostname}:{port}/nova_cell1?{query}",
                         "{scheme}:///{path}_cell2", "mysql://{username}@{hostname}/x#{fragment}"):
            assert format_db_url(template, default) == CellMapping._format_url(template, default)
