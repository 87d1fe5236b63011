"""The command line: exit codes, output formats, masking. Runs main() in-process, and once as a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from fastmigrate.cli import main
from fastmigrate.fleet import FleetSpec, create_fleet
from fastmigrate.report import format_table
from fastmigrate.results import DatabaseResult, RunResult
from fastmigrate.transform import Broken

from .conftest import Database, events, summary


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def fleet(db: Database, **spec: Any) -> None:
    await create_fleet(db.engine, FleetSpec(instances=300, seed=1, **spec))


@pytest.mark.parametrize(("spec", "extra", "code"), [
    (dict(busy=0.0, deleted=0.0), (), 0),
    (dict(busy=0.05, deleted=0.0), (), 1),
    (dict(busy=0.0, deleted=0.0), ("--max-count", "10"), 1),
    (dict(busy=0.0, deleted=0.0, broken=2), (), 2),
    (dict(busy=0.05, deleted=0.0, broken=2), (), 2),
])
async def test_exit_codes(db: Database, capsys: pytest.CaptureFixture[str], spec: dict[str, Any],
                          extra: tuple[str, ...], code: int) -> None:
    await fleet(db, **spec)
    got, out, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", db.url, *extra)
    assert got == code, out + err
    assert f"exit code {code}" in out


@pytest.mark.parametrize("args", [
    ("flavors",),  # no --db
    ("flavors", "--db", "sqlite:///x.db", "--batch-size", "0"),
    ("flavors", "--db", "sqlite:///x.db", "--batch-size", "ten"),
    ("flavors", "--db", "sqlite:///x.db", "--max-count", "-1"),
    ("flavors", "--db", "not a url"),
    ("flavors", "--db", "oracle://scott:tiger@db/orcl"),
    ("flavors", "--db", "sqlite://"),
    ("flavors", "--db", "sqlite:///x.db", "--max-load", "Threads_running"),
    ("flavors", "--db", "sqlite:///x.db", "--sleep", "-1"),
    ("flavors", "--db", "sqlite:///x.db", "--statement-timeout", "soon"),
    ("nonsense",),
])
def test_invalid_usage_exits_127(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        code = main(list(args))
        raise SystemExit(code)
    assert exc.value.code == 127
    assert "tiger" not in capsys.readouterr().err


async def test_not_a_nova_database_exits_127(sqlite_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    await sqlite_db.execute("CREATE TABLE t (id INTEGER)")
    code, out, _ = await asyncio.to_thread(cli, capsys, "flavors", "--db", sqlite_db.url)
    assert code == 127
    assert "not a nova cell database" in out and "table instances is missing" in out


def test_unreachable_server_exits_2_and_never_shows_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "flavors", "--db", "mysql+pymysql://nova:S3cretPass@127.0.0.1:1/nova", "--json")
    assert code == 2
    doc = summary(out)
    assert "cannot connect" in doc["databases"][0]["error"]
    assert "S3cretPass" not in out + err
    assert doc["databases"][0]["database"] == "mysql+pymysql://nova:***@127.0.0.1:1/nova"


def test_a_run_that_cannot_start_still_prints_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "flavors", "--db", "oracle://nova:S3cretPass@db/nova", "--json")
    doc = summary(out)
    assert code == doc["exit_code"] == 127 and doc["command"] == "flavors"
    assert doc["error"] in err and "S3cretPass" not in out + err
    code, out, _ = cli(capsys, "placement", "audit", "--api-db", "mysql+pymysql://nova:S3cretPass@127.0.0.1:1/api",
                       "--json")
    doc = summary(out)
    assert code == doc["exit_code"] == 2 and doc["command"] == "placement audit" and "S3cretPass" not in out


@pytest.mark.pure
def test_labels_mask_passwords_and_keep_the_rest_as_written() -> None:
    from fastmigrate.db import mask

    assert mask("mysql+pymysql://nova:s3cr%40t@db/nova?charset=utf8") == "mysql+pymysql://nova:***@db/nova?charset=utf8"
    assert mask("sqlite:///file:/srv/nova.db?mode=ro&uri=true") == "sqlite:///file:/srv/nova.db?mode=ro&uri=true"
    assert mask("mysql+pymysql://nova@db/nova") == "mysql+pymysql://nova@db/nova"


def test_nova_conf_urls_work_as_pasted() -> None:
    from fastmigrate.db import normalize_url

    url = normalize_url("mysql+pymysql://nova:pw@db:3306/nova?charset=utf8&plugin=dbcounter")
    assert url.drivername == "mysql+asyncmy"
    assert dict(url.query) == {"charset": "utf8"}
    assert normalize_url("sqlite:////var/lib/nova/nova.sqlite").drivername == "sqlite+aiosqlite"


def test_an_unexpected_error_exits_2_not_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import fastmigrate.cli

    async def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fastmigrate.cli, "migrate_flavors", boom)
    code, _, err = cli(capsys, "flavors", "--db", "sqlite:///x.db")
    assert code == 2
    assert "RuntimeError: boom" in err and "unexpected error" in err


def test_a_signal_outside_the_runs_handling_exits_1_without_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # as when a second Ctrl-C lands while the run removes its signal handlers, at its very end
    import fastmigrate.cli

    async def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fastmigrate.cli, "migrate_flavors", interrupted)
    code, out, err = cli(capsys, "flavors", "--db", "sqlite:///x.db", "--json")
    assert code == 1 and "Traceback" not in err and "interrupted; committed batches are kept" in err
    assert summary(out)["event"] == "error" and summary(out)["exit_code"] == 1


async def test_json_is_a_stream_of_events_ending_with_the_summary(db: Database,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    await fleet(db, busy=0.01, deleted=0.0, broken=2)
    code, out, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", db.url, "--json", "--dry-run",
                                             "--batch-size", "50", "--progress-interval", "0")
    found = events(out)
    assert [e["event"] for e in found][0] == "start" and found[-1]["event"] == "summary"
    assert found[0]["argv"][:3] == ["flavors", "--db", db.url]
    progress = [e for e in found if e["event"] == "progress"]
    assert len(progress) >= 6 and progress[-1]["done"] == progress[-1]["total"] == 300
    assert all(e["track"] == db.url and e["unit"] == "instances" for e in progress)
    doc = found[-1]
    assert code == 2 and doc["exit_code"] == 2 and doc["dry_run"] is True
    (entry,) = doc["databases"]
    assert entry["broken"] == 2 and entry["busy"] >= 1
    problems = [e for e in found if e["event"] == "problem"]
    assert sorted(e["kind"] for e in problems) == ["broken"] * 2 + ["busy"] * entry["busy"]
    # each once, though seen at every progress callback
    assert {e["instance"] for e in problems} == {b["uuid"] for b in entry["broken_instances"]} | set(
        entry["busy_instances"])
    assert err == ""  # not a terminal: no display, no log lines but warnings


async def test_verbose_logs_each_step_with_passwords_masked(mariadb_db: Database,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    await fleet(mariadb_db, busy=0.0, deleted=0.0)
    url = mariadb_db.url.replace("root@", "root:Sup3rSecret@")
    code, out, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", url, "--verbose", "--json")
    assert code == 2 and "Sup3rSecret" not in out + err  # root has no password: access denied
    assert events(out)[0]["argv"][2] == url.replace("Sup3rSecret", "***") and "ERROR" in err
    code, _, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", mariadb_db.url, "-v", "--dry-run")
    assert code == 1 and "fastmigrate: INFO: " in err and "300 instances without a flavor blob (dry run)" in err
    code, _, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", mariadb_db.url, "--quiet", "--dry-run")
    assert code == 1 and err == ""


def test_report_table() -> None:
    db = DatabaseResult(database="mysql+pymysql://nova:***@db/nova", found=1200, migrated=1150,
                        busy=["b-1"] * 40, broken=[Broken("u-1", "why")] * 10, remaining=50, seconds=2.0)
    text = format_table(RunResult([db]))
    assert text == (
        "database                          found  migrated  busy  broken  remaining  seconds  instances/s\n"
        "--------------------------------  -----  --------  ----  ------  ---------  -------  -----------\n"
        "mysql+pymysql://nova:***@db/nova  1,200     1,150    40      10         50      2.0          575\n"
        "\n"
        "mysql+pymysql://nova:***@db/nova: 10 instance(s) need manual intervention (left untouched):\n"
        + "  u-1: why\n" * 10 +
        "\n"
        "mysql+pymysql://nova:***@db/nova: 40 busy instance(s) skipped (task_state set, or vm_state "
        "rescued/resized); rerun when they settle, or use --force\n"
        "\n"
        "exit code 2\n")


def test_console_script_runs(tmp_path: Any) -> None:
    done = subprocess.run([sys.executable, "-m", "fastmigrate", "demo", "--instances", "400",
                           "--path", str(tmp_path / "demo.db")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check: OK" in done.stdout


@pytest.mark.mariadb
async def test_a_read_only_user_is_refused_before_any_write(mariadb_db: Database,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy.engine import make_url

    await fleet(mariadb_db, busy=0.0, deleted=0.0)
    schema = make_url(mariadb_db.url).database
    await mariadb_db.execute("CREATE USER IF NOT EXISTS 'fm_reader'@'%' IDENTIFIED BY 'Rd0nly'")
    await mariadb_db.execute(f"GRANT SELECT ON {schema}.* TO 'fm_reader'@'%'")
    try:
        url = make_url(mariadb_db.url).set(username="fm_reader", password="Rd0nly").render_as_string(False)
        digest = await mariadb_db.checksum()
        code, out, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", url)
        assert code == 2
        assert "may not write (UPDATE on instance_extra refused" in out and "GRANT SELECT, INSERT, UPDATE" in out
        assert "Rd0nly" not in out + err
        assert await mariadb_db.checksum() == digest
        code, out, _ = await asyncio.to_thread(cli, capsys, "flavors", "--db", url, "--status")
        assert code == 1  # looking needs no more than SELECT
    finally:
        await mariadb_db.execute("DROP USER IF EXISTS 'fm_reader'@'%'")


async def test_a_read_only_sqlite_file_is_refused(sqlite_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    await fleet(sqlite_db, busy=0.0, deleted=0.0)
    digest = await sqlite_db.checksum()
    path = sqlite_db.url.removeprefix("sqlite:///")
    code, out, _ = await asyncio.to_thread(cli, capsys, "flavors", "--db", f"sqlite:///file:{path}?mode=ro&uri=true")
    assert code == 2 and "read-only" in out
    assert await sqlite_db.checksum() == digest


async def test_one_invalid_database_means_none_is_touched(db: Database, sqlite_db: Database,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    await fleet(db, busy=0.0, deleted=0.0)
    await sqlite_db.execute("CREATE TABLE unrelated (id INTEGER)")
    digest = await db.checksum()
    code, out, _ = await asyncio.to_thread(cli, capsys, "flavors", "--db", db.url, "--db", sqlite_db.url)
    assert code == 127
    assert "not a nova cell database" in out and "not started: another --db is invalid" in out
    assert await db.checksum() == digest


@pytest.mark.mariadb
async def test_a_bad_password_exits_2_with_the_fix_and_masked(mariadb_db: Database,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(mariadb_db.url).set(username="fm_nobody", password="Wr0ngPass").render_as_string(False)
    code, out, err = await asyncio.to_thread(cli, capsys, "flavors", "--db", url)
    assert code == 2
    assert "cannot connect (1045: Access denied" in out and "check host, port, user and password" in out
    assert "Wr0ngPass" not in out + err and "fm_nobody:***@" in out


async def test_verify_command(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    await fleet(db, busy=0.05, deleted=0.0)
    code, _, _ = await asyncio.to_thread(cli, capsys, "flavors", "--db", db.url)
    assert code == 1
    code, out, _ = await asyncio.to_thread(cli, capsys, "verify", "--db", db.url, "--json",
                                           "--progress-interval", "0")
    doc = summary(out)
    assert code == 3 and doc["exit_code"] == 3 and doc["command"] == "verify"
    progress = [e for e in events(out) if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == doc["databases"][0]["instances"] == 300
    assert {m["problem"] for m in doc["databases"][0]["mismatched_instances"]} == {"no flavor blob"}
    await asyncio.to_thread(cli, capsys, "flavors", "--db", db.url, "--force")
    code, out, _ = await asyncio.to_thread(cli, capsys, "verify", "--db", db.url)
    assert code == 0 and "exit code 0" in out


@pytest.mark.pure
def test_progress_counts_every_instance_dealt_with_and_names_the_cell() -> None:
    from fastmigrate.output import Track
    from fastmigrate.report import database_problems, database_tracks

    db = DatabaseResult(database="sqlite:///nova.db", pending_before=10_000, migrated=2_000, busy=["b"] * 100,
                        broken=[Broken("x", "no instance_type_memory_mb")], skipped=5)
    assert database_tracks(db) == [Track("sqlite:///nova.db", 2_106, 10_000, "instances")]
    db.cell = "cell1"
    assert database_tracks(db)[0].key == "cell1"
    seen: dict[tuple[str, str], int] = {}
    found = database_problems(db, seen)
    assert found[0] == ("cell1", "broken", "x", "no instance_type_memory_mb")
    assert [p[1] for p in found] == ["broken"] + ["busy"] * 100
    assert database_problems(db, seen) == []  # each reported once
    db.busy.append("late")
    assert database_problems(db, seen) == [("cell1", "busy", "late", found[1][3])]


@pytest.mark.pure
def test_rate_and_eta_follow_the_recent_pace_not_the_average() -> None:
    from fastmigrate.output import RecentRate

    now = [0.0]
    rate = RecentRate(window=30.0, clock=lambda: now[0])
    assert rate.rate == 0.0 and rate.eta(0, 100) is None
    for second in range(0, 61, 5):  # 100/s for a minute
        now[0] = second
        rate.update(second * 100)
    for second in range(65, 131, 5):  # then 10/s
        now[0] = second
        rate.update(6_000 + (second - 60) * 10)
    assert rate.rate == pytest.approx(10.0, rel=0.2)  # the average since the start would say 51/s
    assert rate.eta(6_700, 7_700) == pytest.approx(100.0, rel=0.2)
    assert rate.eta(6_700, None) is None


@pytest.mark.pure
def test_json_events_are_one_per_line_and_progress_is_spaced() -> None:
    import io

    from fastmigrate.output import Events, Track

    out, now = io.StringIO(), [0.0]
    events = Events(out, "flavors", interval=5.0, clock=lambda: now[0])
    events.emit("start", argv=["flavors"])
    for second in range(0, 12):
        now[0] = second
        events.progress([Track("cell1", second * 10, 200, "instances"), Track("cell2", 0, None, "instances")])
    events.progress([Track("cell1", 150, 200, "instances")], final=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    progress = [e for e in lines if e["event"] == "progress" and e["track"] == "cell1"]
    assert [e["done"] for e in progress] == [0, 50, 100, 150]  # at 0, 5, 10 s, then the final one
    assert progress[2]["rate"] == 10.0 and progress[2]["eta_seconds"] == 10
    assert all(e["schema_version"] == 2 and e["command"] == "flavors" for e in lines)
    assert [e for e in lines if e.get("track") == "cell2"][0]["eta_seconds"] is None
