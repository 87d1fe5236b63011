"""The hot-path statements, built as plain SQL text plus parameters, for the driver's own paramstyle.

Each batch runs a handful of statements whose size grows with the batch (an id list, a CASE arm per
blob). Built through SQLAlchemy's expression language, every one of them is a fresh tree of hundreds of
bind parameters to construct, cache-key and compile: measured at a third of fastmigrate's CPU time.
Here they are strings. Integer ids are rendered inline (``int()`` guarantees they are numbers); every
string travels as a parameter. Pure: no connection, no I/O; tests compare the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .schema import SYSMETA_UUID_INDEX
from .transform import KEY_PREFIXES

__all__ = ["blob_update", "flavor_rows", "row_removal", "timestamp"]

Statement = tuple[str, tuple[object, ...]]

# Every flavor key matches one of these ('_' escaped: it is a LIKE wildcard).
_PATTERNS = tuple(p.replace("_", "!_") + "%" for p in KEY_PREFIXES)
_MARK = {"format": "%s", "pyformat": "%s", "qmark": "?"}


def _mark(paramstyle: str) -> str:
    try:
        return _MARK[paramstyle]
    except KeyError:
        raise ValueError(f"unsupported DBAPI paramstyle {paramstyle!r}") from None


def _ints(ids: Sequence[int]) -> str:
    return ", ".join(str(int(i)) for i in ids)


def timestamp(now: datetime) -> str:
    # nova's columns hold naive UTC; a string is what both MySQL and SQLite store for DATETIME.
    return now.strftime("%Y-%m-%d %H:%M:%S")


def blob_update(paramstyle: str, blobs: Sequence[tuple[int, str]], now: datetime) -> Statement:
    """One multi-row UPDATE of instance_extra: a CASE arm per (id, blob). ``flavor IS NULL`` keeps it safe on
    its own; the writer checks that it matched every row."""
    mark = _mark(paramstyle)
    arms = " ".join(f"WHEN {int(extra_id)} THEN {mark}" for extra_id, _ in blobs)
    sql = (f"UPDATE instance_extra SET flavor = CASE id {arms} END, updated_at = {mark} "
           f"WHERE id IN ({_ints([extra_id for extra_id, _ in blobs])}) AND flavor IS NULL")
    return sql, (*(blob for _, blob in blobs), timestamp(now))


def row_removal(paramstyle: str, ids: Sequence[int], now: datetime, *, soft: bool) -> Statement:
    """Delete (or soft-delete: ``deleted = id``, as nova does) system_metadata rows by primary key."""
    if soft:
        return (f"UPDATE instance_system_metadata SET deleted = id, deleted_at = {_mark(paramstyle)} "
                f"WHERE id IN ({_ints(ids)}) AND deleted = 0", (timestamp(now),))
    return f"DELETE FROM instance_system_metadata WHERE id IN ({_ints(ids)})", ()


def flavor_rows(paramstyle: str, uuids: Sequence[str], include_deleted: bool, *, columns: str = "",
                group: bool = False, lock: bool = False, force_index: bool = False) -> Statement:
    """The flavor rows of these instances: the one filter that the read, the locked re-read and the
    fingerprint share. ``columns`` replaces the default select list; ``group`` groups by instance;
    ``force_index`` (MySQL) makes the lookup go through the uuid index whatever the statistics say."""
    mark = _mark(paramstyle)
    select_list = columns or "instance_uuid, id, `key`, value, deleted"
    keys = " OR ".join(f"`key` LIKE {mark} ESCAPE '!'" for _ in _PATTERNS)
    hint = f" FORCE INDEX ({SYSMETA_UUID_INDEX})" if force_index else ""
    sql = (f"SELECT {select_list} FROM instance_system_metadata{hint} "
           f"WHERE instance_uuid IN ({', '.join([mark] * len(uuids))}) AND ({keys})")
    if not include_deleted:
        sql += " AND deleted = 0"
    if group:
        sql += " GROUP BY instance_uuid"
    if lock:
        sql += " FOR UPDATE"
    return sql, (*uuids, *_PATTERNS)
