"""Reads candidates: instances without a flavor blob, each with every flavor row it has in system_metadata.

Pages walk ``instances`` by primary key (keyset, never OFFSET; a plain ``id > :last``, so no row-constructor
comparison for MariaDB to mis-plan). Each page is a handful of short autocommit statements: no snapshot
or transaction stays open between pages. The same queries serve the writer, which re-reads the rows of
its batch under lock (``fingerprints``, ``lock_extras``, ``load(lock=True)``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import statements
from .schema import EXTRA_UUID_INDEX, instance_extra, instances, sysmeta
from .flavortables import FlavorTables, LegacyFlavor
from .transform import Broken, Candidate, SysmetaRow, fingerprint, is_busy, parse_key

__all__ = [
    "DONE",
    "ExtraRow",
    "Page",
    "ReadOptions",
    "blocker_query",
    "choose_extra",
    "count_blockers",
    "count_pending",
    "extra_by_uuid",
    "fingerprints",
    "flavor_rows",
    "load",
    "lock_extras",
    "next_window",
    "pending_query",
    "read_next",
    "read_page",
]

DONE = "done"  # choose_extra's answer for an instance that already has a blob


@dataclass(frozen=True, slots=True)
class ReadOptions:
    include_deleted: bool = False
    force: bool = False
    flavors: FlavorTables | None = None  # the flavor tables: extra specs to merge, legacy flavors to rebuild


@dataclass(frozen=True, slots=True)
class ExtraRow:
    id: int
    deleted: int
    has_flavor: bool


@dataclass(slots=True)
class Page:
    """What one read produced. ``last_id`` is the keyset cursor: the highest instances.id looked at."""

    candidates: list[Candidate] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # have a blob already (or vanished: see load())
    scanned: int = 0
    last_id: int = 0

    @property
    def found(self) -> int:
        """Instances that still need work: candidates, busy and broken ones."""
        return len(self.candidates) + len(self.busy) + len(self.broken)


def choose_extra(instance_deleted: bool, extras: Sequence[ExtraRow]) -> int | None | str | Broken:
    """The instance_extra row to write to: its id, ``None`` to insert one, ``DONE``, or why neither.

    nova sees only the live row of a live instance; a soft-deleted instance's row was soft-deleted with it.
    """
    visible = [e for e in extras if e.deleted == 0 or instance_deleted]
    if any(e.has_flavor for e in visible):
        return DONE
    if len(visible) > 1:
        ids = ", ".join(str(e.id) for e in visible)
        return Broken("", f"{len(visible)} instance_extra rows (ids {ids}); delete all but one, then rerun")
    return visible[0].id if visible else None


_INSTANCE_COLUMNS = (instances.c.id, instances.c.uuid, instances.c.deleted, instances.c.task_state,
                     instances.c.vm_state, instances.c.instance_type_id)
# Only whether a blob is there: the blob text itself never comes back to the reader.
_EXTRA_COLUMNS = (instance_extra.c.id.label("extra_id"), instance_extra.c.deleted.label("extra_deleted"),
                  instance_extra.c.flavor.is_not(None).label("has_flavor"))


def extra_by_uuid(query: Select[Any]) -> Select[Any]:
    """``query`` reaching instance_extra through its uuid index on MySQL, whatever the statistics say."""
    return query.with_hint(instance_extra, f"FORCE INDEX ({EXTRA_UUID_INDEX})", "mysql")


def _has_blob() -> Any:
    """An instance already migrated: a blob in an instance_extra row nova sees (``choose_extra``'s DONE)."""
    e = instance_extra
    return extra_by_uuid(select(e.c.id).where(e.c.instance_uuid == instances.c.uuid, e.c.flavor.is_not(None),
                                         or_(e.c.deleted == 0, instances.c.deleted != 0))).exists()


def _in_scope(query: Select[Any], include_deleted: bool) -> Select[Any]:
    return query if include_deleted else query.where(instances.c.deleted == 0)


def _window_query(include_deleted: bool, last_id: int, window: int) -> Select[Any, Any]:
    """How many instances the next ``window`` are and where they end: ids only, off the primary key."""
    ids = _in_scope(select(instances.c.id).where(instances.c.id > last_id), include_deleted)
    inner = ids.order_by(instances.c.id).limit(window).subquery("w")
    return select(func.count(), func.max(inner.c.id))


def _page_query(include_deleted: bool, last_id: int, end: int, limit: int) -> Select[Any]:
    """The instances in ``(last_id, end]`` without a blob, the first ``limit`` of them, with their extra rows.

    Migrated instances are skipped inside the server: a rerun after a crash (or a run that finds most of
    the fleet done) costs an index probe per migrated instance, not a row shipped to Python and sorted there.
    """
    page = _in_scope(select(*_INSTANCE_COLUMNS).where(instances.c.id > last_id, instances.c.id <= end,
                                                      ~_has_blob()), include_deleted)
    # The LIMIT applies to instances (a derived table), so a page never ends halfway through the
    # extra rows of one instance.
    inner = page.order_by(instances.c.id).limit(limit).subquery("i")
    return extra_by_uuid(
        select(inner, *_EXTRA_COLUMNS)
        .select_from(inner.outerjoin(instance_extra, instance_extra.c.instance_uuid == inner.c.uuid))
        .order_by(inner.c.id)
    )


def next_window(window: int, scanned: int, found: int, limit: int, cap: int) -> int:
    """How many instances the next page should look at, so that about ``limit`` of them still need work.

    Where the last page found few (a resumed run, crossing what is migrated already), the window grows with
    the density it saw, at most fourfold per page and never past ``cap`` (each page stays a short statement);
    where it found many, it shrinks back to ``limit``.
    """
    if scanned < window:  # the end of the table: nothing to learn
        return window
    wanted = window * 4 if found == 0 else window * limit // found
    return max(limit, min(cap, window * 4, wanted))


def _uuid_query(uuids: Sequence[str], lock: bool) -> Select[Any]:
    query = extra_by_uuid(
        select(*_INSTANCE_COLUMNS, *_EXTRA_COLUMNS)
        .select_from(instances.outerjoin(instance_extra, instance_extra.c.instance_uuid == instances.c.uuid))
        .where(instances.c.uuid.in_(uuids))
    )
    return query.with_for_update() if lock else query


async def read_page(conn: AsyncConnection, last_id: int, limit: int, opts: ReadOptions,
                    window: int | None = None) -> Page:
    """Of the next ``window`` instances after ``last_id`` (default ``limit``), the first ``limit`` that have
    no blob yet, sorted into candidates, busy and broken. ``last_id`` of the answer is the next cursor."""
    window = max(window or limit, limit)
    scanned, end = (await conn.execute(_window_query(opts.include_deleted, last_id, window))).one()
    if not scanned:
        return Page()
    result = await conn.execute(_page_query(opts.include_deleted, last_id, end, limit))
    page = await _sort(conn, result.all(), opts, lock=False)
    if page.scanned == limit and page.last_id < end:
        # The window held more work than a page takes: stop where the page stops.
        end = page.last_id
        between = select(func.count()).where(instances.c.id > last_id, instances.c.id <= end)
        scanned = (await conn.execute(_in_scope(between, opts.include_deleted))).scalar_one()
    page.scanned, page.last_id = scanned, end
    return page


async def read_next(engine: AsyncEngine, last_id: int, limit: int, opts: ReadOptions,
                    window: int | None = None) -> Page:
    """``read_page`` on a pooled connection in autocommit mode: each page from a fresh snapshot, nothing
    held open between pages, and a page whose connection was lost can simply be read again."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await read_page(conn, last_id, limit, opts, window)


async def load(conn: AsyncConnection, uuids: Sequence[str], opts: ReadOptions, *, lock: bool) -> Page:
    """The same as a page, for given instances: the writer's fresh read of instances that changed."""
    result = await conn.execute(_uuid_query(uuids, lock))
    page = await _sort(conn, result.all(), opts, lock=lock)
    found = {c.uuid for c in page.candidates} | set(page.busy) | set(page.done) | {b.uuid for b in page.broken}
    page.done.extend(u for u in uuids if u not in found)  # the instance row itself is gone
    return page


async def _sort(conn: AsyncConnection, rows: Sequence[Any], opts: ReadOptions, *, lock: bool) -> Page:
    page = Page()
    grouped: dict[int, tuple[Any, list[ExtraRow]]] = {}
    for row in rows:
        entry = grouped.setdefault(row.id, (row, []))
        if row.extra_id is not None:
            entry[1].append(ExtraRow(row.extra_id, row.extra_deleted, bool(row.has_flavor)))
    wanted: dict[str, tuple[bool, int | None, int | None]] = {}
    for inst, extras in grouped.values():
        page.scanned += 1
        page.last_id = max(page.last_id, inst.id)
        if not opts.include_deleted and inst.deleted:
            page.done.append(inst.uuid)  # deleted since it was read: out of scope
            continue
        target = choose_extra(bool(inst.deleted), extras)
        if target == DONE:
            page.done.append(inst.uuid)
        elif isinstance(target, Broken):
            page.broken.append(Broken(inst.uuid, target.reason))
        elif not opts.force and is_busy(inst.task_state, inst.vm_state):
            page.busy.append(inst.uuid)
        else:
            assert not isinstance(target, str)
            wanted[inst.uuid] = (bool(inst.deleted), target, inst.instance_type_id)
    if wanted:
        by_uuid = await flavor_rows(conn, list(wanted), opts.include_deleted, lock=lock)
        specs: Mapping[str, Mapping[str, str]] = {}
        legacy: Mapping[int, LegacyFlavor] = {}
        tables = opts.flavors
        if tables is not None and tables.merges:  # a page's worth of Python only where there is a lookup
            flavorids = {r.value for rows in by_uuid.values() for r in rows
                         if r.value is not None and r.key.endswith("instance_type_flavorid")}
            specs = await tables.specs(conn, flavorids)
        if tables is not None and tables.rebuilds:
            bare = {type_id for uuid, (_, _, type_id) in wanted.items() if type_id is not None
                    and not any(r.deleted == 0 and parse_key(r.key) for r in by_uuid.get(uuid, ()))}
            legacy = await tables.legacy(conn, bare)
        for uuid, (deleted, extra_id, type_id) in wanted.items():
            rows = tuple(by_uuid.get(uuid, ()))
            page.candidates.append(Candidate(uuid, deleted, extra_id, rows, specs,
                                             legacy.get(type_id) if type_id is not None else None))
    return page


async def flavor_rows(conn: AsyncConnection, uuids: Sequence[str], include_deleted: bool, *,
                      lock: bool = False) -> dict[str, list[SysmetaRow]]:
    """uuid -> its flavor rows (soft-deleted ones too with ``include_deleted``)."""
    mysql = conn.dialect.name == "mysql"
    sql, params = statements.flavor_rows(conn.dialect.paramstyle, uuids, include_deleted, lock=lock and mysql,
                                         force_index=mysql)
    by_uuid: dict[str, list[SysmetaRow]] = defaultdict(list)
    rows: Any = await conn.exec_driver_sql(sql, params)  # untyped text: rows of (uuid, id, key, value, deleted)
    for row in rows:
        by_uuid[row[0]].append(SysmetaRow(row[1], row[2], row[3], row[4]))
    return by_uuid


# MD5 over the same canonical text as transform.fingerprint(): field separator 0x1f, row separator 0x1e,
# NULL as 0x00. Computed in the server, one short row per instance comes back instead of all its rows.
_MYSQL_FINGERPRINT = ("instance_uuid, MD5(GROUP_CONCAT(CONCAT_WS(CHAR(31), id, `key`, IFNULL(value, CHAR(0)), "
                      "deleted) ORDER BY id SEPARATOR 0x1e))")


async def fingerprints(conn: AsyncConnection, uuids: Sequence[str], include_deleted: bool) -> dict[str, str]:
    """uuid -> fingerprint of its flavor rows as they are now, locking them (and the gaps around them)
    until the transaction ends. Instances with no flavor rows left are absent from the answer."""
    if conn.dialect.name == "mysql":
        sql, params = statements.flavor_rows(conn.dialect.paramstyle, uuids, include_deleted,
                                             columns=_MYSQL_FINGERPRINT, group=True, lock=True,
                                             force_index=True)
        rows: Any = await conn.exec_driver_sql(sql, params)  # rows of (uuid, fingerprint)
        return {row[0]: row[1] for row in rows}
    # SQLite: the writer's BEGIN IMMEDIATE already excludes every other writer; hash the rows here.
    by_uuid = await flavor_rows(conn, uuids, include_deleted, lock=False)
    return {uuid: fingerprint(rows) for uuid, rows in by_uuid.items()}


async def lock_extras(conn: AsyncConnection, ids: Sequence[int], uuids: Sequence[str]) -> dict[str, list[ExtraRow]]:
    """Lock the instance_extra rows a batch will write to, and answer uuid -> those rows as they are now.

    Rows known by id are locked alone, by primary key. Instances that had no row to write to (``uuids``)
    are locked through the uuid index with the gaps around them, so nobody can insert one until the
    transaction ends. Gap locks are what concurrent writers deadlock on (each inserting into a gap the other
    holds), so they are taken only where an insert may follow: a few percent of a fleet. nova itself
    inserts a row only for an instance without a live one (``instance_extra_update_by_uuid``).
    """
    e = instance_extra
    columns = (e.c.instance_uuid, e.c.id, e.c.deleted, e.c.flavor.is_not(None))
    found: dict[str, list[ExtraRow]] = defaultdict(list)
    queries = []
    if ids:
        # FORCE INDEX: on a small table a scan may look cheaper, and a locking scan locks every gap.
        queries.append(select(*columns).where(e.c.id.in_(ids)).with_for_update()
                       .with_hint(e, "FORCE INDEX (PRIMARY)", "mysql"))
    if uuids:
        queries.append(extra_by_uuid(select(*columns).where(e.c.instance_uuid.in_(uuids)).with_for_update()))
    for query in queries:
        for uuid, extra_id, deleted, has_flavor in (await conn.execute(query)):
            found[uuid].append(ExtraRow(extra_id, deleted, bool(has_flavor)))
    return found


def pending_query(include_deleted: bool, low: int, high: int) -> Select[Any]:
    """Instances in ``(low, high]`` still without a blob (busy and broken ones included)."""
    query = select(func.count()).select_from(instances).where(instances.c.id > low, instances.c.id <= high,
                                                              ~_has_blob())
    return _in_scope(query, include_deleted)


def blocker_query(low: int, high: int) -> Select[Any]:
    """What nova's Liberty migration 291 (enforce_flavors_migrated) counts, for sysmeta ids in ``(low, high]``:
    live ``instance_type_id`` rows of live instances. Until it is 0, nova's schema cannot move past 290."""
    return (select(func.count()).select_from(sysmeta.join(instances, instances.c.uuid == sysmeta.c.instance_uuid))
            .where(sysmeta.c.id > low, sysmeta.c.id <= high, sysmeta.c.key == "instance_type_id",
                   sysmeta.c.deleted != sysmeta.c.id, instances.c.deleted != instances.c.id))


async def _sliced_count(conn: AsyncConnection, pk: Any, query: Callable[[int, int], Select[Any]],
                        step: int) -> int:
    # Counted in primary-key slices, so that no single statement runs long on a big table.
    low, high = (await conn.execute(select(func.min(pk), func.max(pk)))).one()
    if low is None:
        return 0
    total = 0
    for start in range(low - 1, high, step):
        total += (await conn.execute(query(start, start + step))).scalar_one()
    return total


async def count_pending(conn: AsyncConnection, include_deleted: bool, *, step: int = 200_000) -> int:
    return await _sliced_count(conn, instances.c.id, lambda lo, hi: pending_query(include_deleted, lo, hi), step)


async def count_blockers(conn: AsyncConnection, *, step: int = 1_000_000) -> int:
    return await _sliced_count(conn, sysmeta.c.id, blocker_query, step)
