"""The placement benchmark in one command, on one generated nova_api: ``mysqldump | mysql`` of the 11 tables
(upstream's way); fastmigrate's copy with change tracking, and the same copy through fastmigrate's process
(``--through-client``, as between two servers); a 1% change at the source and the sync that follows the change
log; verify; the tracking removed, another 1% change and the sync that compares checksums; verify again;
audit and audit --delete.

    python -m benchmarks.placement --consumers 1000000

A pristine nova_api ``fm_papi_N`` with its two cells ``fm_pcell1_N``/``fm_pcell2_N`` is generated inside
MariaDB once (kept between runs; ``--regenerate`` rebuilds it) and copied into ``fm_papi_work`` before the run,
so that the sync can change the source. Each fastmigrate command runs as the operator runs it, through
``benchmarks.measure`` (peak RSS, CPU seconds); mariadbd's CPU seconds come from ``/proc``. Results go to
``benchmarks/placement_results.json`` and are printed as a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from benchmarks.placement_fleet import (NOVA_SIDE, ORPHANED, PlacementFleet, create_nova_side,
                                        create_placement_fleet, sql_uuid)
from benchmarks.run import _async, _machine, _mariadbd_cpu, _since, _sql, copy_database
from fastmigrate.placement import audit
from fastmigrate.placement.schema import COPY_ORDER

ROOT = Path(__file__).resolve().parent.parent
API_TABLES = tuple(table.name for table in audit.API_TABLES)
CELL_TABLES = tuple(table.name for table in audit.CELL_TABLES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="mysql+pymysql://root@127.0.0.1:3306", help="the server (no database)")
    parser.add_argument("--consumers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--buffer-pool", type=int, default=8 << 30, help="innodb_buffer_pool_size to set (bytes)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the pristine databases")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "placement_results.json"))
    args = parser.parse_args()
    server = make_url(args.url)
    _sql(server, f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool}")
    fleet = PlacementFleet(args.consumers, args.seed)
    results = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(server),
               "consumers": fleet.consumers, "rows": fleet.row_counts}
    results.update(_measure(server, fleet, args.regenerate))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(_markdown(results))
    return 0


def _db(server: URL, name: str) -> str:
    return server.set(database=name).render_as_string(hide_password=False)


def _generate(server: URL, fleet: PlacementFleet, api: str, cells: list[str]) -> None:
    _sql(server, *(s for name in [api, *cells] for s in (f"DROP DATABASE IF EXISTS {name}",
                                                          f"CREATE DATABASE {name} CHARACTER SET utf8")))

    async def work(_: Any) -> None:
        from fastmigrate.db import connect_engine, normalize_url

        engines = [connect_engine(normalize_url(_db(server, name)), statement_timeout=0) for name in [api, *cells]]
        try:
            await create_placement_fleet(engines[0], fleet)
            # cell_mappings names the work copies of the cells: the audit reads those
            work_cells = [(e, _db(server, f"{name}_work")) for e, name in zip(engines[1:], cells)]
            await create_nova_side(engines[0], work_cells, fleet)
        finally:
            for engine in engines:
                await engine.dispose()

    asyncio.run(_async(server, work))


def _fastmigrate(*args: str) -> dict[str, Any]:
    """One fastmigrate command, timed, through benchmarks.measure; its JSON document and the figures."""
    with tempfile.NamedTemporaryFile(suffix=".json") as measured:
        before, began = _mariadbd_cpu(), time.monotonic()
        done = subprocess.run([sys.executable, "-m", "benchmarks.measure", measured.name, sys.executable, "-m",
                               "fastmigrate", *args, "--json"], capture_output=True, text=True)
        wall = time.monotonic() - began
        usage = json.loads(Path(measured.name).read_text())
    if done.returncode not in (0, 3):
        raise SystemExit(f"fastmigrate {shlex.join(args)} failed ({done.returncode}): {done.stderr}")
    return {"wall_seconds": round(wall, 2), "exit_code": done.returncode, "mariadbd_cpu_seconds": _since(before),
            "cpu_seconds": round(usage["cpu_seconds"], 1), "peak_rss_mb": round(usage["peak_rss_kb"] / 1024),
            "document": json.loads(done.stdout.splitlines()[-1])}  # the summary event


def _dump_load(server: URL, api: str, target: str) -> dict[str, Any]:
    """Upstream's way: mysqldump of the 11 tables piped into mysql (tables created as nova_api has them)."""
    _sql(server, f"DROP DATABASE IF EXISTS {target}", f"CREATE DATABASE {target} CHARACTER SET utf8")
    login = ["-h", server.host or "127.0.0.1", "-P", str(server.port or 3306), "-u", server.username or "root"]
    if server.password:
        login.append(f"-p{server.password}")
    before, began = _mariadbd_cpu(), time.monotonic()
    dump = subprocess.Popen(["mysqldump", *login, "--opt", api, *COPY_ORDER], stdout=subprocess.PIPE)
    load = subprocess.run(["mysql", *login, target], stdin=dump.stdout, capture_output=True, text=True)
    assert dump.stdout is not None
    dump.stdout.close()
    if dump.wait() or load.returncode:
        raise SystemExit(f"mysqldump | mysql failed: {load.stderr}")
    return {"wall_seconds": round(time.monotonic() - began, 2), "mariadbd_cpu_seconds": _since(before)}


