"""What merging the flavor tables' extra specs costs: ``fastmigrate flavors`` on the same fleet with and
without Kilo's ``instance_types`` / ``instance_type_extra_specs`` in the cell database, alternating.

    python -m benchmarks.flavor_tables --instances 100000 --rounds 2

Uses the pristine fleet ``fm_pristine_N`` of ``benchmarks.run`` (generated if missing), restored into
``fm_work`` before every run; with tables, ``fastmigrate.fleet.create_flavor_tables`` adds them (six flavors,
retired duplicates, a deleted spec row each). Every run is checked against the generator's oracle, with the
tables' specs merged in where they were there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from benchmarks.run import ROOT, _async, _mariadbd_cpu, _restore, _since, _sql
from benchmarks.sql_fleet import create_sql_fleet, oracle
from fastmigrate.fleet import check_fleet, create_flavor_tables, merged_slots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="mysql+pymysql://root@127.0.0.1:3306", help="the server (no database)")
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--buffer-pool", type=int, default=12 << 30)
    args = parser.parse_args()
    server = make_url(args.url)
    _sql(server, f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool}")
    pristine, work = f"fm_pristine_{args.instances}", server.set(database="fm_work")
    if not _sql(server, f"SHOW DATABASES LIKE '{pristine}'"):
        _sql(server, f"CREATE DATABASE {pristine} CHARACTER SET utf8")
        asyncio.run(_async(server.set(database=pristine), lambda e: create_sql_fleet(e, args.instances, args.seed)))
    plain = oracle(args.instances, args.seed)
    merged = oracle(args.instances, args.seed)
    merged.expected = {uuid: merged_slots(slots) for uuid, slots in merged.expected.items()}
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for tables in (True, False):
            _restore(server, pristine)
            if tables:
                asyncio.run(_async(work, create_flavor_tables))
            cpu, began = _mariadbd_cpu(), time.monotonic()
            done = subprocess.run([sys.executable, "-m", "fastmigrate", "flavors", "--db",
                                   work.render_as_string(hide_password=False), "--json"],
                                  stdout=subprocess.PIPE, cwd=ROOT, check=False, text=True)
            wall = time.monotonic() - began
            summary = json.loads(done.stdout.splitlines()[-1])
            expected = merged if tables else plain
            problems = asyncio.run(_async(work, lambda e, fleet=expected: check_fleet(e, fleet)))
            runs.append({"flavor_tables": tables, "wall_seconds": round(wall, 2), "mariadbd_cpu_seconds": _since(cpu),
                         "migrated": summary["total"]["migrated"], "check_problems": len(problems)})
            print(runs[-1], flush=True)
    _sql(server, "SET GLOBAL innodb_buffer_pool_size = 134217728")
    Path(ROOT / "benchmarks" / "flavor_tables_results.json").write_text(json.dumps(runs, indent=2) + "\n")
    return 0 if all(r["check_problems"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
