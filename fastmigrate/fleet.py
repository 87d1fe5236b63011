"""Synthetic nova cell databases: the demo, the tests and the benchmarks run on these.

A fleet has what real Kilo-era cells have: resizes in flight with full old_/new_ flavors, stashed NUMA extra
specs, pre-Juno instances without an instance_extra row, soft-deleted sysmeta history, instances whose rows
were written at different times (not contiguous in id order), soft-deleted and busy instances, non-ASCII
flavor names (within the BMP: nova's utf8 columns hold nothing else), and, on request, broken instances of
every kind fastmigrate must refuse.

The generator remembers what every instance's flavor is (``Fleet.expected``), so a check of the migrated
blobs does not depend on fastmigrate's own transform.
"""

from __future__ import annotations

import json
import random
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .flavortables import flavor_metadata, instance_type_extra_specs, instance_types
from .schema import instance_extra, instances, metadata, sysmeta
from .transform import PROPS

__all__ = ["BROKEN_KINDS", "FLAVORS", "TABLE_SPECS", "Fleet", "FleetSpec", "check_fleet", "create_flavor_tables",
           "create_fleet", "flavor_rows", "merged_slots"]

# Flavors as nova had them; see _stored() for how each value is written as a string.
FLAVORS: list[dict[str, Any]] = [
    {"id": 1, "name": "m1.tiny", "memory_mb": 512, "vcpus": 1, "root_gb": 1, "ephemeral_gb": 0,
     "flavorid": "1", "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None},
    {"id": 2, "name": "m1.small", "memory_mb": 2048, "vcpus": 1, "root_gb": 20, "ephemeral_gb": 0,
     "flavorid": "2", "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None},
    {"id": 3, "name": "m1.medium", "memory_mb": 4096, "vcpus": 2, "root_gb": 40, "ephemeral_gb": 0,
     "flavorid": "3", "swap": 512, "rxtx_factor": 1.0, "vcpu_weight": None},
    {"id": 4, "name": "m1.large", "memory_mb": 8192, "vcpus": 4, "root_gb": 80, "ephemeral_gb": 10,
     "flavorid": "4", "swap": 0, "rxtx_factor": 1.5, "vcpu_weight": 100},
    {"id": 7, "name": "m2.\u00e9l\u00e9phant", "memory_mb": 65536, "vcpus": 16, "root_gb": 160,
     "ephemeral_gb": 0, "flavorid": "c4f1e5a2-9d6b-4c1e-8f00-0a3b5c7d9e11", "swap": 0, "rxtx_factor": 2.0,
     "vcpu_weight": 0},
    {"id": 9, "name": "gpu.\u2603\u00df", "memory_mb": 32768, "vcpus": 8, "root_gb": 100, "ephemeral_gb": 0,
     "flavorid": "gpu-rocket", "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None},
]
# The extra specs of each flavor's live instance_types row (with flavor_tables): merged into the blobs, the
# stashed hw:numa_cpus.0 winning over the table's. A deleted row of the same flavorid, and a deleted spec row,
# hold values that must never show.
TABLE_SPECS: list[dict[str, str]] = [{"quota:cpu_shares": str(1024 * (i + 1)), "hw:numa_cpus.0": "from-table"}
                                     for i in range(len(FLAVORS))]
_NULL_SPELLINGS = (None, "", "None")
NON_FLAVOR_KEYS = ("image_min_ram", "image_min_disk", "image_disk_format", "image_container_format",
                   "image_base_image_ref", "image_os_type", "clean_attempts", "image_hw_qemu_guest_agent")
BROKEN_KINDS = ("missing_key", "bad_int", "duplicate_key", "too_big", "two_extras", "no_flavor_rows")


@dataclass(frozen=True, slots=True)
class FleetSpec:
    instances: int = 1000
    seed: int = 42
    resizing: float = 0.02  # mid-resize: full old_ and new_ flavors
    stashed: float = 0.05  # stashed hw:numa_* extra specs
    without_extra: float = 0.03  # pre-Juno: no instance_extra row
    history: float = 0.2  # instances with one soft-deleted sysmeta row (about 1% of all rows)
    scattered: float = 0.1  # some flavor rows written later, far away in id order
    deleted: float = 0.005  # soft-deleted instances
    busy: float = 0.005  # task_state set or vm_state resized/rescued
    migrated: float = 0.0  # already carry a blob (and no flavor rows)
    broken: int = 0  # broken instances planted, one of each BROKEN_KINDS in turn
    flavor_tables: bool = False  # Kilo's instance_types / instance_type_extra_specs, with TABLE_SPECS
    legacy: float = 0.0  # with flavor_tables: no flavor rows at all, rebuilt from instance_types


@dataclass(slots=True)
class Fleet:
    spec: FleetSpec
    # uuid -> slot -> (flavor index, extra specs) or None: what the blob must say
    expected: dict[str, dict[str, tuple[int, dict[str, str]] | None]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    without_extra: set[str] = field(default_factory=set)
    migrated: set[str] = field(default_factory=set)
    legacy: set[str] = field(default_factory=set)  # no flavor rows: rebuilt from instance_types
    broken: dict[str, str] = field(default_factory=dict)  # uuid -> kind
    sysmeta_rows: int = 0
    non_flavor_rows: int = 0


def _stored(prop: str, value: Any, rng: random.Random) -> str | None:
    if value is None:
        return rng.choice(_NULL_SPELLINGS) if prop in ("vcpu_weight", "rxtx_factor") else None
    if prop == "rxtx_factor" and value == int(value) and rng.random() < 0.5:
        return str(int(value))  # '1' must still become 1.0
    return str(value)


def flavor_rows(prefix: str, flavor: dict[str, Any], specs: dict[str, str],
                rng: random.Random) -> list[tuple[str, str | None]]:
    rows = [(f"{prefix}instance_type_{prop}", _stored(prop, flavor[prop], rng)) for prop in PROPS]
    rows += [(f"{prefix}instance_type_extra_{k}", v) for k, v in specs.items()]
    return rows


def _numa_specs(rng: random.Random, vcpus: int) -> dict[str, str]:
    cpus = ",".join(str(c) for c in range(max(vcpus // 2, 1)))
    return {"hw:numa_cpus.0": cpus, "hw:numa_mem.0": str(rng.choice((256, 512, 1024)))}


class _Writer:
    """Assigns ids in emission order and hands out rows in chunks."""

    def __init__(self) -> None:
        self.instances: list[dict[str, Any]] = []
        self.sysmeta: list[dict[str, Any]] = []
        self.extra: list[dict[str, Any]] = []
        self.later: list[tuple[str, str, str | None, bool]] = []
        self.next_sysmeta = 1
        self.next_extra = 1

    def meta(self, uuid: str, key: str, value: str | None, deleted: bool, now: datetime) -> None:
        rid = self.next_sysmeta
        self.next_sysmeta += 1
        self.sysmeta.append({"id": rid, "instance_uuid": uuid, "key": key, "value": value, "created_at": now,
                             "deleted": rid if deleted else 0, "deleted_at": now if deleted else None})


async def create_fleet(engine: AsyncEngine, spec: FleetSpec, *, chunk: int = 5000) -> Fleet:
    """Create the nova tables in an empty database and fill them with a fleet described by ``spec``."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    if spec.flavor_tables:
        await create_flavor_tables(engine)
    fleet = Fleet(spec)
    w = _Writer()
    for _ in _generate(spec, fleet, w):
        if len(w.sysmeta) >= chunk:
            await _flush(engine, w)
    await _flush(engine, w, final=True)
    return fleet


async def create_flavor_tables(engine: AsyncEngine) -> None:
    """Kilo's instance_types / instance_type_extra_specs for FLAVORS: each live row with TABLE_SPECS, a retired
    (deleted) row of the same flavorid with other specs, and a deleted spec row on each live one."""
    async with engine.begin() as conn:
        await conn.run_sync(flavor_metadata.create_all)
        await conn.execute(insert(instance_types), [
            *({**f, "deleted": 0} for f in FLAVORS),
            *({**f, "id": 100 + f["id"], "name": f"retired {f['name']}", "deleted": 100 + f["id"]}
              for f in FLAVORS)])
        await conn.execute(insert(instance_type_extra_specs), [
            *({"instance_type_id": f["id"], "key": k, "value": v, "deleted": 0}
              for f, specs in zip(FLAVORS, TABLE_SPECS) for k, v in specs.items()),
            *({"instance_type_id": f["id"], "key": "quota:vif_outbound_average", "value": "7", "deleted": 1}
              for f in FLAVORS),
            *({"instance_type_id": 100 + f["id"], "key": "quota:cpu_shares", "value": "1", "deleted": 0}
              for f in FLAVORS)])


Slots = dict[str, tuple[int, dict[str, str]] | None]


def merged_slots(slots: Slots) -> Slots:
    """What the blob holds once the flavor tables' specs are merged in, the stashed ones winning."""
    return {s: None if e is None else (e[0], {**TABLE_SPECS[e[0]], **e[1]}) for s, e in slots.items()}


async def _flush(engine: AsyncEngine, w: _Writer, final: bool = False) -> None:
    if final or len(w.later) > 2000:
        now = datetime(2015, 6, 1)
        for uuid, key, value, deleted in w.later:
            w.meta(uuid, key, value, deleted, now)
        w.later.clear()
    async with engine.begin() as conn:
        for table, rows in ((instances, w.instances), (sysmeta, w.sysmeta), (instance_extra, w.extra)):
            if rows:
                await conn.execute(insert(table), rows)
                rows.clear()


def _generate(spec: FleetSpec, fleet: Fleet, w: _Writer) -> Iterator[None]:
    rng = random.Random(spec.seed)
    created = datetime(2015, 1, 1)
    broken_left = spec.broken
    broken_step = max(spec.instances // (spec.broken + 1), 1)  # spread out, the first one early
    next_broken = broken_step
    for n in range(1, spec.instances + 1):
        uuid = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        cur = rng.randrange(len(FLAVORS))
        deleted = rng.random() < spec.deleted
        busy = not deleted and rng.random() < spec.busy
        resizing = rng.random() < spec.resizing
        migrated = rng.random() < spec.migrated
        legacy = spec.flavor_tables and not migrated and not deleted and rng.random() < spec.legacy
        kind = None
        if broken_left and n >= next_broken and not deleted and not busy and not migrated:
            kind = BROKEN_KINDS[(spec.broken - broken_left) % len(BROKEN_KINDS)]
            broken_left -= 1
            next_broken += broken_step
        task_state, vm_state = None, "active"
        if busy:
            task_state, vm_state = rng.choice((("resize_migrating", "active"), (None, "resized"), (None, "rescued")))
            fleet.busy.add(uuid)
        if legacy and kind is None:
            resizing = False
        type_id = 999 if kind == "no_flavor_rows" and spec.flavor_tables else FLAVORS[cur]["id"]
        w.instances.append({"id": n, "uuid": uuid, "display_name": f"vm-{n}", "project_id": "demo",
                            "instance_type_id": type_id, "vm_state": vm_state, "task_state": task_state,
                            "memory_mb": FLAVORS[cur]["memory_mb"], "vcpus": FLAVORS[cur]["vcpus"],
                            "created_at": created, "deleted": n if deleted else 0,
                            "deleted_at": created if deleted else None})
        if deleted:
            fleet.deleted.add(uuid)

        slots: dict[str, tuple[int, dict[str, str]] | None] = {"cur": None, "old": None, "new": None}
        specs = _numa_specs(rng, FLAVORS[cur]["vcpus"]) if rng.random() < spec.stashed else {}
        slots["cur"] = (cur, specs)
        if resizing:
            new = (cur + 1) % len(FLAVORS)
            slots["old"] = (cur, dict(specs))
            slots["new"] = (new, _numa_specs(rng, FLAVORS[new]["vcpus"]) if specs else {})
        rows: list[tuple[str, str | None]] = []
        if legacy and kind is None:
            slots = {"cur": (cur, dict(TABLE_SPECS[cur])), "old": None, "new": None}
            fleet.legacy.add(uuid)
        elif not migrated and kind != "no_flavor_rows":
            for slot, prefix in (("cur", ""), ("old", "old_"), ("new", "new_")):
                if slots[slot] is not None:
                    idx, sp = slots[slot]  # type: ignore[misc]
                    rows += flavor_rows(prefix, FLAVORS[idx], sp, rng)
            if spec.flavor_tables:  # what the blob will hold
                slots = merged_slots(slots)
        meta = _break(kind, rows)
        non_flavor = [(k, str(rng.randrange(100))) for k in NON_FLAVOR_KEYS]
        if resizing:
            non_flavor.append(("old_vm_state", "active"))
        fleet.non_flavor_rows += len(non_flavor)
        fleet.sysmeta_rows += len(meta) + len(non_flavor)
        if rng.random() < spec.history:
            # A soft-deleted row from an earlier state (so: a lower id): a replaced value or a removed key.
            key = rng.choice(("instance_type_memory_mb", "image_min_ram"))
            w.meta(uuid, key, "1", True, created)
            fleet.sysmeta_rows += 1
            if not key.startswith("instance_type_"):
                fleet.non_flavor_rows += 1
        scattered = rng.random() < spec.scattered
        for key, value in non_flavor + meta:
            if scattered and key.endswith(("_name", "_swap", "_extra_hw:numa_mem.0")):
                w.later.append((uuid, key, value, deleted))
            else:
                w.meta(uuid, key, value, deleted, created)
        has_extra = rng.random() >= spec.without_extra or migrated or kind == "two_extras"
        if has_extra:
            blob = _independent_blob(slots) if migrated else None
            for _ in range(2 if kind == "two_extras" else 1):
                eid = w.next_extra
                w.next_extra += 1
                w.extra.append({"id": eid, "instance_uuid": uuid, "flavor": blob, "created_at": created,
                                "deleted": eid if deleted else 0, "deleted_at": created if deleted else None})
        else:
            fleet.without_extra.add(uuid)
        if kind is not None:
            fleet.broken[uuid] = kind
        elif migrated:
            fleet.migrated.add(uuid)
        else:
            fleet.expected[uuid] = slots
        yield


def _break(kind: str | None, rows: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    if kind == "missing_key":
        return [r for r in rows if r[0] != "instance_type_memory_mb"]
    if kind == "bad_int":
        return [(k, "abc" if k == "instance_type_memory_mb" else v) for k, v in rows]
    if kind == "duplicate_key":
        return rows + [("instance_type_vcpus", "3")]
    if kind == "too_big":
        return rows + [(f"instance_type_extra_hw:numa_cpus.{i}", "9" * 250) for i in range(300)]
    return rows


def _independent_blob(slots: dict[str, tuple[int, dict[str, str]] | None]) -> str:
    # Written with the standard library, as nova does: an already-migrated instance.
    def prim(entry: tuple[int, dict[str, str]] | None) -> dict[str, Any] | None:
        if entry is None:
            return None
        data = dict(FLAVORS[entry[0]], extra_specs=entry[1])
        return {"nova_object.name": "Flavor", "nova_object.namespace": "nova", "nova_object.version": "1.1",
                "nova_object.data": data, "nova_object.changes": sorted(data)}
    return json.dumps({slot: prim(entry) for slot, entry in slots.items()})


def expected_flavor(entry: tuple[int, dict[str, str]] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return dict(FLAVORS[entry[0]], extra_specs=entry[1])


async def check_fleet(engine: AsyncEngine, fleet: Fleet, *, include_deleted: bool = False,
                      force: bool = False) -> list[str]:
    """Problems found comparing the database with what the generator wrote (an empty list: all good)."""
    problems: list[str] = []
    async with engine.connect() as conn:
        blobs: dict[str, list[str | None]] = {}
        for uuid, blob in await conn.execute(select(instance_extra.c.instance_uuid, instance_extra.c.flavor)):
            blobs.setdefault(uuid, []).append(blob)
        flavor_left: dict[str, int] = {}
        q = (select(sysmeta.c.instance_uuid, func.count()).where(sysmeta.c.key.like("%instance!_type!_%", escape="!"),
                                                                  sysmeta.c.deleted == 0)
             .group_by(sysmeta.c.instance_uuid))
        for uuid, count in (await conn.execute(q)):
            flavor_left[uuid] = count
        non_flavor = (await conn.execute(select(func.count()).select_from(sysmeta).where(
            ~sysmeta.c.key.like("%instance!_type!_%", escape="!")))).scalar_one()
    if non_flavor != fleet.non_flavor_rows:
        problems.append(f"non-flavor sysmeta rows: {non_flavor}, generator wrote {fleet.non_flavor_rows}")
    for uuid, slots in fleet.expected.items():
        if uuid in fleet.deleted and not include_deleted or uuid in fleet.busy and not force:
            if any(blobs.get(uuid, [])):
                problems.append(f"{uuid}: migrated although out of scope")
            continue
        found = [b for b in blobs.get(uuid, []) if b is not None]
        if len(blobs.get(uuid, [])) != 1 or len(found) != 1:
            problems.append(f"{uuid}: expected one instance_extra row with a blob, found {blobs.get(uuid)}")
            continue
        doc = json.loads(found[0])
        for slot, entry in slots.items():
            got = doc[slot]["nova_object.data"] if doc.get(slot) else None
            if got != expected_flavor(entry):
                problems.append(f"{uuid}: {slot} flavor is {got}, expected {expected_flavor(entry)}")
        if flavor_left.get(uuid) and uuid not in fleet.deleted:
            problems.append(f"{uuid}: {flavor_left[uuid]} live flavor rows left in system_metadata")
    for uuid in fleet.broken:
        if any(blobs.get(uuid, [])):
            problems.append(f"{uuid}: broken instance was migrated")
    return problems
