"""A nova-like writer runs while fastmigrate migrates: resizes (adding, swapping and removing old_/new_
flavor rows), in-place flavor edits, new Kilo-style instances, deletions, and other system_metadata keys.

The simulator keeps its own model of every instance's flavors and of every non-flavor row. Each of its
operations is one transaction that follows the protocol of a nova saving an instance: lock the instance
row, its flavor rows and its instance_extra row, then write the flavor where it lives now (the sysmeta rows
if the instance is not migrated yet, else the blob). Afterwards, and after one more run, every live
instance's blob equals the model (no update lost, none half-migrated), loads as nova reads it, no live
flavor row is left, and every non-flavor row is exactly as the simulator left it.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastmigrate import ExitCode, FlavorOptions, migrate_flavors, reader
from fastmigrate.blobcheck import blob_problems
from fastmigrate.db import connect_engine, normalize_url, retrying
from fastmigrate.fleet import FLAVORS, FleetSpec, create_fleet, expected_flavor, flavor_rows
from fastmigrate.schema import instance_extra, instances, sysmeta

from .conftest import Database

read_next = reader.read_next

pytestmark = pytest.mark.slow

Flavor = dict[str, Any]
Rows = dict[str, tuple[int, str | None]]  # an instance's live flavor rows: key -> (id, value)
_FLAVOR_KEY = sysmeta.c.key.like("%instance!_type!_%", escape="!")
_NOW = datetime(2026, 11, 22)


def _primitive(flavor: Flavor | None) -> dict[str, Any] | None:
    if flavor is None:
        return None
    return {"nova_object.name": "Flavor", "nova_object.namespace": "nova", "nova_object.version": "1.1",
            "nova_object.data": flavor, "nova_object.changes": sorted(flavor)}


@dataclass
class Instance:
    flavors: dict[str, Flavor | None]  # cur, old, new: what the blob must end up saying
    stage: str = "idle"  # idle -> started (task_state set) -> finished (vm_state resized) -> idle


@dataclass
class Nova:
    engine: AsyncEngine
    rng: random.Random
    live: dict[str, Instance]
    non_flavor: dict[int, tuple[str, str, str | None, bool]]  # id -> (uuid, key, value, soft-deleted)
    deleted_flavor_rows: dict[str, set[int]] = field(default_factory=dict)  # deleted instance -> its rows
    ops: dict[str, int] = field(default_factory=dict)
    serial: int = 0
    # One operation at a time: what is under test is nova against fastmigrate, not nova against itself,
    # and the model must change in commit order.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def step(self, uuid: str | None = None) -> None:
        """One operation, chosen at random (on ``uuid``: one that changes its flavor), retried on deadlock
        as nova's DB API does."""
        async with self.turn:
            await self._step(uuid)

    async def _step(self, uuid: str | None) -> None:
        self.serial += 1
        roll = self.rng.random() if uuid is None else 0.14 + 0.61 * self.rng.random()
        if roll < 0.08:
            name, op = "create", self._create
        elif roll < 0.14:
            name, op = "delete", self._delete
        else:
            uuid = uuid or self.rng.choice(sorted(self.live))
            stage = self.live[uuid].stage
            if stage == "started":
                name, op = "finish_resize", self._finish
            elif stage == "finished":
                name, op = "confirm_resize", self._confirm
            elif roll < 0.45:
                name, op = "start_resize", self._start
            elif roll < 0.75:
                name, op = "edit_flavor", self._edit
            else:
                name, op = "other_key", self._other_key
            op = _bind(op, uuid)

        async def attempt() -> Any:
            async with self.engine.begin() as conn:
                return await op(conn)

        apply, _ = await retrying(attempt, attempts=20)
        apply()  # the model changes only once the transaction committed
        self.ops[name] = self.ops.get(name, 0) + 1

    async def settle(self) -> None:
        """Finish every resize in flight, so that no instance is busy any more."""
        for uuid in sorted(self.live):
            while self.live[uuid].stage != "idle":
                op = self._finish if self.live[uuid].stage == "started" else self._confirm
                async with self.engine.begin() as conn:
                    apply = await op(conn, uuid)
                apply()

    def _new_flavor(self) -> Flavor:
        base = self.rng.choice(FLAVORS)
        return dict(base, memory_mb=self.rng.randrange(1, 10**6), extra_specs={})

    async def _lock(self, conn: AsyncConnection, uuid: str) -> tuple[Rows, Any]:
        """Lock the instance, its live flavor rows and its live extra row; where its flavor lives."""
        await conn.execute(select(instances.c.id).where(instances.c.uuid == uuid).with_for_update())
        rows = {key: (rid, value) for rid, key, value in await conn.execute(
            select(sysmeta.c.id, sysmeta.c.key, sysmeta.c.value)
            .where(sysmeta.c.instance_uuid == uuid, sysmeta.c.deleted == 0, _FLAVOR_KEY).with_for_update())}
        extra = (await conn.execute(select(instance_extra.c.id, instance_extra.c.flavor).where(
            instance_extra.c.instance_uuid == uuid, instance_extra.c.deleted == 0).with_for_update())).first()
        return rows, extra

    async def _change_flavor(self, conn: AsyncConnection, uuid: str, in_blob: Any, in_rows: Any) -> None:
        """Lock the instance, then change its flavor where it lives now: ``in_blob(doc)`` edits the blob of a
        migrated instance, ``await in_rows(rows)`` the sysmeta rows of one that is not."""
        rows, extra = await self._lock(conn, uuid)
        if extra is not None and extra.flavor is not None:
            doc = json.loads(extra.flavor)
            in_blob(doc)
            await conn.execute(update(instance_extra).where(instance_extra.c.id == extra.id)
                               .values(flavor=json.dumps(doc), updated_at=_NOW))
        else:
            await in_rows(rows)

    async def _insert_rows(self, conn: AsyncConnection, uuid: str, rows: list[tuple[str, str | None]]) -> None:
        if rows:
            await conn.execute(insert(sysmeta), [{"instance_uuid": uuid, "key": k, "value": v, "deleted": 0,
                                                  "created_at": _NOW} for k, v in rows])

    async def _soft_delete(self, conn: AsyncConnection, ids: list[int]) -> None:
        for rid in ids:
            await conn.execute(update(sysmeta).where(sysmeta.c.id == rid).values(deleted=rid, deleted_at=_NOW))

    async def _start(self, conn: AsyncConnection, uuid: str) -> Any:
        target = self._new_flavor()

        def in_blob(doc: dict[str, Any]) -> None:
            doc["old"], doc["new"] = doc["cur"], _primitive(target)

        async def in_rows(rows: Rows) -> None:
            current = [(f"old_{k}", v) for k, (_, v) in sorted(rows.items()) if k.startswith("instance_type_")]
            await self._insert_rows(conn, uuid, current + flavor_rows("new_", target, {}, self.rng))

        await self._change_flavor(conn, uuid, in_blob, in_rows)
        await conn.execute(update(instances).where(instances.c.uuid == uuid).values(task_state="resize_migrating"))

        def apply() -> None:
            inst = self.live[uuid]
            inst.flavors.update(old=inst.flavors["cur"], new=target)
            inst.stage = "started"
        return apply

    async def _finish(self, conn: AsyncConnection, uuid: str) -> Any:
        def in_blob(doc: dict[str, Any]) -> None:
            doc["cur"] = doc["new"]

        async def in_rows(rows: Rows) -> None:
            stale = [rid for k, (rid, _) in rows.items() if k.startswith("instance_type_extra_")]
            await self._soft_delete(conn, stale)  # the new flavor has no extra specs
            for key, (rid, _) in rows.items():
                if key.startswith("instance_type_") and not key.startswith("instance_type_extra_"):
                    await conn.execute(update(sysmeta).where(sysmeta.c.id == rid)
                                       .values(value=rows["new_" + key][1], updated_at=_NOW))

        await self._change_flavor(conn, uuid, in_blob, in_rows)
        await conn.execute(update(instances).where(instances.c.uuid == uuid)
                           .values(task_state=None, vm_state="resized"))

        def apply() -> None:
            inst = self.live[uuid]
            inst.flavors["cur"] = inst.flavors["new"]
            inst.stage = "finished"
        return apply

    async def _confirm(self, conn: AsyncConnection, uuid: str) -> Any:
        def in_blob(doc: dict[str, Any]) -> None:
            doc["old"] = doc["new"] = None

        async def in_rows(rows: Rows) -> None:
            await self._soft_delete(conn, [rid for k, (rid, _) in rows.items() if k.startswith(("old_", "new_"))])

        await self._change_flavor(conn, uuid, in_blob, in_rows)
        await conn.execute(update(instances).where(instances.c.uuid == uuid).values(vm_state="active"))

        def apply() -> None:
            inst = self.live[uuid]
            inst.flavors.update(old=None, new=None)
            inst.stage = "idle"
        return apply

    async def _edit(self, conn: AsyncConnection, uuid: str) -> Any:
        memory = self.rng.randrange(1, 10**6)

        def in_blob(doc: dict[str, Any]) -> None:
            doc["cur"]["nova_object.data"]["memory_mb"] = memory

        async def in_rows(rows: Rows) -> None:
            await conn.execute(update(sysmeta).where(sysmeta.c.id == rows["instance_type_memory_mb"][0])
                               .values(value=str(memory), updated_at=_NOW))

        await self._change_flavor(conn, uuid, in_blob, in_rows)

        def apply() -> None:
            cur = self.live[uuid].flavors["cur"]
            assert cur is not None
            self.live[uuid].flavors["cur"] = dict(cur, memory_mb=memory)
        return apply

    async def _other_key(self, conn: AsyncConnection, uuid: str) -> Any:
        await self._lock(conn, uuid)
        n = self.serial
        key, value = f"image_live_{n}", str(n)
        rid = (await conn.execute(insert(sysmeta).values(instance_uuid=uuid, key=key, value=value, deleted=0,
                                                         created_at=_NOW))).inserted_primary_key[0]
        mine = [i for i, (u, _, _, gone) in self.non_flavor.items() if u == uuid and not gone]
        edited = self.rng.choice(mine) if mine else None
        if edited is not None:
            await conn.execute(update(sysmeta).where(sysmeta.c.id == edited).values(value=f"edited {n}"))

        def apply() -> None:
            self.non_flavor[rid] = (uuid, key, value, False)
            if edited is not None:
                u, k, _, _ = self.non_flavor[edited]
                self.non_flavor[edited] = (u, k, f"edited {n}", False)
        return apply

    async def _create(self, conn: AsyncConnection) -> Any:
        uuid = str(uuidlib.UUID(int=self.rng.getrandbits(128)))
        cur = self._new_flavor()
        await conn.execute(insert(instances).values(uuid=uuid, vm_state="active", deleted=0, created_at=_NOW,
                                                    memory_mb=cur["memory_mb"], vcpus=cur["vcpus"]))
        await self._insert_rows(conn, uuid, flavor_rows("", cur, {}, self.rng))
        other = (await conn.execute(insert(sysmeta).values(instance_uuid=uuid, key="image_os_type", value="linux",
                                                           deleted=0, created_at=_NOW))).inserted_primary_key[0]
        if self.rng.random() < 0.5:  # Kilo created the extra row; older code did not
            await conn.execute(insert(instance_extra).values(instance_uuid=uuid, deleted=0, created_at=_NOW))

        def apply() -> None:
            self.live[uuid] = Instance({"cur": cur, "old": None, "new": None})
            self.non_flavor[other] = (uuid, "image_os_type", "linux", False)
        return apply

    async def _delete(self, conn: AsyncConnection) -> Any:
        uuid = self.rng.choice(sorted(self.live))
        rows, _ = await self._lock(conn, uuid)
        for table, column in ((instances, instances.c.uuid), (sysmeta, sysmeta.c.instance_uuid),
                              (instance_extra, instance_extra.c.instance_uuid)):
            await conn.execute(update(table).where(column == uuid, table.c.deleted == 0)
                               .values(deleted=table.c.id, deleted_at=_NOW))

        def apply() -> None:
            del self.live[uuid]
            self.deleted_flavor_rows[uuid] = {rid for rid, _ in rows.values()}
            for rid, (u, k, v, _) in list(self.non_flavor.items()):
                if u == uuid:
                    self.non_flavor[rid] = (u, k, v, True)
        return apply


