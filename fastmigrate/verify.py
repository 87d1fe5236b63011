"""``fastmigrate verify``: an independent re-read of what a migration left.

For every instance in scope (live ones; soft-deleted too with ``include_deleted``): exactly one
instance_extra row nova can see, a blob that loads as nova reads it (``blobcheck``), no live flavor rows
left in system_metadata, and, where the replaced rows were kept (``--soft-delete``), a current flavor equal
to what those rows say. Read only; keyset pages in autocommit, as the migration reads.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from dataclasses import dataclass, field

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import reader
from .blobcheck import blob_problems
from .db import check_schema, connect_engine, mask, normalize_url, read_rows, retrying
from .errors import UsageError
from .flavors import guarded
from .results import ExitCode
from .schema import instance_extra, instances
from .transform import Candidate, Migration, SysmetaRow, parse_key, transform

__all__ = ["VerifyResult", "VerifyRun", "verify_flavors"]


@dataclass(slots=True)
class VerifyResult:
    database: str
    cell: str | None = None  # the cell's name (or uuid) when the database came from cell_mappings
    expected: int | None = None  # instances in scope when the run began: for progress
    checked: int = 0
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # (uuid, problem)
    seconds: float = 0.0
    error: str | None = None
    error_code: int = 0

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_code or ExitCode.FAILED
        return ExitCode.DIFFERENCES if self.mismatches else ExitCode.DONE


@dataclass(slots=True)
class VerifyRun:
    databases: list[VerifyResult]

    @property
    def exit_code(self) -> int:
        return max((db.exit_code for db in self.databases), default=ExitCode.DONE)


async def verify_flavors(databases: Sequence[str], *, include_deleted: bool = False, page_size: int = 1000,
                         cells: Sequence[str | None] = (),
                         on_progress: Callable[[VerifyResult], None] | None = None) -> VerifyRun:
    """Re-read every database; ``cells`` names them in reports (by position) when they came from cell_mappings;
    ``on_progress`` is called after every page."""
    if not databases:
        raise UsageError("name at least one database with --db URL")
    urls = [normalize_url(text) for text in databases]
    secrets = [url.password for url in urls]
    results = [VerifyResult(database=mask(text), cell=cell)
               for text, cell in itertools.zip_longest(databases, cells[:len(databases)])]
    engines = [connect_engine(url, read_only=True) for url in urls]
    try:
        await asyncio.gather(*(guarded(_verify(e, r, include_deleted, page_size, on_progress), r, secrets)
                               for e, r in zip(engines, results)))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    return VerifyRun(results)


async def _verify(engine: AsyncEngine, result: VerifyResult, include_deleted: bool, page_size: int,
                  on_progress: Callable[[VerifyResult], None] | None) -> None:
    await check_schema(engine, result.database)
    started = time.monotonic()
    in_scope = select(func.count()).select_from(instances)
    result.expected = int((await read_rows(engine, in_scope if include_deleted
                                           else in_scope.where(instances.c.deleted == 0)))[0][0])
    last_id = 0
    while True:
        (last_id, count), _ = await retrying(partial(_page, engine, last_id, page_size, include_deleted, result))
        if count == 0:
            break
        result.checked += count
        if on_progress:
            on_progress(result)
    result.seconds = time.monotonic() - started


async def _page(engine: AsyncEngine, last_id: int, limit: int, include_deleted: bool,
                result: VerifyResult) -> tuple[int, int]:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        query = (select(instances.c.id, instances.c.uuid, instances.c.deleted).where(instances.c.id > last_id)
                 .order_by(instances.c.id).limit(limit))
        if not include_deleted:
            query = query.where(instances.c.deleted == 0)
        page = (await conn.execute(query)).all()
        if not page:
            return last_id, 0
        uuids = [row.uuid for row in page]
        extras = await _extras(conn, uuids)
        rows = await reader.flavor_rows(conn, uuids, include_deleted=True)
    for row in page:
        for problem in instance_problems(bool(row.deleted), extras.get(row.uuid, []), rows.get(row.uuid, [])):
            result.mismatches.append((row.uuid, problem))
    return page[-1].id, len(page)


def instance_problems(instance_deleted: bool, extras: Sequence[tuple[int, str | None]],
                      rows: Sequence[SysmetaRow]) -> list[str]:
    """What is wrong with one instance after a migration (pure). ``extras``: (deleted, flavor) of its
    instance_extra rows; ``rows``: all its flavor rows in system_metadata, soft-deleted ones included."""
    visible = [flavor for deleted, flavor in extras if deleted == 0 or instance_deleted]
    if len(visible) != 1:
        return [f"{len(visible)} instance_extra rows nova can see (expected exactly one)"]
    problems = blob_problems(visible[0])
    live = [r for r in rows if r.deleted == 0 and parse_key(r.key) is not None]
    if live and not problems:
        problems.append(f"{len(live)} flavor row(s) still live in system_metadata beside the blob")
    kept = tuple(r for r in rows if r.deleted != 0)
    if kept and not problems:
        recomputed = transform(Candidate("", True, None, kept))
        if isinstance(recomputed, Migration):  # else the kept rows are history, not a whole flavor
            want = orjson.loads(recomputed.blob)["cur"]["nova_object.data"]
            got = orjson.loads(visible[0] or "{}")["cur"]["nova_object.data"]
            # The flavor tables' extra specs were merged in: the stashed ones must be there, as stashed.
            stashed, merged = want.pop("extra_specs", {}), got.pop("extra_specs", {})
            if got != want or any(merged.get(key) != value for key, value in stashed.items()):
                problems.append("current flavor in the blob differs from its soft-deleted system_metadata rows")
    return problems


async def _extras(conn: AsyncConnection, uuids: Sequence[str]) -> dict[str, list[tuple[int, str | None]]]:
    query = reader.extra_by_uuid(select(instance_extra.c.instance_uuid, instance_extra.c.deleted,
                                        instance_extra.c.flavor).where(instance_extra.c.instance_uuid.in_(uuids)))
    found: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for row in await conn.execute(query):
        found[row.instance_uuid].append((row.deleted, row.flavor))
    return found
