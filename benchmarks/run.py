"""The whole benchmark in one command: fastmigrate, the in-server reference and the upstream-style baseline,
side by side on the same generated fleets, with results as JSON, a section of BENCHMARKS.md and a plot.

    python -m benchmarks.run --sizes 100000 300000 1000000

For each size N: a pristine fleet ``fm_pristine_N`` is generated inside MariaDB once (kept between runs;
``--regenerate`` rebuilds it) and copied into ``fm_work`` before every contender, so each one starts from
the same state. fastmigrate runs as the operator runs it (``fastmigrate flavors --json``), started through
``benchmarks.measure``, which reports its own peak RSS and CPU time; mariadbd's CPU seconds come from
``/proc``. Every contender's result is checked against the generator's oracle. The figures that matter are
the ratios within one run: the machine is shared and its speed drifts between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from benchmarks.baseline import baseline_migrate
from benchmarks.reference import reference_migrate
from benchmarks.sql_fleet import create_sql_fleet, oracle
from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.fleet import check_fleet

ROOT = Path(__file__).resolve().parent.parent
MARK_START, MARK_END = "<!-- benchmarks.run: start -->", "<!-- benchmarks.run: end -->"
TABLES = ("instances", "instance_system_metadata", "instance_extra")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="mysql+pymysql://root@127.0.0.1:3306", help="the server (no database)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--baseline-sample", type=int, default=20_000, help="instances the baseline migrates")
    parser.add_argument("--buffer-pool", type=int, default=12 << 30,
                        help="innodb_buffer_pool_size to set (bytes; default 12 GiB: every pristine copy up to 1M "
                             "instances plus the work copy stay in memory)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the pristine fleets")
    parser.add_argument("--fastmigrate-args", default="", help="extra options for fastmigrate flavors")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "scaling.png"))
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: write the markdown and the plot from the results in --out")
    args = parser.parse_args()
    if args.report_only:
        measured: dict[str, Any] = json.loads(Path(args.out).read_text())
        _write_markdown(Path(args.markdown), measured)
        _plot(Path(args.plot), measured)
        return 0
    server = make_url(args.url)
    _sql(server, f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool}")
    results: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(server),
                               "seed": args.seed, "fastmigrate_args": args.fastmigrate_args, "sizes": []}
    for n in args.sizes:
        print(f"== {n:,} instances", flush=True)
        results["sizes"].append(_measure(server, n, args))
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    _write_markdown(Path(args.markdown), results)
    _plot(Path(args.plot), results)
    print(f"wrote {args.out}, {args.markdown}, {args.plot}")
    return 0


def _measure(server: URL, n: int, args: argparse.Namespace) -> dict[str, Any]:
    pristine = f"fm_pristine_{n}"
    row: dict[str, Any] = {"instances": n}
    if args.regenerate or not _sql(server, f"SHOW DATABASES LIKE '{pristine}'"):
        _sql(server, f"DROP DATABASE IF EXISTS {pristine}", f"CREATE DATABASE {pristine} CHARACTER SET utf8")
        began = time.monotonic()
        asyncio.run(_async(server.set(database=pristine), lambda e: create_sql_fleet(e, n, args.seed)))
        row["generate_seconds"] = round(time.monotonic() - began, 1)
        print(f"  generated in {row['generate_seconds']} s", flush=True)
    fleet = oracle(n, args.seed)
    row["sysmeta_rows"] = _sql(server, f"SELECT COUNT(*) FROM {pristine}.instance_system_metadata")[0][0]
    work = server.set(database="fm_work")
    eligible = n - len(fleet.deleted) - len(fleet.busy)

    _restore(server, pristine)
    cpu = _mariadbd_cpu()
    usage_file = Path(args.out).with_suffix(".usage.json")
    command = [sys.executable, "-m", "benchmarks.measure", str(usage_file),
               sys.executable, "-m", "fastmigrate", "flavors", "--db", work.render_as_string(hide_password=False),
               "--json", *args.fastmigrate_args.split()]
    began = time.monotonic()
    out = subprocess.run(command, stdout=subprocess.PIPE, cwd=ROOT, check=False).stdout
    wall = time.monotonic() - began
    usage = json.loads(usage_file.read_text())
    usage_file.unlink()
    db = json.loads(out.splitlines()[-1])["databases"][0]  # the summary event
    row["fastmigrate"] = {
        "wall_seconds": round(wall, 2), "pipeline_seconds": db["seconds"], "migrated": db["migrated"],
        "instances_per_second": round(db["migrated"] / wall, 1),
        "rows_per_second": round(db["sysmeta_rows_removed"] / wall, 1),
        "peak_rss_mb": round(usage["peak_rss_kb"] / 1024, 1), "cpu_seconds": round(usage["cpu_seconds"], 2),
        "mariadbd_cpu_seconds": _since(cpu),
        "transactions": db["transactions"], "retries": db["retries"], "batch_size": db["batch_size"],
        "exit_code": usage["exit_code"],
        "check_problems": len(asyncio.run(_async(work, lambda e: check_fleet(e, fleet)))),
    }
    print(f"  fastmigrate {row['fastmigrate']}", flush=True)

    _restore(server, pristine)
    cpu = _mariadbd_cpu()
    began = time.monotonic()
    phases = asyncio.run(_async(work, reference_migrate))
    row["reference"] = {"wall_seconds": round(time.monotonic() - began, 2), "phases": phases,
                        "mariadbd_cpu_seconds": _since(cpu),
                        "check_problems": len(asyncio.run(_async(work, lambda e: check_fleet(e, fleet))))}
    print(f"  reference {row['reference']}", flush=True)

    _restore(server, pristine)
    sample = min(args.baseline_sample, eligible)
    base = baseline_migrate(normalize_url(work.render_as_string(hide_password=False)), sample)
    base["extrapolated_seconds"] = round(base["seconds"] * eligible / max(base["migrated"], 1), 1)
    row["baseline"] = base
    print(f"  baseline {base}", flush=True)

    fm = row["fastmigrate"]["wall_seconds"]
    row["ratios"] = {"fastmigrate_over_reference": round(fm / row["reference"]["wall_seconds"], 2),
                     "baseline_over_fastmigrate": round(base["extrapolated_seconds"] / fm, 1),
                     "microseconds_per_instance": round(fm / n * 1e6, 1)}
    return row


async def _async(url: URL, work: Any) -> Any:
    engine = connect_engine(normalize_url(url.render_as_string(hide_password=False)), statement_timeout=0)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


def _sql(server: URL, *statements: str) -> list[tuple[Any, ...]]:
    import pymysql  # type: ignore[import-untyped]

    conn = pymysql.connect(host=server.host or "127.0.0.1", port=server.port or 3306, user=server.username or "root",
                           password=server.password or "", autocommit=True)
    try:
        with conn.cursor() as cur:
            rows: list[tuple[Any, ...]] = []
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
            return rows
    finally:
        conn.close()


def _restore(server: URL, pristine: str) -> None:
    """fm_work := a copy of the pristine fleet: same ids, same physical order, freshly written (so hot in the
    buffer pool when it fits), with fresh statistics (as a DBA would leave a restored database, and so that
    no contender's plans depend on when InnoDB's background statistics update happens to run)."""
    copy_database(server, pristine, "fm_work", TABLES, order_by="id")


def copy_database(server: URL, source: str, target: str, tables: Sequence[str], order_by: str | None = None) -> None:
    """``target`` recreated as a copy of ``tables`` of ``source`` (rows in ``order_by`` order, if given),
    then analyzed."""
    order = f" ORDER BY {order_by}" if order_by else ""
    statements = [f"DROP DATABASE IF EXISTS {target}", f"CREATE DATABASE {target} CHARACTER SET utf8"]
    for table in tables:
        statements += [f"CREATE TABLE {target}.{table} LIKE {source}.{table}",
                       f"INSERT INTO {target}.{table} SELECT * FROM {source}.{table}{order}"]
    statements.append(f"ANALYZE TABLE {', '.join(f'{target}.{table}' for table in tables)}")
    _sql(server, *statements)


def _mariadbd_cpu() -> float | None:
    try:
        pid = subprocess.run(["pidof", "mariadbd"], capture_output=True, text=True, check=True).stdout.split()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None  # not on this machine


def _since(before: float | None) -> float | None:
    now = _mariadbd_cpu()
    return round(now - before, 1) if now is not None and before is not None else None


def _machine(server: URL) -> dict[str, Any]:
    import importlib.metadata as md

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    names = ("version", "innodb_buffer_pool_size", "innodb_flush_log_at_trx_commit", "innodb_log_file_size",
             "max_allowed_packet", "transaction_isolation", "tx_isolation", "sync_binlog", "log_bin")
    quoted = ", ".join(f"'{name}'" for name in names)
    variables = dict(_sql(server, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({quoted})"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory / 2**20, 1),
            "python": platform.python_version(),
            "packages": {p: md.version(p) for p in ("SQLAlchemy", "asyncmy", "orjson", "uvloop", "PyMySQL")},
            "mariadb": variables}


# (header, cell) of the results table, from one size's row.
_COLUMNS: list[tuple[str, Any]] = [
    ("instances", lambda r: f"{r['instances']:,}"),
    ("sysmeta rows", lambda r: f"{r['sysmeta_rows']:,}"),
    ("fastmigrate s", lambda r: r["fastmigrate"]["wall_seconds"]),
    ("instances/s", lambda r: f"{r['fastmigrate']['instances_per_second']:,.0f}"),
    ("peak RSS MB", lambda r: r["fastmigrate"]["peak_rss_mb"]),
    ("fastmigrate CPU s", lambda r: r["fastmigrate"]["cpu_seconds"]),
    ("mariadbd CPU s", lambda r: r["fastmigrate"]["mariadbd_cpu_seconds"]),
    ("reference s", lambda r: r["reference"]["wall_seconds"]),
    ("fastmigrate / reference", lambda r: r["ratios"]["fastmigrate_over_reference"]),
    ("baseline instances/s (sample)",
     lambda r: f"{r['baseline']['instances_per_second']:,.0f} ({r['baseline']['migrated']:,})"),
    ("baseline s (extrapolated)", lambda r: r["baseline"]["extrapolated_seconds"]),
    ("baseline / fastmigrate", lambda r: r["ratios"]["baseline_over_fastmigrate"]),
    ("µs per instance", lambda r: r["ratios"]["microseconds_per_instance"]),
    ("oracle problems (fm, ref)",
     lambda r: f"{r['fastmigrate']['check_problems']}, {r['reference']['check_problems']}"),
]


def _write_markdown(path: Path, results: dict[str, Any]) -> None:
    m = results["machine"]
    sizes = " ".join(str(r["instances"]) for r in results["sizes"])
    options = f" with `{results['fastmigrate_args']}`" if results["fastmigrate_args"] else ""
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    settings = ", ".join(f"`{k} = {v}`" for k, v in sorted(m["mariadb"].items()))
    lines = [MARK_START, "", f"### Harness run of {results['date']}", "",
             f"`python -m benchmarks.run --sizes {sizes}`{options} (seed {results['seed']}); {m['cpu']}, "
             f"{m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, {packages}; MariaDB {settings}.", "",
             "| " + " | ".join(header for header, _ in _COLUMNS) + " |", "|" + "---:|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(str(cell(r)) for _, cell in _COLUMNS) + " |" for r in results["sizes"]]
    phases = "; ".join(f"{r['instances']:,}: " + ", ".join(
        f"{k.removesuffix('_seconds')} {v}" for k, v in r["reference"]["phases"].items()
        if k.endswith("_seconds") and k != "seconds") for r in results["sizes"])
    lines += ["", f"Reference phases (seconds): {phases}.", "",
              "![wall time and peak RSS against N](benchmarks/scaling.png)", "", MARK_END]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = "\n".join(lines)
    if MARK_START in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Harness results\n\n" + block + "\n"
    path.write_text(text)


def _plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["instances"] for r in results["sizes"]]
    fig, (wall, rss) = plt.subplots(1, 2, figsize=(10, 4))
    wall.plot(sizes, [r["fastmigrate"]["wall_seconds"] for r in results["sizes"]], "o-", label="fastmigrate")
    wall.plot(sizes, [r["reference"]["wall_seconds"] for r in results["sizes"]], "s--", label="in-server reference")
    wall.set(xlabel="instances", ylabel="wall seconds", title="Wall time", ylim=(0, None))
    wall.legend()
    rss.plot(sizes, [r["fastmigrate"]["peak_rss_mb"] for r in results["sizes"]], "o-", label="fastmigrate")
    rss.axhline(150, color="grey", linestyle=":", label="target 150 MB")
    rss.set(xlabel="instances", ylabel="peak RSS (MB)", title="Peak RSS", ylim=(0, None))
    rss.legend()
    fig.suptitle(f"fastmigrate flavors, {results['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
