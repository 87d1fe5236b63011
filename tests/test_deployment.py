"""Whole deployments: database URLs from nova.conf, every cell of cell_mappings at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fastmigrate.cli import main
from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.deployment import CELL0, Cell, cell_mappings, choose_cells, format_db_url, read_config
from fastmigrate.errors import UsageError
from fastmigrate.fleet import FleetSpec, check_fleet, create_fleet

from .conftest import summary

NOVA_CONF = """[DEFAULT]
debug = true

[database]
connection = mysql+pymysql://nova:p%40ss@db.example:3307/nova?charset=utf8

[api_database]
connection = mysql+pymysql://nova:first@db.example/nova_api
"""


@pytest.mark.pure
def test_config_files_are_read_as_oslo_config_does(tmp_path: Path) -> None:
    first, second = tmp_path / "nova.conf", tmp_path / "nova-secrets.conf"
    first.write_text(NOVA_CONF)
    second.write_text("[api_database]\nconnection = \"mysql+pymysql://nova:second@db.example/nova_api\"\n"
                      "[placement_database]\nconnection = mysql+pymysql://placement:x@db.example/placement\n")
    config = read_config([str(first), str(second)])
    assert config.database == "mysql+pymysql://nova:p%40ss@db.example:3307/nova?charset=utf8"  # no interpolation
    assert config.api_database == "mysql+pymysql://nova:second@db.example/nova_api"  # later wins, quotes gone
    assert config.placement_database == "mysql+pymysql://placement:x@db.example/placement"
    assert read_config([str(second)]).database is None
    with pytest.raises(UsageError, match="no such file"):
        read_config([str(tmp_path / "missing.conf")])
    (tmp_path / "bad.conf").write_text("connection = x\n")
    with pytest.raises(UsageError, match="cannot read it as an INI file"):
        read_config([str(tmp_path / "bad.conf")])


TEMPLATE = "{scheme}://{username}:{password}@{hostname}:{port}/nova_cell1?{query}"


@pytest.mark.pure
def test_cell_templates_are_filled_from_the_database_url_as_nova_does() -> None:
    default = "mysql+pymysql://nova:p%40ss@db.example:3307/nova?charset=utf8"
    assert format_db_url(TEMPLATE, default) == "mysql+pymysql://nova:p%40ss@db.example:3307/nova_cell1?charset=utf8"
    with pytest.raises(UsageError, match="names 'user'"):
        format_db_url("{scheme}://{user}@x/y", default)


@pytest.mark.pure
def test_cells_are_chosen_by_name_or_uuid() -> None:
    cells = [Cell(CELL0, None, "sqlite:///0"), Cell("1" * 32, "cell1", "sqlite:///1"),
             Cell("2" * 32, "cell2", "sqlite:///2")]
    assert choose_cells(cells, []) == cells
    assert [c.label for c in choose_cells(cells, ["2" * 32, "cell0"])] == ["cell0", "cell2"]
    with pytest.raises(UsageError, match=r"--cell cell9: no such cell.*cell1 \(1111"):
        choose_cells(cells, ["cell9"])


async def _deployment(tmp_path: Path, cells: dict[str, str]) -> str:
    """A nova_api (SQLite) whose cell_mappings lists ``cells`` (name -> database_connection): its URL."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    engine = connect_engine(normalize_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(cell_mappings.metadata.create_all)
        for i, (name, connection) in enumerate(cells.items()):
            uuid = CELL0 if name == "cell0" else f"{i:032d}"
            await conn.execute(cell_mappings.insert().values(id=i + 1, uuid=uuid, name=name,
                                                             database_connection=connection))
    await engine.dispose()
    return url


