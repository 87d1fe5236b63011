"""Generate a synthetic nova cell database into a fresh database, and optionally check a migration of it.

    python -m benchmarks.make_fleet --url mysql+pymysql://root@127.0.0.1/fm_bench --instances 1000000
    fastmigrate flavors --db mysql+pymysql://root@127.0.0.1/fm_bench
    python -m benchmarks.make_fleet --url ... --instances 1000000 --check   # compares with the oracle

On MariaDB the fleet is generated inside the server (``benchmarks/sql_fleet.py``: the sequence engine and
``INSERT ... SELECT``); ``--generator python`` (and any SQLite URL) uses ``fastmigrate.fleet``, the demo's and
the tests' generator. Both are deterministic for a given --seed, so --check rebuilds the expected flavors
without reading the generated rows and compares them with what the migration wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.fleet import Fleet, FleetSpec, _generate, _Writer, check_fleet, create_fleet

from benchmarks.sql_fleet import create_sql_fleet, oracle


def python_oracle(spec: FleetSpec) -> Fleet:
    fleet = Fleet(spec)
    rows = _Writer()
    for _ in _generate(spec, fleet, rows):  # the oracle only: the rows themselves are dropped
        for pending in (rows.instances, rows.sysmeta, rows.extra, rows.later):
            pending.clear()
    return fleet


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--generator", choices=("sql", "python"), help="default: sql on MariaDB, else python")
    parser.add_argument("--check", action="store_true", help="compare the database with the generator's oracle")
    args = parser.parse_args()
    url = normalize_url(args.url)
    generator = args.generator or ("sql" if url.get_backend_name() == "mysql" else "python")
    spec = FleetSpec(instances=args.instances, seed=args.seed)
    engine = connect_engine(url, statement_timeout=0)
    started = time.monotonic()
    try:
        if args.check:
            fleet = oracle(args.instances, args.seed) if generator == "sql" else python_oracle(spec)
            problems = await check_fleet(engine, fleet)
            print(f"checked {len(fleet.expected):,} instances in {time.monotonic() - started:.1f} s: "
                  f"{len(problems)} problem(s)")
            for p in problems[:20]:
                print("  " + p)
            return 1 if problems else 0
        if generator == "sql":
            await create_sql_fleet(engine, args.instances, args.seed)
        else:
            await create_fleet(engine, spec)
        print(f"generated {args.instances:,} instances ({generator}) in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        await engine.dispose()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
