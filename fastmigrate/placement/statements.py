"""The copy's statements, as SQL text for MySQL/MariaDB (``%s`` parameters). Pure: tests compare the text.

Keys are integers and are rendered inline (``int()`` guarantees they are numbers). A key range is
``(low, high]`` in the key's order, ``None`` meaning open; composite keys are compared with the row
constructor expanded into ``OR`` (MariaDB does not use an index for ``(a, b) > (x, y)``).

Checksums follow pt-table-checksum: per range, ``COUNT(*)`` and ``BIT_XOR`` of a 64-bit hash of each row,
computed inside each server. The row's text is built from every compared column, with a NULL flag per
column (``CONCAT_WS`` skips NULLs, so ``(NULL, 'x')`` and ``('x', NULL)`` would otherwise hash alike), and
text columns converted to utf8mb4 first: nova_api's latin1 text and placement's utf8 text then hash as the
same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from .schema import TableSpec

__all__ = ["STAGE", "Key", "boundary", "checksum", "delete_keys", "delete_range", "delete_unstaged", "drop_stage",
           "insert", "insert_select", "insert_unstaged", "key_range", "keys_in", "read_after", "read_keys",
           "row_hashes", "stage", "update_from_stage"]

Key = tuple[int, ...]


def _q(name: str) -> str:
    return f"`{name}`"


def _value(spec: TableSpec, column: str) -> str:
    return f"CONVERT({_q(column)} USING utf8mb4)" if column in spec.text_columns else _q(column)


def row_hash(spec: TableSpec) -> str:
    values = ", ".join(_value(spec, c) for c in spec.columns)
    nulls = ", ".join(f"ISNULL({_q(c)})" for c in spec.columns)
    return f"CAST(CONV(SUBSTRING(MD5(CONCAT_WS('#', {values}, CONCAT({nulls}))), 1, 16), 16, 10) AS UNSIGNED)"


def _beyond(key: Sequence[str], bound: Key, last: str) -> str:
    """key > bound (``last`` = ">") or key <= bound (``last`` = "<="), the row constructor expanded: each arm
    fixes a prefix of the key and compares the next column strictly; the final arm uses ``last``."""
    if len(key) != len(bound):
        raise ValueError(f"a key of {len(key)} columns compared with {bound!r}")
    strict = ">" if last == ">" else "<"
    arms = []
    for i, column in enumerate(key):
        equal = [f"{_q(c)} = {int(v)}" for c, v in zip(key[:i], bound[:i])]
        op = last if i == len(key) - 1 else strict
        arms.append(" AND ".join([*equal, f"{_q(column)} {op} {int(bound[i])}"]))
    return arms[0] if len(arms) == 1 else "(" + " OR ".join(f"({a})" for a in arms) + ")"


def key_range(spec: TableSpec, low: Key | None, high: Key | None) -> str:
    """The WHERE condition of the range ``(low, high]`` (``TRUE`` for the whole table)."""
    parts = []
    if low is not None:
        parts.append(_beyond(spec.key, low, ">"))
    if high is not None:
        parts.append(_beyond(spec.key, high, "<="))
    return " AND ".join(parts) or "TRUE"


def _order(spec: TableSpec) -> str:
    return ", ".join(_q(c) for c in spec.key)


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(_q(c) for c in columns)


def boundary(spec: TableSpec, low: Key | None, rows: int) -> str:
    """The key of the ``rows``-th row after ``low``: where a chunk of that many rows ends (no row: the table
    ends before, and the chunk is open-ended). Reads the primary key only."""
    where = key_range(spec, low, None)
    return (f"SELECT {_order(spec)} FROM {_q(spec.name)} WHERE {where} ORDER BY {_order(spec)} "
            f"LIMIT 1 OFFSET {int(rows) - 1}")


def checksum(spec: TableSpec, low: Key | None, high: Key | None) -> str:
    """COUNT(*) and the XOR of the row hashes of a range: one short row, whatever the range holds."""
    return (f"SELECT COUNT(*), COALESCE(BIT_XOR({row_hash(spec)}), 0) FROM {_q(spec.name)} "
            f"WHERE {key_range(spec, low, high)}")


def row_hashes(spec: TableSpec, low: Key | None, high: Key | None) -> str:
    """Each row's key and hash in a range: what a differing chunk is compared by, row by row."""
    return (f"SELECT {_order(spec)}, {row_hash(spec)} FROM {_q(spec.name)} WHERE {key_range(spec, low, high)}")


