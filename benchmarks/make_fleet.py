"""Generate a synthetic nova cell database (fastmigrate.fleet) into a fresh database, and optionally check it.

    python benchmarks/make_fleet.py --url mysql+pymysql://root@127.0.0.1/fm_bench --instances 100000
    fastmigrate flavors --db mysql+pymysql://root@127.0.0.1/fm_bench
    python benchmarks/make_fleet.py --url ... --instances 100000 --check   # regenerates the oracle, compares

The generator is deterministic for a given --seed, so --check rebuilds the expected flavors without touching
the database and compares them with what the migration wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from fastmigrate.db import connect_engine, normalize_url
from fastmigrate.fleet import Fleet, FleetSpec, _generate, _Writer, check_fleet, create_fleet


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--check", action="store_true", help="compare the database with the generator's oracle")
    args = parser.parse_args()
    spec = FleetSpec(instances=args.instances, seed=args.seed)
    engine = connect_engine(normalize_url(args.url))
    started = time.monotonic()
    try:
        if args.check:
            fleet = Fleet(spec)
            rows = _Writer()
            for _ in _generate(spec, fleet, rows):  # the oracle only: the rows themselves are dropped
                for pending in (rows.instances, rows.sysmeta, rows.extra, rows.later):
                    pending.clear()
            problems = await check_fleet(engine, fleet)
            print(f"checked {len(fleet.expected):,} instances in {time.monotonic() - started:.1f} s: "
                  f"{len(problems)} problem(s)")
            for p in problems[:20]:
                print("  " + p)
            return 1 if problems else 0
        fleet = await create_fleet(engine, spec)
        print(f"generated {args.instances:,} instances, {fleet.sysmeta_rows:,} sysmeta rows "
              f"in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        await engine.dispose()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
