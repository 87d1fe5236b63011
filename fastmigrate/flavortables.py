"""The flavors nova keeps in tables, for the two things Kilo's ``migrate_flavor_data`` also did with them:

- **extra specs**: each migrated flavor gets its flavor's extra specs merged in (looked up by ``flavorid``),
  the keys stashed in system_metadata winning (Kilo's ``_augment_flavor_to_migrate``);
- **legacy instances** with no flavor rows in system_metadata at all and no blob: the current flavor is
  rebuilt from ``instance_types`` by ``instances.instance_type_id`` (deleted rows allowed, as an instance keeps
  the flavor it was built with), when that row exists.

Where the flavors are: a Kilo cell database has ``instance_types`` (several rows may share a ``flavorid``:
the live one is preferred, ``ORDER BY deleted, id``, as Kilo's ``flavor_get_by_flavor_id(read_deleted='yes')``
did) with ``instance_type_extra_specs`` (only live rows count). From Newton on they are in nova_api:
``flavors`` / ``flavor_extra_specs`` (no soft delete), read when the cell database has none and nova_api is
known (``--api-db``, ``--config-file``). Lookups are cached by flavorid: a fleet has few flavors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import connect_engine, normalize_url, read_catalog, read_rows
from .transform import PROPS

__all__ = ["FlavorTables", "LegacyFlavor", "api_flavor_extra_specs", "api_flavors", "flavor_metadata",
           "instance_type_extra_specs", "instance_types"]

log = logging.getLogger(__name__)

flavor_metadata = MetaData()
_FLAVOR_COLUMNS: list[Column[Any]] = [
    Column("name", String(255)), Column("memory_mb", Integer), Column("vcpus", Integer), Column("root_gb", Integer),
    Column("ephemeral_gb", Integer), Column("flavorid", String(255)), Column("swap", Integer),
    Column("rxtx_factor", Float), Column("vcpu_weight", Integer)]
instance_types = Table("instance_types", flavor_metadata, Column("id", Integer, primary_key=True),
                       *(c._copy() for c in _FLAVOR_COLUMNS), Column("created_at", DateTime),
                       Column("deleted", Integer, default=0))
instance_type_extra_specs = Table("instance_type_extra_specs", flavor_metadata, Column("id", Integer, primary_key=True),
                                  Column("instance_type_id", Integer), Column("key", String(255)),
                                  Column("value", String(255)), Column("deleted", Integer, default=0))
api_metadata = MetaData()
api_flavors = Table("flavors", api_metadata, Column("id", Integer, primary_key=True),
                    *(c._copy() for c in _FLAVOR_COLUMNS))
api_flavor_extra_specs = Table("flavor_extra_specs", api_metadata, Column("id", Integer, primary_key=True),
                               Column("flavor_id", Integer), Column("key", String(255)), Column("value", String(255)))

LegacyFlavor = tuple[dict[str, str | None], dict[str, str]]  # the ten props as sysmeta would hold them, specs


def _stored(value: Any) -> str | None:
    """A column's value as system_metadata would hold it (transform coerces it back)."""
    return None if value is None else str(value)


