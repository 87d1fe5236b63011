"""``fastmigrate demo``: a generated fleet in SQLite, migrated, then checked against the generator."""

from __future__ import annotations

import os
import time
from typing import TextIO

from .db import connect_engine, normalize_url
from .fleet import FleetSpec, check_fleet, create_fleet
from .flavors import migrate_flavors
from .options import FlavorOptions
from .report import format_table
from .results import ExitCode

__all__ = ["run_demo"]


async def run_demo(path: str, instances: int, broken: int, *, out: TextIO) -> int:
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    url = f"sqlite:///{os.path.abspath(path)}"
    engine = connect_engine(normalize_url(url))
    try:
        started = time.monotonic()
        fleet = await create_fleet(engine, FleetSpec(instances=instances, broken=broken))
        out.write(f"generated {instances:,} instances ({fleet.sysmeta_rows:,} system_metadata rows: "
                  f"{len(fleet.busy)} busy, {len(fleet.deleted)} soft-deleted, {len(fleet.without_extra)} without "
                  f"an instance_extra row, {len(fleet.broken)} broken) in {path} "
                  f"in {time.monotonic() - started:.1f} s\n\n")
        out.write(f"$ fastmigrate flavors --db {url}\n")
        first = await migrate_flavors([url], FlavorOptions())
        out.write(format_table(first))
        second = await migrate_flavors([url], FlavorOptions())
        problems = await check_fleet(engine, fleet)
    finally:
        await engine.dispose()
    if second.databases[0].migrated:
        problems.append(f"a second run migrated {second.databases[0].migrated} more instances")
    out.write("\ncheck: ")
    if problems:
        out.write(f"FAILED, {len(problems)} problem(s):\n" + "".join(f"  {p}\n" for p in problems[:20]))
        return ExitCode.FAILED
    out.write(f"OK: all {first.databases[0].migrated:,} migrated blobs "
              "match the generator's flavors, non-flavor rows untouched, a second run changed nothing.\n"
              f"The fleet stays in {path}: rerun 'fastmigrate flavors --db {url}' to see exit code "
              f"{first.exit_code} again ({'busy instances remain' if first.exit_code == 1 else 'see above'}).\n")
    return ExitCode.DONE
