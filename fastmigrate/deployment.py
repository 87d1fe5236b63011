"""Whole deployments: the database URLs in nova.conf (and placement.conf), and the cells nova_api maps.

``--config-file`` reads files as oslo.config does: INI sections, later files win, values taken as written (no
``%`` interpolation: URL-encoded passwords stay as they are), matching quotes around a value removed.
``cell_mappings.database_connection`` may be a template that nova fills from the reading node's
``[database]/connection`` (``{username}``, ``{password}``, ``{hostname}``, ``{port}``, ``{scheme}``, ``{path}``,
``{query}``, ``{fragment}``); fastmigrate fills it the same way (``CellMapping._format_url``).
"""

from __future__ import annotations

import configparser
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import connect_engine, mask, normalize_url, read_catalog, read_rows, schema_problems
from .errors import SchemaError, UsageError

__all__ = ["CELL0", "Cell", "NovaConfig", "cell_mappings", "choose_cells", "format_db_url", "mapped_cells",
           "read_cells", "read_config"]

CELL0 = "00000000-0000-0000-0000-000000000000"
cell_mappings = Table("cell_mappings", MetaData(), Column("id", Integer, primary_key=True),
                      Column("uuid", String(36)), Column("name", String(255)), Column("database_connection", Text),
                      Index("uuid_idx", "uuid", unique=True))


@dataclass(frozen=True, slots=True)
class NovaConfig:
    """The database URLs of a set of oslo.config files (None where no file sets one)."""

    files: tuple[str, ...] = ()
    database: str | None = None  # [database]/connection: this node's cell database
    api_database: str | None = None  # [api_database]/connection: nova_api
    placement_database: str | None = None  # placement.conf's [placement_database]/connection


def read_config(paths: Sequence[str]) -> NovaConfig:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"--config-file {path}: no such file")
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle, source=path)
        except (configparser.Error, OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--config-file {path}: cannot read it as an INI file ({exc})") from None

    def value(section: str) -> str | None:
        text = parser.get(section, "connection", fallback="").strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        return text or None

    return NovaConfig(tuple(paths), value("database"), value("api_database"), value("placement_database"))


def format_db_url(template: str, default: str) -> str:
    """A cell's ``database_connection`` template filled from ``default`` (the node's [database]/connection),
    as nova's ``CellMapping._format_url`` does."""
    parsed = urlparse(default)
    subs = {"username": parsed.username, "password": parsed.password, "hostname": parsed.hostname,
            "port": parsed.port, "scheme": parsed.scheme, "query": parsed.query, "fragment": parsed.fragment,
            "path": parsed.path.lstrip("/")}
    try:
        return template.format(**subs)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"a cell's database_connection template {mask(template)} names {exc}, which nova does "
                         "not fill in") from None


@dataclass(frozen=True, slots=True)
class Cell:
    uuid: str
    name: str | None
    url: str

    @property
    def label(self) -> str:
        """How reports name it: the cell's name, else its uuid (cell0 is named cell0 by nova-manage)."""
        return self.name or ("cell0" if self.uuid == CELL0 else self.uuid)


async def mapped_cells(api_url: str, default_db: str | None = None, wanted: Sequence[str] = ()) -> list[Cell]:
    """The cells nova_api's ``cell_mappings`` lists (see ``read_cells``)."""
    engine = connect_engine(normalize_url(api_url), pool_size=1, read_only=True)
    try:
        return await read_cells(engine, mask(api_url), default_db, "--db", wanted)
    finally:
        await engine.dispose()


async def read_cells(api: AsyncEngine, label: str, default_db: str | None, option: str,
                     wanted: Sequence[str] = ()) -> list[Cell]:
    """The cells of ``cell_mappings`` named in ``wanted`` (every one, cell0 included, when empty), in id order,
    templates filled from ``default_db``. ``option`` is how the command names databases by hand (the way out
    when a mapping cannot be used)."""
    found, _ = await read_catalog(api, label, ["cell_mappings"])
    if problems := schema_problems(found, {"cell_mappings": {"uuid", "name", "database_connection"}}):
        raise SchemaError(f"{label}: not a nova_api database ({'; '.join(problems)}); point --api-db at "
                          "[api_database]/connection in nova.conf")
    rows = await read_rows(api, select(cell_mappings.c.uuid, cell_mappings.c.name,
                                       cell_mappings.c.database_connection).order_by(cell_mappings.c.id))
    if not rows:
        raise UsageError(f"{label}: cell_mappings is empty; name the cell databases with {option}")
    cells = []
    for cell in choose_cells([Cell(str(uuid), name, str(url or "")) for uuid, name, url in rows], wanted):
        if not cell.url:
            raise UsageError(f"cell {cell.label}: cell_mappings has no database_connection; name every cell's "
                             f"database with {option}")
        if "{" in cell.url:
            if default_db is None:
                raise UsageError(f"cell {cell.label}: its database_connection is a template ({mask(cell.url)}) "
                                 "that nova fills in from its own [database]/connection: give --config-file with "
                                 f"nova.conf, or name every cell's database with {option}")
            cell = Cell(cell.uuid, cell.name, format_db_url(cell.url, default_db))
        cells.append(cell)
    return cells


def choose_cells(cells: Sequence[Cell], wanted: Sequence[str]) -> list[Cell]:
    """The cells named (by name or uuid) in ``wanted``, in ``cells``' order; all of them when none is named."""
    if not wanted:
        return list(cells)
    unknown = [w for w in wanted if not any(w in (c.name, c.uuid, c.label) for c in cells)]
    if unknown:
        known = ", ".join(f"{c.label} ({c.uuid})" for c in cells)
        raise UsageError(f"--cell {', '.join(unknown)}: no such cell in cell_mappings; the cells are: {known}")
    return [c for c in cells if any(w in (c.name, c.uuid, c.label) for w in wanted)]


async def cell_databases(db: Sequence[str], config: NovaConfig, *, api_db: str | None = None,
                         all_cells: bool = False, cells: Sequence[str] = ()) -> list[tuple[str, str | None]]:
    """The databases a flavor command works on, as (URL, cell name or None): those named with ``--db``; or with
    ``--all-cells`` / ``--cell``, the cells nova_api maps (``--api-db``, else the config's [api_database]);
    or the config's [database]/connection."""
    if db and (all_cells or cells):
        raise UsageError("name the databases one way: --db URL..., or --all-cells / --cell NAME with --api-db or "
                         "--config-file")
    if all_cells or cells:
        api = api_db or config.api_database
        if api is None:
            raise UsageError("--all-cells and --cell read nova_api's cell_mappings: give --api-db URL, or "
                             "--config-file with nova.conf's [api_database]/connection")
        return [(cell.url, cell.label) for cell in await mapped_cells(api, config.database, cells)]
    if db:
        return [(url, None) for url in db]
    if config.database:
        return [(config.database, None)]
    where = f" ({', '.join(config.files)} has no [database]/connection)" if config.files else ""
    raise UsageError(f"name the databases: --db URL, --config-file nova.conf, or --all-cells with --api-db "
                     f"URL{where}")
