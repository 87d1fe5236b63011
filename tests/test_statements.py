"""Statement builders compiled against the MySQL and SQLite dialects: what the server will be sent."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.dialects import mysql, sqlite

from fastmigrate import reader

pytestmark = pytest.mark.pure


def sql(stmt: object, dialect: object) -> str:
    text = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    return text.replace("%%", "%")  # the pyformat drivers' escaping of a literal %


@pytest.mark.parametrize("dialect", [mysql.dialect(), sqlite.dialect()], ids=["mysql", "sqlite"])
@pytest.mark.parametrize("include_deleted", [False, True])
def test_page_is_keyset_without_offset_or_row_constructors(dialect: object, include_deleted: bool) -> None:
    text = sql(reader._page_query(include_deleted, 1234, 500), dialect)
    assert "instances.id > 1234" in text
    assert not re.search(r"OFFSET (?!0\b)", text.upper())  # SQLite's compiler spells out a harmless OFFSET 0
    assert not re.search(r"\(\s*[\w.]+\s*,\s*[\w.]+\s*\)\s*>", text)  # no (a, b) > (x, y)
    assert "LIMIT 500" in text
    assert ("instances.deleted = 0" in text) is (not include_deleted)
    assert "flavor IS NOT NULL" in text  # only a flag comes back, never the blob text


def test_flavor_rows_filter_escapes_the_like_wildcard() -> None:
    text = sql(reader.sysmeta_where(["u-1"], include_deleted=False), mysql.dialect())
    for prefix in ("instance!_type!_%", "old!_instance!_type!_%", "new!_instance!_type!_%"):
        assert f"LIKE '{prefix}' ESCAPE '!'" in text
    assert "instance_system_metadata.deleted = 0" in text
    assert "deleted = 0" not in sql(reader.sysmeta_where(["u-1"], include_deleted=True), mysql.dialect())


def test_pending_count_is_sliced_by_primary_key() -> None:
    text = sql(reader.pending_query(False, 0, 200_000), mysql.dialect())
    assert "instances.id > 0 AND instances.id <= 200000" in text
    assert "NOT (EXISTS" in text