def _bind(op: Any, uuid: str) -> Any:
    async def bound(conn: AsyncConnection) -> Any:
        return await op(conn, uuid)
    return bound


async def _nova(db: Database, engine: AsyncEngine, seed: int) -> Nova:
    fleet = await create_fleet(db.engine, FleetSpec(instances=1200, seed=seed, busy=0.0, deleted=0.0,
                                                    resizing=0.05, migrated=0.05, broken=0))
    live = {u: Instance({slot: expected_flavor(entry) for slot, entry in slots.items()})
            for u, slots in fleet.expected.items()}
    for inst in live.values():
        if inst.flavors["old"] is not None:
            inst.stage = "finished"  # the generator's resizes in flight: confirm them some time
    async with db.engine.connect() as conn:
        non_flavor = {rid: (u, k, v, bool(d)) for rid, u, k, v, d in await conn.execute(
            select(sysmeta.c.id, sysmeta.c.instance_uuid, sysmeta.c.key, sysmeta.c.value, sysmeta.c.deleted)
            .where(~_FLAVOR_KEY))}
    return Nova(engine, random.Random(f"nova-{seed}"), live, non_flavor)  # not the generator's stream


@pytest.mark.parametrize("seed", [5, 6, 7])
async def test_a_live_nova_never_loses_an_update(db: Database, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    writer = connect_engine(normalize_url(db.url))
    nova = await _nova(db, writer, seed)
    done = asyncio.Event()

    async def read_then_nova(*args: Any) -> Any:
        # Besides its random traffic, nova changes two instances of every page right after fastmigrate read
        # it: the read-to-write race happens on every page, whatever the timing of this machine.
        page = await read_next(*args)
        for candidate in page.candidates[:2]:
            if candidate.uuid in nova.live:
                await nova.step(candidate.uuid)
        return page

    monkeypatch.setattr(reader, "read_next", read_then_nova)

    async def run_nova() -> None:
        while not done.is_set() or nova.serial < 400:
            await nova.step()
            await asyncio.sleep(0)

    async def migrate() -> Any:
        try:
            # Throttled, with deep queues: pages wait read-but-unwritten long enough for nova to change them.
            return await migrate_flavors([db.url], FlavorOptions(min_batch_size=10, max_batch_size=40, writers=2,
                                                                 sleep=0.02, queue_depth=4))
        finally:
            done.set()

    try:
        _, during = await asyncio.gather(run_nova(), migrate())
        await nova.settle()
    finally:
        await writer.dispose()
    r = during.databases[0]
    assert r.error is None and not r.broken, (r.error, r.broken[:3])
    assert r.migrated > 0 and r.refreshed >= r.pages  # the race path was taken on every page
    assert all(nova.ops.get(op, 0) > 0 for op in ("create", "delete", "start_resize", "finish_resize",
                                                  "confirm_resize", "edit_flavor", "other_key")), nova.ops
    monkeypatch.undo()
    after = await migrate_flavors([db.url], FlavorOptions())
    assert after.exit_code == ExitCode.DONE, after.databases[0].error

    async with db.engine.connect() as conn:
        extras: dict[str, list[str | None]] = {}
        for u, blob in await conn.execute(select(instance_extra.c.instance_uuid, instance_extra.c.flavor)
                                          .where(instance_extra.c.deleted == 0)):
            extras.setdefault(u, []).append(blob)
        flavor_rows_left = {(u, rid) for u, rid in await conn.execute(
            select(sysmeta.c.instance_uuid, sysmeta.c.id).where(_FLAVOR_KEY, sysmeta.c.deleted == 0))}
        all_flavor_rows = {rid for (rid,) in await conn.execute(select(sysmeta.c.id).where(_FLAVOR_KEY))}
        non_flavor = {rid: (u, k, v, bool(d)) for rid, u, k, v, d in await conn.execute(
            select(sysmeta.c.id, sysmeta.c.instance_uuid, sysmeta.c.key, sysmeta.c.value, sysmeta.c.deleted)
            .where(~_FLAVOR_KEY))}
    problems: list[str] = []
    for uuid, inst in nova.live.items():
        blobs = extras.get(uuid, [])
        if len(blobs) != 1 or blobs[0] is None:
            problems.append(f"{uuid}: live extra rows {blobs}")
            continue
        problems += [f"{uuid}: {p}" for p in blob_problems(blobs[0])]
        doc = json.loads(blobs[0])
        for slot, flavor in inst.flavors.items():
            got = doc[slot]["nova_object.data"] if doc.get(slot) else None
            if got != flavor:
                problems.append(f"{uuid}: {slot} is {got}, nova last wrote {flavor}")
    problems += [f"{u}: live flavor row {rid} left" for u, rid in flavor_rows_left if u in nova.live]
    for uuid, rows in nova.deleted_flavor_rows.items():
        problems += [f"{uuid} (deleted): flavor row {rid} gone" for rid in rows - all_flavor_rows]
    assert problems == [], problems[:10]
    assert non_flavor == nova.non_flavor  # not one non-flavor row changed except by nova itself
    assert len(nova.live) > 1000 and nova.deleted_flavor_rows