# A 1% change of the allocations at the source, spread over the whole table as an outage's worth of nova
# activity is: 0.4% updated, 0.4% deleted, 0.2% inserted (a VGPU more for some live instances), and 1% of the
# consumers' generations bumped. ``round`` 0 and 1 change different rows.
def _change_statements(api: str, fleet: PlacementFleet, round_: int) -> list[str]:
    n, added = 3 * fleet.consumers, fleet.consumers * 3 // 500
    owner = sql_uuid("consumer", fleet.seed, "seq * 100 + 50")  # live instances (see NOVA_SIDE)
    return [
        f"UPDATE {api}.allocations SET used = used + 1 WHERE id % 250 = {2 * round_}",
        f"DELETE FROM {api}.allocations WHERE id % 250 = {2 * round_ + 1}",
        f"INSERT INTO {api}.allocations (id, resource_provider_id, consumer_id, resource_class_id, used) "
        f"SELECT {n + round_ * added} + seq, 1 + seq % {fleet.roots}, {owner}, 10, 1 FROM {api}.seq_1_to_{added}",
        f"UPDATE {api}.consumers SET generation = generation + 1 WHERE id % 100 = {round_}",
    ]


def _timed_sql(server: URL, *statements: str) -> float:
    began = time.monotonic()
    _sql(server, *statements)
    return round(time.monotonic() - began, 2)


STEPS = ("copy", "copy_client", "sync", "verify", "untrack", "sync_checksums", "verify_again", "audit", "audit_delete")


