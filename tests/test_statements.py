"""Statement builders compiled against the MySQL and SQLite dialects: what the server will be sent."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.dialects import mysql, sqlite

from datetime import datetime

from fastmigrate import reader, statements

pytestmark = pytest.mark.pure


def sql(stmt: object, dialect: object) -> str:
    text = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    return text.replace("%%", "%")  # the pyformat drivers' escaping of a literal %


@pytest.mark.parametrize("dialect", [mysql.dialect(), sqlite.dialect()], ids=["mysql", "sqlite"])
@pytest.mark.parametrize("include_deleted", [False, True])
def test_page_is_keyset_without_offset_or_row_constructors(dialect: object, include_deleted: bool) -> None:
    text = sql(reader._page_query(include_deleted, 1234, 9999, 500), dialect)
    assert "instances.id > 1234" in text and "instances.id <= 9999" in text
    assert not re.search(r"OFFSET (?!0\b)", text.upper())  # SQLite's compiler spells out a harmless OFFSET 0
    assert not re.search(r"\(\s*[\w.]+\s*,\s*[\w.]+\s*\)\s*>", text)  # no (a, b) > (x, y)
    assert "LIMIT 500" in text
    assert ("instances.deleted = 0" in text) is (not include_deleted)
    assert "flavor IS NOT NULL" in text  # only a flag comes back, never the blob text


def test_flavor_rows_filter_escapes_the_like_wildcard() -> None:
    sql, params = statements.flavor_rows("format", ["u-1", "u-2"], include_deleted=False)
    assert sql == ("SELECT instance_uuid, id, `key`, value, deleted FROM instance_system_metadata "
                   "WHERE instance_uuid IN (%s, %s) AND (`key` LIKE %s ESCAPE '!' OR `key` LIKE %s ESCAPE '!' "
                   "OR `key` LIKE %s ESCAPE '!') AND deleted = 0")
    assert params == ("u-1", "u-2", "instance!_type!_%", "old!_instance!_type!_%", "new!_instance!_type!_%")
    sql, _ = statements.flavor_rows("qmark", ["u-1"], include_deleted=True, columns="instance_uuid, COUNT(*)",
                                    group=True, lock=True)
    assert sql.startswith("SELECT instance_uuid, COUNT(*) FROM") and "?" in sql and "%s" not in sql
    assert "deleted = 0" not in sql and sql.endswith(" GROUP BY instance_uuid FOR UPDATE")


def test_blob_update_is_one_statement_with_strings_as_parameters() -> None:
    now = datetime(2026, 11, 22, 10, 0, 0, 123)
    sql, params = statements.blob_update("format", [(7, '{"cur": 1}'), (9, "x'); DROP TABLE t; --")], now)
    assert sql == ("UPDATE instance_extra SET flavor = CASE id WHEN 7 THEN %s WHEN 9 THEN %s END, updated_at = %s "
                   "WHERE id IN (7, 9) AND flavor IS NULL")
    assert params == ('{"cur": 1}', "x'); DROP TABLE t; --", "2026-11-22 10:00:00")


def test_rows_are_removed_by_primary_key_only() -> None:
    now = datetime(2026, 11, 22)
    assert statements.row_removal("qmark", [3, 5], now, soft=False) == (
        "DELETE FROM instance_system_metadata WHERE id IN (3, 5)", ())
    assert statements.row_removal("qmark", [3], now, soft=True) == (
        "UPDATE instance_system_metadata SET deleted = id, deleted_at = ? WHERE id IN (3) AND deleted = 0",
        ("2026-11-22 00:00:00",))
    with pytest.raises(ValueError):
        statements.row_removal("qmark", ["1) OR (1=1"], now, soft=False)  # type: ignore[list-item]


def test_pending_count_is_sliced_by_primary_key() -> None:
    text = sql(reader.pending_query(False, 0, 200_000), mysql.dialect())
    assert "instances.id > 0 AND instances.id <= 200000" in text
    assert "NOT (EXISTS" in text