async def _cell(tmp_path: Path, name: str, instances: int) -> tuple[str, object]:
    url = f"sqlite:///{tmp_path / (name + '.db')}"
    engine = connect_engine(normalize_url(url))
    fleet = await create_fleet(engine, FleetSpec(instances=instances, seed=len(name), busy=0.0, deleted=0.0))
    await engine.dispose()
    return url, fleet


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_all_cells_migrates_every_mapped_cell_and_adds_them_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cell0, _), (cell1, fleet1), (cell2, fleet2) = [await _cell(tmp_path, n, k) for n, k in
                                                    (("cell0", 0), ("cell1", 120), ("cell2", 80))]
    api = await _deployment(tmp_path, {"cell0": cell0, "cell1": cell1, "cell2": cell2})
    code, out, _ = await asyncio.to_thread(_cli, capsys, "flavors", "--all-cells", "--api-db", api, "--json")
    doc = summary(out)
    assert code == 0 and [db["cell"] for db in doc["databases"]] == ["cell0", "cell1", "cell2"]
    assert doc["total"]["migrated"] == sum(db["migrated"] for db in doc["databases"]) == 200
    for url, fleet in ((cell1, fleet1), (cell2, fleet2)):
        engine = connect_engine(normalize_url(url))
        assert await check_fleet(engine, fleet) == []  # type: ignore[arg-type]
        await engine.dispose()
    code, out, _ = await asyncio.to_thread(_cli, capsys, "verify", "--all-cells", "--api-db", api)
    assert code == 0 and "cell1: sqlite:///" in out
    code, out, _ = await asyncio.to_thread(_cli, capsys, "flavors", "--status", "--cell", "cell2", "--api-db", api)
    assert code == 0 and "cell2" in out and "cell1" not in out and "total" not in out


async def test_a_cell_that_cannot_be_reached_is_reported_and_the_others_go_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell1, fleet1 = await _cell(tmp_path, "cell1", 50)
    lost = "mysql+pymysql://nova:S3cretPass@127.0.0.1:1/nova_cell2"
    api = await _deployment(tmp_path, {"cell1": cell1, "cell2": lost})
    code, out, err = await asyncio.to_thread(_cli, capsys, "flavors", "--all-cells", "--api-db", api)
    assert code == 2 and "cannot connect" in out and "S3cretPass" not in out + err
    lines = out.splitlines()
    assert any(line.startswith("cell1 ") for line in lines) and any(line.startswith("total ") for line in lines)
    engine = connect_engine(normalize_url(cell1))
    assert await check_fleet(engine, fleet1) == []
    await engine.dispose()


async def test_nova_conf_names_the_databases_and_fills_cell_templates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell1, fleet1 = await _cell(tmp_path, "cell1", 60)
    api = await _deployment(tmp_path, {"cell1": "sqlite:////{path}"})  # nova fills it from [database]
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[database]\nconnection = {cell1}\n[api_database]\nconnection = {api}\n")
    code, out, _ = await asyncio.to_thread(_cli, capsys, "flavors", "--all-cells", "--config-file", str(conf),
                                           "--json")
    doc = summary(out)
    assert code == 0 and doc["databases"][0]["database"] == cell1 and doc["databases"][0]["migrated"] == 60
    code, out, _ = await asyncio.to_thread(_cli, capsys, "verify", "--config-file", str(conf))  # [database] only
    assert code == 0 and cell1 in out
    engine = connect_engine(normalize_url(cell1))
    assert await check_fleet(engine, fleet1) == []
    await engine.dispose()


async def test_ways_of_naming_databases_that_cannot_work_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = await _deployment(tmp_path, {"cell1": "{scheme}://{hostname}/nova"})
    for args, message in [
        (("--db", "sqlite:///x.db", "--all-cells", "--api-db", api), "name the databases one way"),
        (("--all-cells",), "give --api-db URL"),
        ((), "name the databases: --db URL"),
        (("--all-cells", "--api-db", api), "cell cell1: its database_connection is a template"),
        (("--cell", "cell7", "--api-db", f"sqlite:///{tmp_path / 'api.db'}"), "--cell cell7: no such cell"),
    ]:
        code, _, err = await asyncio.to_thread(_cli, capsys, "flavors", *args)
        assert code == 127 and message in err, (args, err)