def _measure(server: URL, fleet: PlacementFleet, regenerate: bool) -> dict[str, Any]:
    n = fleet.consumers
    api, cells = f"fm_papi_{n}", [f"fm_pcell1_{n}", f"fm_pcell2_{n}"]
    if regenerate or not _sql(server, f"SHOW DATABASES LIKE '{api}'"):
        began = time.monotonic()
        _generate(server, fleet, api, cells)
        print(f"generated {api} and its cells in {time.monotonic() - began:.0f} s", flush=True)
    work, placement = "fm_papi_work", "fm_placement_work"
    copy_database(server, api, work, (*COPY_ORDER, *API_TABLES))
    for cell in cells:
        copy_database(server, cell, f"{cell}_work", CELL_TABLES)
    row: dict[str, Any] = {}
    row["dump_load"] = _dump_load(server, work, "fm_dump_work")
    print(f"mysqldump | mysql: {row['dump_load']['wall_seconds']} s", flush=True)
    _sql(server, "DROP DATABASE IF EXISTS fm_dump_work", f"DROP DATABASE IF EXISTS {placement}",
         f"CREATE DATABASE {placement} CHARACTER SET utf8")
    source, target = _db(server, work), _db(server, placement)
    urls = ("--from", source, "--to", target)

    def step(name: str, *args: str) -> None:
        row[name] = _fastmigrate("placement", *args)
        print(f"{name}: {row[name]['wall_seconds']} s, exit {row[name]['exit_code']}", flush=True)

    step("copy", "copy", *urls, "--track-changes")
    _sql(server, "DROP DATABASE IF EXISTS fm_placement_client",
         "CREATE DATABASE fm_placement_client CHARACTER SET utf8")
    step("copy_client", "copy", "--from", source, "--to", _db(server, "fm_placement_client"), "--through-client")
    _sql(server, "DROP DATABASE fm_placement_client")
    # nova's changes while the triggers log them, then the sync that follows the log
    row["changes_tracked_seconds"] = _timed_sql(server, *_change_statements(work, fleet, 0))
    step("sync", "sync", *urls)
    step("verify", "verify", *urls)
    # the same amount of change without tracking: the sync compares checksums
    step("untrack", "untrack", "--from", source)
    row["changes_untracked_seconds"] = _timed_sql(server, *_change_statements(work, fleet, 1))
    step("sync_checksums", "sync", *urls)
    step("verify_again", "verify", *urls)
    step("audit", "audit", "--api-db", source, "--placement-db", target)
    step("audit_delete", "audit", "--api-db", source, "--placement-db", target, "--delete")
    row["expected_orphans"] = sum(1 for seq in range(1, n + 1) if NOVA_SIDE.get(seq % 100) in ORPHANED)
    for name in STEPS:
        document = row[name].pop("document")
        row[name]["summary"] = _summary(name, document)
    copy = row["copy"]["wall_seconds"]
    row["ratios"] = {"dump_load_over_copy": round(row["dump_load"]["wall_seconds"] / copy, 2),
                     "dump_load_over_copy_client": round(row["dump_load"]["wall_seconds"]
                                                         / row["copy_client"]["wall_seconds"], 2),
                     "sync_over_copy": round(row["sync"]["wall_seconds"] / copy, 3),
                     "checksum_sync_over_copy": round(row["sync_checksums"]["wall_seconds"] / copy, 3)}
    return row


def _summary(step: str, document: dict[str, Any]) -> dict[str, Any]:
    if step.startswith("audit"):
        return {"consumers": document["consumers"], "orphaned": len(document["orphaned"]),
                "deleted": len(document["deleted"]), "exit_code": document["exit_code"]}
    tables, note = document["tables"], document["tracking"]
    if step == "untrack":
        return {"triggers_removed": note["removed"], "exit_code": document["exit_code"]}
    return {"followed_log": note["followed"], "log_entries_applied": note["replayed"],
            "triggers_installed": note["installed"],"rows_copied": sum(t["rows_copied"] for t in tables),
            "rows_deleted": sum(t["rows_deleted"] for t in tables),
            "chunks": sum(t["chunks"] for t in tables), "chunks_repaired": sum(t["chunks_repaired"] for t in tables),
            "differing": sum(len(t["differing"]) for t in tables), "exit_code": document["exit_code"]}


def _markdown(results: dict[str, Any]) -> str:
    lines = ["| step | wall s | fastmigrate CPU s | mariadbd CPU s | peak RSS MB | what it did |",
             "|---|---:|---:|---:|---:|---|"]
    d = results["dump_load"]
    lines.append(f"| mysqldump \\| mysql (11 tables) | {d['wall_seconds']} | | {d['mariadbd_cpu_seconds']} | | |")
    for step in STEPS:
        r = results[step]
        lines.append(f"| fastmigrate placement {step.replace('_', ' ')} | {r['wall_seconds']} | "
                     f"{r['cpu_seconds']} | {r['mariadbd_cpu_seconds']} | {r['peak_rss_mb']} | {r['summary']} |")
    ratios = results["ratios"]
    lines.append(f"\nmysqldump | mysql over copy: {ratios['dump_load_over_copy']}x; sync over copy: "
                 f"{ratios['sync_over_copy']:.1%} (following the change log), "
                 f"{ratios['checksum_sync_over_copy']:.1%} (comparing checksums); nova's 1% change took "
                 f"{results['changes_tracked_seconds']} s logged, {results['changes_untracked_seconds']} s not")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