class FlavorTables:
    """Lookups in the flavor tables of one cell database (or of nova_api), cached. ``merge_specs`` False
    (``--no-flavor-extra-specs``) leaves the extra specs to what system_metadata stashed."""

    def __init__(self, *, merge_specs: bool = True, api_url: str | None = None) -> None:
        self.merge_specs = merge_specs
        self.api_url = api_url
        self.source: str | None = None  # "cell", "nova_api" or None (no flavor tables found)
        self.api: AsyncEngine | None = None
        self.specs_by_flavorid: dict[str, dict[str, str]] = {}
        self.looked_up: set[str] = set()
        self.legacy_by_id: dict[int, LegacyFlavor | None] = {}

    async def open(self, cell: AsyncEngine, label: str) -> None:
        """Find where the flavors are: the cell database's Kilo tables, else nova_api's."""
        found, _ = await read_catalog(cell, label, ["instance_types", "instance_type_extra_specs"])
        if {"instance_types", "instance_type_extra_specs"} <= set(found):
            self.source = "cell"
        elif self.api_url and self.merge_specs:
            self.api = connect_engine(normalize_url(self.api_url), pool_size=1, read_only=True)
            api_found, _ = await read_catalog(self.api, label, ["flavors", "flavor_extra_specs"])
            self.source = "nova_api" if {"flavors", "flavor_extra_specs"} <= set(api_found) else None
        log.info("%s: %s", label, {"cell": "flavor extra specs and legacy flavors from instance_types",
                                   "nova_api": "flavor extra specs from nova_api's flavors",
                                   None: "no flavor tables: extra specs as stashed in system_metadata"}[self.source])

    @property
    def merges(self) -> bool:
        """Whether extra specs are looked up at all."""
        return self.merge_specs and self.source is not None

    @property
    def rebuilds(self) -> bool:
        """Whether legacy flavors can be rebuilt (the cell's own instance_types)."""
        return self.source == "cell"

    async def close(self) -> None:
        if self.api is not None:
            await self.api.dispose()

    async def specs(self, conn: AsyncConnection, flavorids: Iterable[str]) -> Mapping[str, Mapping[str, str]]:
        """flavorid -> its flavor's extra specs, for those of ``flavorids`` the tables know."""
        wanted = set(flavorids)
        if not self.merges:
            return {}
        missing = sorted(wanted - self.looked_up)
        if missing:
            if self.source == "cell":
                t, s = instance_types, instance_type_extra_specs
                found = (await conn.execute(select(t.c.id, t.c.flavorid).where(t.c.flavorid.in_(missing))
                                            .order_by(t.c.deleted, t.c.id))).all()
                chosen: dict[str, int] = {}
                for type_id, flavorid in found:
                    chosen.setdefault(str(flavorid), int(type_id))  # the first: live before deleted, then oldest
                rows = (await conn.execute(select(s.c.instance_type_id, s.c.key, s.c.value).where(
                    s.c.instance_type_id.in_(chosen.values()), s.c.deleted == 0))).all() if chosen else []
            else:
                assert self.api is not None
                t, s = api_flavors, api_flavor_extra_specs
                found = await read_rows(self.api, select(t.c.id, t.c.flavorid).where(t.c.flavorid.in_(missing)))
                chosen = {str(flavorid): int(type_id) for type_id, flavorid in found}
                rows = await read_rows(self.api, select(s.c.flavor_id, s.c.key, s.c.value).where(
                    s.c.flavor_id.in_(chosen.values()))) if chosen else []
            by_id: dict[int, dict[str, str]] = {type_id: {} for type_id in chosen.values()}
            for type_id, key, value in rows:
                by_id[int(type_id)][str(key)] = str(value)
            for flavorid, type_id in chosen.items():
                self.specs_by_flavorid[flavorid] = by_id[type_id]
            self.looked_up.update(missing)
        return {f: self.specs_by_flavorid[f] for f in wanted if f in self.specs_by_flavorid}

    async def legacy(self, conn: AsyncConnection, type_ids: Iterable[int]) -> Mapping[int, LegacyFlavor]:
        """instance_type_id -> the flavor to rebuild a legacy instance's from (the cell's Kilo tables only)."""
        wanted = set(type_ids)
        if not self.rebuilds:
            return {}
        missing = sorted(wanted - set(self.legacy_by_id))
        if missing:
            t, s = instance_types, instance_type_extra_specs
            found = (await conn.execute(select(t).where(t.c.id.in_(missing)))).mappings().all()
            specs: dict[int, dict[str, str]] = {int(row["id"]): {} for row in found}
            if self.merge_specs and specs:
                for type_id, key, value in (await conn.execute(select(s.c.instance_type_id, s.c.key, s.c.value).where(
                        s.c.instance_type_id.in_(specs), s.c.deleted == 0))).all():
                    specs[int(type_id)][str(key)] = str(value)
            for type_id in missing:
                self.legacy_by_id[type_id] = None
            for row in found:
                self.legacy_by_id[int(row["id"])] = ({p: _stored(row[p]) for p in PROPS}, specs[int(row["id"])])
        return {i: flavor for i in wanted if (flavor := self.legacy_by_id.get(i)) is not None}
