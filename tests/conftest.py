"""Fixtures: fresh nova cell databases on SQLite and on MariaDB.

MariaDB tests need a server (FASTMIGRATE_MYSQL_URL, default mysql+pymysql://root@127.0.0.1:3306). Where
none answers they are skipped, loudly; with FASTMIGRATE_REQUIRE_MARIADB=1 (as .ci/run sets) they fail
instead, and so do the nova compatibility tests without the nova package (FASTMIGRATE_REQUIRE_NOVA=1).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.placement_fleet import PlacementFleet, create_placement_fleet
from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.schema import instance_extra, instances, sysmeta

MYSQL_URL = os.environ.get("FASTMIGRATE_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
REQUIRE_MARIADB = os.environ.get("FASTMIGRATE_REQUIRE_MARIADB") == "1"
_skipped: list[str] = []


def _mariadb_reachable() -> str | None:
    import pymysql

    url = make_url(MYSQL_URL)
    try:
        pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
                        password=url.password or "", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server for these tests
        return str(exc)
    return None


_MARIADB_PROBLEM = _mariadb_reachable()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_sep("!", "MariaDB TESTS WERE SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"{len(_skipped)} MariaDB test(s) did not run: {_MARIADB_PROBLEM}")
        terminalreporter.write_line("Start MariaDB (see README) or set FASTMIGRATE_MYSQL_URL.")


def _need_mariadb(name: str) -> None:
    if _MARIADB_PROBLEM is None:
        return
    if REQUIRE_MARIADB:
        pytest.fail(f"MariaDB required (FASTMIGRATE_REQUIRE_MARIADB=1) but unreachable: {_MARIADB_PROBLEM}")
    _skipped.append(name)
    pytest.skip(f"MariaDB unreachable at {MYSQL_URL}: {_MARIADB_PROBLEM}")


@dataclass
class Database:
    """A fresh, empty database: its URL (as an operator would write it) and an engine on it."""

    backend: str
    url: str
    engine: AsyncEngine

    async def checksum(self, *tables: Any) -> str:
        """A digest of every row of the nova tables: equal digests, equal contents."""
        digest = hashlib.sha256()
        async with self.engine.connect() as conn:
            for table in tables or (instances, sysmeta, instance_extra):
                for row in (await conn.execute(select(table).order_by(table.c.id))):
                    digest.update(repr(row).encode())
        return digest.hexdigest()

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(sql), params)

    async def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        async with self.engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(sql), params)]


DatabaseFactory = Callable[[], "Any"]


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Database]:
    """One fresh database per test, on each backend."""
    async for database in _database(request.param, tmp_path, request.node.name):
        yield database


@pytest.fixture
async def sqlite_db(tmp_path: Any) -> AsyncIterator[Database]:
    async for database in _database("sqlite", tmp_path, "second-sqlite"):
        yield database


@pytest.fixture
async def mariadb_db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Database]:
    async for database in _database("mariadb", tmp_path, request.node.name):
        yield database


async def _database(backend: str, tmp_path: Any, name: str) -> AsyncIterator[Database]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        engine = connect_engine(normalize_url(url))
        yield Database(backend, url, engine)
        await engine.dispose()
        return
    _need_mariadb(name)
    schema = f"fm_test_{uuid.uuid4().hex[:12]}"
    admin = connect_engine(normalize_url(MYSQL_URL))
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE {schema} CHARACTER SET utf8"))
    url = MYSQL_URL.rstrip("/") + "/" + schema
    engine = connect_engine(normalize_url(url))
    try:
        yield Database(backend, url, engine)
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {schema}"))
        await admin.dispose()


@pytest.fixture
async def mariadb_target(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Database]:
    """A second fresh MariaDB database, for commands that copy from one database into another."""
    async for database in _database("mariadb", tmp_path, request.node.name + "-target"):
        yield database


@pytest.fixture
async def mariadb_cells(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[list[Database]]:
    """Two more fresh MariaDB databases: the cell databases of the placement audit."""
    makers = [_database("mariadb", tmp_path, f"{request.node.name}-cell{i}") for i in (1, 2)]
    try:
        yield [await maker.__anext__() for maker in makers]
    finally:
        for maker in makers:
            await maker.aclose()  # its finally drops the database


def events(out: str) -> list[dict[str, Any]]:
    """The NDJSON events a --json run printed, checked for the envelope every event carries."""
    found = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert found and all(e["schema_version"] == 2 and "event" in e and "time" in e for e in found), out
    return found


def summary(out: str) -> dict[str, Any]:
    """The last event of a --json run: its summary (or its error)."""
    last = events(out)[-1]
    assert last["event"] in ("summary", "error"), last
    return last


PLACEMENT_FLEET = PlacementFleet(3_000)  # several chunks per big table at the tests' chunk sizes


@pytest.fixture
async def nova_api(mariadb_db: Database) -> Database:
    """A MariaDB nova_api holding ``PLACEMENT_FLEET``'s placement tables."""
    await create_placement_fleet(mariadb_db.engine, PLACEMENT_FLEET)
    return mariadb_db
