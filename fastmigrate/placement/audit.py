"""placement audit: allocations that nothing in nova accounts for, and what blocks `placement-manage db sync`.

A consumer whose allocations hold one of nova's resource classes (VCPU, MEMORY_MB, DISK_GB ..., as
``nova-manage placement audit`` counts them) is **orphaned** when, across every cell:

- no instance with its uuid is live (``deleted = 0``), and
- no migration with its uuid is in progress (a status other than nova's finished ones), and
- it is not an instance still being built: a ``build_requests`` row, or an ``instance_mappings`` row while
  no cell has an instance record of it (the scheduler claims before the cell database is written).

A deleted instance keeps its ``instance_mappings`` row until ``nova-manage db archive_deleted_rows``, so a
mapping protects a consumer only while no cell knows the instance. Consumers of other classes only (another
service's) are left alone. A live instance's allocations are never touched, even on a provider it no longer
runs on: that is ``nova-manage placement heal_allocations`` territory.

Reads are ordered so that an instance being built is never mistaken for an orphan: a chunk of allocations
first, then nova_api (build requests, mappings), then the cells. ``--delete`` removes each orphan's
allocations, and its consumer record, as placement's own DELETE does, a few consumers per transaction, after
checking under lock that neither its allocations nor its consumer generation changed since they were read;
one that changed is left for the next run (exit 1).

Also reported, because ``placement-manage db sync`` refuses to run past them (revisions ``611cd6dffd7b`` and
``b5c396305c25``): providers whose ``root_provider_id`` is NULL and allocations without a ``consumers`` row.
``placement-manage db online_data_migrations`` fixes both.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .. import deployment
from ..db import connect_engine, mask, mysql_url, read_catalog, read_rows, retrying, schema_problems
from ..errors import SchemaError, UsageError
from ..schema import instances
from .results import AuditResult, Orphan
from .schema import placement_tables

__all__ = ["API_TABLES", "AuditOptions", "CELL_TABLES", "FINISHED_MIGRATION", "NOVA_CLASSES", "STANDARD_CLASSES",
           "audit_placement"]

# os-resource-classes' standard classes; a class's id is its position (placement inserts them so; nova_api
# never stored them). Custom classes are rows of resource_classes, from id 10000.
STANDARD_CLASSES = (
    "VCPU", "MEMORY_MB", "DISK_GB", "PCI_DEVICE", "SRIOV_NET_VF", "NUMA_SOCKET", "NUMA_CORE", "NUMA_THREAD",
    "NUMA_MEMORY_MB", "IPV4_ADDRESS", "VGPU", "VGPU_DISPLAY_HEAD", "NET_BW_EGR_KILOBIT_PER_SEC",
    "NET_BW_IGR_KILOBIT_PER_SEC", "PCPU", "MEM_ENCRYPTION_CONTEXT", "FPGA", "PGPU",
    "NET_PACKET_RATE_KILOPACKET_PER_SEC", "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC")
# The classes nova-manage placement audit treats as nova's: a consumer holding any of them is nova's.
NOVA_CLASSES = frozenset(STANDARD_CLASSES.index(name) for name in (
    "VCPU", "MEMORY_MB", "DISK_GB", "VGPU", "NET_BW_EGR_KILOBIT_PER_SEC", "NET_BW_IGR_KILOBIT_PER_SEC", "PCPU",
    "MEM_ENCRYPTION_CONTEXT"))
# nova's migration_get_in_progress_by_host_and_node: every other status is a move under way.
FINISHED_MIGRATION = frozenset({"confirmed", "reverted", "error", "failed", "completed", "cancelled", "done"})

# The columns of nova's own tables that the audit reads (nova_api and cell databases), with the indexes its
# lookups use (nova's, by its names): enough to create them for tests and benchmarks.
_nova = MetaData()
cell_mappings = deployment.cell_mappings.to_metadata(_nova)
instance_mappings = Table("instance_mappings", _nova, Column("id", Integer, primary_key=True),
                          Column("instance_uuid", String(36), nullable=False), Column("cell_id", Integer),
                          Index("uniq_instance_mappings0instance_uuid", "instance_uuid", unique=True))
build_requests = Table("build_requests", _nova, Column("id", Integer, primary_key=True),
                       Column("instance_uuid", String(36)),
                       Index("uniq_build_requests0instance_uuid", "instance_uuid", unique=True))
migrations = Table("migrations", _nova, Column("id", Integer, primary_key=True), Column("uuid", String(36)),
                   Column("status", String(255)), Column("deleted", Integer),
                   Index("migrations_uuid", "uuid", unique=True))
API_TABLES = (cell_mappings, instance_mappings, build_requests)
CELL_TABLES = (instances, migrations)

allocations = placement_tables["allocations"]
consumers = placement_tables["consumers"]
providers = placement_tables["resource_providers"]
resource_classes = placement_tables["resource_classes"]
projects = placement_tables["projects"]

_PLACEMENT_COLUMNS = {"allocations": {"id", "consumer_id", "resource_provider_id", "resource_class_id", "used"},
                      "consumers": {"id", "uuid", "project_id", "generation"},
                      "resource_providers": {"id", "uuid", "name", "root_provider_id"},
                      "resource_classes": {"id", "name"}, "projects": {"id", "external_id"}}
_API_COLUMNS = {"instance_mappings": {"instance_uuid", "cell_id"}, "build_requests": {"instance_uuid"}}
_CELL_COLUMNS = {"instances": {"uuid", "deleted"}, "migrations": {"uuid", "status", "deleted"}}

Progress = Callable[[AuditResult], None]


@dataclass(frozen=True, slots=True)
class AuditOptions:
    chunk_size: int = 5_000  # allocations read per chunk (whole consumers: a chunk ends between consumers)
    delete: bool = False  # remove the orphans' allocations (and consumer records)
    delete_batch: int = 50  # orphaned consumers per delete transaction
    statement_timeout: float = 0

    def __post_init__(self) -> None:
        for name in ("chunk_size", "delete_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be a whole number of at least 1, not {value!r}")


@dataclass(slots=True)
class _Cell:
    name: str  # the cell's name, or its masked URL when given with --cell-db
    engine: AsyncEngine


@dataclass(slots=True)
class _Chunk:
    """One key range of allocations, grouped by consumer: consumer -> [(id, provider id, class id, used)]."""

    allocations: dict[str, list[tuple[int, int, int, int]]]
    consumers: dict[str, tuple[int, int]]  # uuid -> (generation, project id)


def _in(column: Any, values: Iterable[Any]) -> Any:
    return column.in_(sorted(set(values)))


async def _check(engine: AsyncEngine, label: str, required: dict[str, set[str]], what: str) -> None:
    found, _ = await read_catalog(engine, label, required)
    if problems := schema_problems(found, required):
        raise SchemaError(f"{label}: not {what}: {'; '.join(problems)}")


async def _cells_of(api: AsyncEngine, api_label: str, cell_urls: Sequence[str], default_db: str | None,
                    timeout: float) -> list[_Cell]:
    """The cells to look instances up in: those given, or every cell of ``cell_mappings`` (cell0 included).
    Given cells must be as many as the mapped ones: an instance of a cell left out would look orphaned."""
    mapped = await deployment.read_cells(api, api_label, default_db, "--cell-db")
    if cell_urls:
        real = [cell for cell in mapped if cell.uuid != deployment.CELL0]
        if len(cell_urls) < len(real):
            raise UsageError(f"{api_label} maps {len(real)} cells ({', '.join(c.label for c in real)}) but "
                             f"--cell-db names {len(cell_urls)}: an instance in a cell left out would look "
                             "orphaned. Give every cell's database, or none to use cell_mappings")
        return [_Cell(mask(url), _engine(url, timeout)) for url in cell_urls]
    return [_Cell(f"cell {cell.label}", _engine(cell.url, timeout)) for cell in mapped]


def _engine(url: str, timeout: float, *, read_only: bool = True) -> AsyncEngine:
    return connect_engine(mysql_url(url), pool_size=2, read_only=read_only, statement_timeout=timeout)


async def _read_chunk(placement: AsyncEngine, low: str | None, size: int) -> tuple[_Chunk, str | None]:
    """The allocations of the consumers after ``low`` up to about ``size`` rows (whole consumers), and the
    consumer to continue after (None: the end)."""
    after = allocations.c.consumer_id > low if low is not None else true()
    bound = await read_rows(placement, select(allocations.c.consumer_id).where(after)
                        .order_by(allocations.c.consumer_id).offset(size - 1).limit(1))
    high: str | None = bound[0][0] if bound else None
    upto = allocations.c.consumer_id <= high if high is not None else true()
    rows = await read_rows(placement, select(allocations.c.consumer_id, allocations.c.id,
                                         allocations.c.resource_provider_id, allocations.c.resource_class_id,
                                         allocations.c.used).where(after, upto))
    grouped: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    for consumer, *allocation in rows:
        grouped[consumer].append(tuple(allocation))
    records: dict[str, tuple[int, int]] = {}
    if grouped:
        for row in await read_rows(placement, select(consumers.c.uuid, consumers.c.generation, consumers.c.project_id)
                                   .where(_in(consumers.c.uuid, grouped))):
            records[row.uuid] = (row.generation, row.project_id)
    return _Chunk(dict(grouped), records), high


async def _nova_side(api: AsyncEngine, cells: Sequence[_Cell], uuids: list[str]) -> dict[str, tuple[bool, str]]:
    """For each of ``uuids`` (consumers holding nova's classes): (orphaned, why). nova_api is read before
    the cells: a build request that is gone by then left its instance in a cell already."""
    building = {r[0] for r in await read_rows(api, select(build_requests.c.instance_uuid)
                                          .where(_in(build_requests.c.instance_uuid, uuids)))}
    mapped = {r[0] for r in await read_rows(api, select(instance_mappings.c.instance_uuid)
                                        .where(_in(instance_mappings.c.instance_uuid, uuids)))}

    async def look(cell: _Cell) -> tuple[_Cell, list[Any], list[Any]]:
        found, moves = await asyncio.gather(
            read_rows(cell.engine, select(instances.c.uuid, instances.c.deleted).where(_in(instances.c.uuid, uuids))),
            read_rows(cell.engine, select(migrations.c.uuid, migrations.c.status, migrations.c.deleted)
                  .where(_in(migrations.c.uuid, uuids))))
        return cell, found, moves

    live: set[str] = set()
    deleted: dict[str, str] = {}
    moving: set[str] = set()
    finished: dict[str, str] = {}
    for cell, found, moves in await asyncio.gather(*(look(cell) for cell in cells)):
        for uuid, gone in found:
            if gone:
                deleted.setdefault(uuid, cell.name)
            else:
                live.add(uuid)
        for uuid, status, gone in moves:
            if not gone and status not in FINISHED_MIGRATION:
                moving.add(uuid)
            else:
                finished.setdefault(uuid, f"migration {status}{' (deleted)' if gone else ''} in {cell.name}")
    verdicts = {}
    for uuid in uuids:
        if uuid in live:
            verdicts[uuid] = (False, "live")
        elif uuid in moving:
            verdicts[uuid] = (False, "migrating")
        elif uuid in building:
            verdicts[uuid] = (False, "building")
        elif uuid in deleted:
            verdicts[uuid] = (True, f"instance deleted in {deleted[uuid]}")
        elif uuid in mapped:
            verdicts[uuid] = (False, "mapped")
        elif uuid in finished:
            verdicts[uuid] = (True, finished[uuid])
        else:
            verdicts[uuid] = (True, "no instance, migration or build request")
    return verdicts


async def _names(placement: AsyncEngine, result: AuditResult) -> None:
    """Providers, classes and projects of the orphans by name, for the report."""
    provider_ids = {a[1] for o in result.orphans for a in o.allocations}
    project_ids = {o.project_id for o in result.orphans if o.project_id is not None}
    rows = await read_rows(placement, select(resource_classes.c.id, resource_classes.c.name))
    result.class_names = {**dict(enumerate(STANDARD_CLASSES)), **{r.id: r.name for r in rows}}
    ids = sorted(provider_ids)
    for start in range(0, len(ids), 1000):
        for row in await read_rows(placement, select(providers.c.id, providers.c.uuid, providers.c.name)
                               .where(_in(providers.c.id, ids[start:start + 1000]))):
            result.providers[row.id] = (row.uuid, row.name)
    ids = sorted(project_ids)
    for start in range(0, len(ids), 1000):
        for row in await read_rows(placement, select(projects.c.id, projects.c.external_id)
                               .where(_in(projects.c.id, ids[start:start + 1000]))):
            result.projects[row.id] = row.external_id


async def _delete(placement: AsyncEngine, result: AuditResult, batch: int) -> None:
    """Each orphan's allocations and consumer record go, a few consumers per transaction, only if under lock
    they are what the audit read; a consumer changed since is left for the next run."""
    for start in range(0, len(result.orphans), batch):
        chunk = result.orphans[start:start + batch]

        async def attempt(chunk: Sequence[Orphan] = chunk) -> None:
            await _delete_some(placement, result, chunk)

        await retrying(attempt)


async def _delete_some(placement: AsyncEngine, result: AuditResult, chunk: Sequence[Orphan]) -> None:
    uuids = [o.consumer for o in chunk]
    removed, gone, changed = [], [], []
    async with placement.begin() as conn:
        generation = {r.uuid: r.generation for r in await conn.execute(
            select(consumers.c.uuid, consumers.c.generation).where(_in(consumers.c.uuid, uuids)).with_for_update())}
        now: dict[str, set[int]] = defaultdict(set)
        for consumer, allocation in await conn.execute(
                select(allocations.c.consumer_id, allocations.c.id).where(_in(allocations.c.consumer_id, uuids))
                .with_for_update()):
            now[consumer].add(allocation)
        for orphan in chunk:
            if not now.get(orphan.consumer):
                gone.append(orphan)  # someone (placement itself, back up) removed them already
            elif now[orphan.consumer] != {a[0] for a in orphan.allocations} or \
                    generation.get(orphan.consumer) != orphan.generation:
                changed.append(orphan)
            else:
                removed.append(orphan)
        if removed:
            await _delete_rows(conn, [a[0] for o in removed for a in o.allocations], [o.consumer for o in removed])
    # Counted only once committed: a retried transaction starts the tally of its chunk again.
    result.deleted.extend(removed)
    result.gone.extend(gone)
    result.changed.extend(changed)


async def _delete_rows(conn: AsyncConnection, allocation_ids: list[int], consumer_uuids: list[str]) -> None:
    await conn.execute(allocations.delete().where(_in(allocations.c.id, allocation_ids)))
    # As placement's delete_consumers_if_no_allocations: the consumer record goes with its last allocation.
    await conn.execute(consumers.delete().where(_in(consumers.c.uuid, consumer_uuids)))


async def audit_placement(api_url: str, placement_url: str | None = None, cell_urls: Sequence[str] = (),
                          opts: AuditOptions = AuditOptions(), *, nova_database: str | None = None,
                          on_progress: Progress | None = None) -> AuditResult:
    """Find (and with ``opts.delete`` remove) orphaned allocations; report what blocks placement's schema
    upgrades. ``placement_url`` defaults to ``api_url`` (placement not extracted yet); the cells come from
    ``cell_mappings`` unless ``cell_urls`` are given (templates there are filled from ``nova_database``,
    nova.conf's [database]/connection, as nova does)."""
    placement_url = placement_url or api_url
    result = AuditResult(placement=mask(placement_url), api=mask(api_url), delete=opts.delete)
    began = time.monotonic()
    api = _engine(api_url, opts.statement_timeout)
    placement = _engine(placement_url, opts.statement_timeout, read_only=not opts.delete)
    cells: list[_Cell] = []
    try:
        await _check(placement, result.placement, _PLACEMENT_COLUMNS,
                     "a database holding placement's tables; point --placement-db at placement's database "
                     "(or leave it out while placement still lives in nova_api)")
        await _check(api, result.api, _API_COLUMNS, "a nova_api database; point --api-db at "
                     "[api_database]/connection of nova.conf")
        cells = await _cells_of(api, result.api, cell_urls, nova_database, opts.statement_timeout)
        for cell in cells:
            await _check(cell.engine, cell.name, _CELL_COLUMNS, "a nova cell database")
        result.cells = [cell.name for cell in cells]
        result.expected_consumers = (await read_rows(placement, select(func.count()).select_from(consumers)))[0][0]
        result.no_root = [(r.uuid, r.name) for r in await read_rows(
            placement, select(providers.c.uuid, providers.c.name).where(providers.c.root_provider_id.is_(None))
            .order_by(providers.c.id))]
        await _scan(placement, api, cells, result, opts, on_progress)
        await _names(placement, result)
        if opts.delete and result.orphans:
            await _delete(placement, result, opts.delete_batch)
    finally:
        for engine in [api, placement, *(cell.engine for cell in cells)]:
            await engine.dispose()
    result.seconds = round(time.monotonic() - began, 3)
    return result


async def _scan(placement: AsyncEngine, api: AsyncEngine, cells: Sequence[_Cell], result: AuditResult,
                opts: AuditOptions, on_progress: Progress | None) -> None:
    low: str | None = None
    while True:
        chunk, high = await _read_chunk(placement, low, opts.chunk_size)
        nova = [uuid for uuid, held in chunk.allocations.items() if any(a[2] in NOVA_CLASSES for a in held)]
        verdicts = await _nova_side(api, cells, nova) if nova else {}
        result.consumers += len(chunk.allocations)
        result.allocations += sum(len(held) for held in chunk.allocations.values())
        result.not_nova += len(chunk.allocations) - len(nova)
        for uuid, held in chunk.allocations.items():
            record = chunk.consumers.get(uuid)
            if record is None:
                result.no_consumer.append((uuid, len(held)))
            orphaned, why = verdicts.get(uuid, (False, "not nova's"))
            if orphaned:
                generation, project = record or (None, None)
                result.orphans.append(Orphan(uuid, why, tuple(sorted(held)), generation, project))
            elif why in ("migrating", "building", "mapped"):
                result.kept[why] += 1
        if on_progress:
            on_progress(result)
        if high is None:
            return
        low = high