def read_after(spec: TableSpec, low: Key | None, limit: int) -> str:
    """The next ``limit`` whole rows after ``low``, in key order: one chunk of a copy."""
    return (f"SELECT {_columns(spec.columns)} FROM {_q(spec.name)} WHERE {key_range(spec, low, None)} "
            f"ORDER BY {_order(spec)} LIMIT {int(limit)}")


def read_keys(spec: TableSpec, keys: Sequence[Key]) -> str:
    """Whole rows by key: the few a sync copies out of a differing chunk."""
    return f"SELECT {_columns(spec.columns)} FROM {_q(spec.name)} WHERE {keys_in(spec, keys)}"


def insert(spec: TableSpec) -> str:
    """A row's INSERT, for executemany (which the driver sends as multi-row INSERTs)."""
    marks = ", ".join(["%s"] * len(spec.columns))
    return f"INSERT INTO {_q(spec.name)} ({_columns(spec.columns)}) VALUES ({marks})"


def delete_range(spec: TableSpec, where: str) -> str:
    return f"DELETE FROM {_q(spec.name)} WHERE {where}"


def insert_select(spec: TableSpec, source_db: str, where: str) -> str:
    """Copy the source's rows matching ``where`` inside the server, from the database ``source_db`` that the
    target's session can read (both on one server): no row travels through fastmigrate."""
    return (f"INSERT INTO {_q(spec.name)} ({_columns(spec.columns)}) SELECT {_columns(spec.columns)} "
            f"FROM {_q(source_db)}.{_q(spec.name)} WHERE {where}")


def delete_keys(spec: TableSpec, keys: Sequence[Key]) -> str:
    return f"DELETE FROM {_q(spec.name)} WHERE {keys_in(spec, keys)}"


def keys_in(spec: TableSpec, keys: Sequence[Key], alias: str = "") -> str:
    """The WHERE condition matching exactly these keys (of the table named ``alias`` in the statement)."""
    if not keys:
        raise ValueError("no keys")
    prefix = f"{_q(alias)}." if alias else ""
    if len(spec.key) == 1:
        return f"{prefix}{_q(spec.key[0])} IN ({', '.join(str(int(k[0])) for k in keys)})"
    return " OR ".join("(" + " AND ".join(f"{prefix}{_q(c)} = {int(v)}" for c, v in zip(spec.key, k)) + ")"
                       for k in keys)


# Rewriting keys in place, inside the server: the source's current rows for the keys are staged in a temporary
# table of the target's session (a consistent read, as INSERT ... SELECT under READ COMMITTED is: no lock on
# nova_api, where a multi-table UPDATE joining nova_api's table would share-lock its rows), then the target's
# rows are deleted where the source has none, updated where both have one (InnoDB leaves equal rows alone and
# touches only the indexes of changed columns), inserted where only the source has one.
STAGE = "fastmigrate_fresh"


def stage(spec: TableSpec, source_db: str, keys: Sequence[Key]) -> str:
    return (f"CREATE TEMPORARY TABLE {_q(STAGE)} (PRIMARY KEY ({_order(spec)})) SELECT {_columns(spec.columns)} "
            f"FROM {_q(source_db)}.{_q(spec.name)} WHERE {keys_in(spec, keys)}")


def delete_unstaged(spec: TableSpec, keys: Sequence[Key]) -> str:
    return (f"DELETE `t` FROM {_q(spec.name)} AS `t` LEFT JOIN {_q(STAGE)} AS `f` USING ({_order(spec)}) "
            f"WHERE ({keys_in(spec, keys, 't')}) AND `f`.{_q(spec.key[0])} IS NULL")


def update_from_stage(spec: TableSpec) -> str:
    values = ", ".join(f"`t`.{_q(c)} = `f`.{_q(c)}" for c in spec.columns if c not in spec.key)
    return f"UPDATE {_q(spec.name)} AS `t` JOIN {_q(STAGE)} AS `f` USING ({_order(spec)}) SET {values}"


def insert_unstaged(spec: TableSpec) -> str:
    return (f"INSERT INTO {_q(spec.name)} ({_columns(spec.columns)}) SELECT "
            f"{', '.join(f'`f`.{_q(c)}' for c in spec.columns)} FROM {_q(STAGE)} AS `f` LEFT JOIN {_q(spec.name)} "
            f"AS `t` USING ({_order(spec)}) WHERE `t`.{_q(spec.key[0])} IS NULL")


def drop_stage() -> str:
    return f"DROP TEMPORARY TABLE IF EXISTS {_q(STAGE)}"
