"""A synthetic nova cell database generated inside MariaDB: a million instances in a minute or two, not the
Python generator's quarter of an hour.

Every instance n (1..N) draws its traits from ``CRC32(CONCAT(seed, tag, n))``, computed by the server
while it generates (the sequence engine's ``seq_1_to_N`` and ``INSERT ... SELECT``), and computed again
by Python's ``zlib.crc32`` (the same function) for the oracle: ``oracle()`` knows every instance's
expected flavors without reading a single generated row, so a migration is checked independently of both
fastmigrate's transform and the generating SQL.

The mix follows the benchmark issue: about 18 rows per instance (the ten ``instance_type_*`` rows and
eight others, plus ``old_vm_state`` while resizing); 2% mid-resize with full ``old_``/``new_`` flavors;
5% stashed ``hw:numa_*`` extra specs; 3% without an instance_extra row; 20% with one soft-deleted row of
an earlier state (about 1% of all rows); 10% whose name, swap and NUMA memory rows were written later, far
away in id order; 0.5% soft-deleted and 0.5% busy instances. Flavor values are stored as nova stored them
(``rxtx_factor`` as ``1`` or ``1.0``, a null ``vcpu_weight`` as NULL, ``''`` or ``'None'``).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fastmigrate.fleet import FLAVORS, NON_FLAVOR_KEYS, Fleet, FleetSpec
from fastmigrate.schema import metadata
from fastmigrate.transform import PROPS

__all__ = ["create_sql_fleet", "drop_scratch", "oracle"]

# Per mille: the shares of the dataset.
DELETED, BUSY, RESIZING, STASHED, WITHOUT_EXTRA, HISTORY, SCATTERED = 5, 5, 20, 50, 30, 200, 100
_BUSY_STATES = (("resize_migrating", "active"), (None, "resized"), (None, "rescued"))
_NUMA_MEM = ("256", "512", "1024")
_LATER = ("instance_type_name", "instance_type_swap", "instance_type_extra_hw:numa_mem.0")  # scattered keys


def _h(seed: int, tag: str, n: int) -> int:
    return zlib.crc32(f"{seed}{tag}{n}".encode())


def _sql_h(seed: int, tag: str) -> str:
    return f"CRC32(CONCAT('{seed}{tag}', seq))"


def _numa_cpus(idx: int) -> str:
    return ",".join(str(c) for c in range(max(FLAVORS[idx]["vcpus"] // 2, 1)))


def _spellings(prop: str, value: Any) -> tuple[str | None, str | None, str | None]:
    """How nova stored a value: (v0, v1, v2), one picked per instance for the two props with variants."""
    if value is None:
        return (None, "", "None") if prop in ("vcpu_weight", "rxtx_factor") else (None, None, None)
    if prop == "rxtx_factor" and value == int(value):
        return str(value), str(int(value)), str(value)  # '1' must still become 1.0
    return str(value), str(value), str(value)


def oracle(instances: int, seed: int = 42) -> Fleet:
    """What the generated fleet holds, from the hashes alone: ``Fleet.expected`` for every instance a
    migration must migrate, and the busy, deleted and extra-less ones (``fastmigrate.fleet.check_fleet``)."""
    fleet = Fleet(FleetSpec(instances=instances, seed=seed))
    for trait in _traits(instances, seed):
        cur = trait["cur"]
        specs = {}
        if trait["stashed"]:
            specs = {"hw:numa_cpus.0": _numa_cpus(cur), "hw:numa_mem.0": _NUMA_MEM[trait["mem"]]}
        slots: dict[str, tuple[int, dict[str, str]] | None] = {"cur": (cur, specs), "old": None, "new": None}
        if trait["resizing"]:
            new = (cur + 1) % len(FLAVORS)
            new_specs = {"hw:numa_cpus.0": _numa_cpus(new), "hw:numa_mem.0": _NUMA_MEM[trait["new_mem"]]}
            slots.update(old=(cur, dict(specs)), new=(new, new_specs if specs else {}))
        uuid = trait["uuid"]
        fleet.expected[uuid] = slots
        if trait["deleted"]:
            fleet.deleted.add(uuid)
        if trait["busy"]:
            fleet.busy.add(uuid)
        if trait["without_extra"]:
            fleet.without_extra.add(uuid)
        fleet.non_flavor_rows += len(NON_FLAVOR_KEYS) + trait["resizing"] + (trait["history"] == 2)
    return fleet


def _traits(instances: int, seed: int) -> Iterator[dict[str, Any]]:
    for n in range(1, instances + 1):
        h = hashlib.md5(f"{seed}u{n}".encode()).hexdigest()
        deleted = _h(seed, "d", n) % 1000 < DELETED
        hist = _h(seed, "h", n)
        yield {
            "uuid": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
            "cur": _h(seed, "f", n) % len(FLAVORS),
            "deleted": deleted,
            "busy": not deleted and _h(seed, "b", n) % 1000 < BUSY,
            "resizing": int(_h(seed, "r", n) % 1000 < RESIZING),
            "stashed": _h(seed, "s", n) % 1000 < STASHED,
            "without_extra": _h(seed, "e", n) % 1000 < WITHOUT_EXTRA,
            "history": 0 if hist % 1000 >= HISTORY else 1 + hist % 2,  # 1: a flavor row, 2: another key
            "mem": _h(seed, "m", n) % 3,
            "new_mem": _h(seed, "n", n) % 3,
        }


def _key_rows() -> list[dict[str, Any]]:
    """fm_gen_keys: every row an instance may get, with the condition under which it gets it."""
    rows: list[dict[str, Any]] = []
    for k in NON_FLAVOR_KEYS:
        rows.append({"slot": "-", "k": k, "prop": None, "cond": "all"})
    rows.append({"slot": "-", "k": "old_vm_state", "prop": None, "cond": "resizing"})
    for slot, prefix, cond in (("cur", "", "all"), ("old", "old_", "resizing"), ("new", "new_", "resizing")):
        for prop in PROPS:
            rows.append({"slot": slot, "k": f"{prefix}instance_type_{prop}", "prop": prop, "cond": cond})
        for spec in ("hw:numa_cpus.0", "hw:numa_mem.0"):
            rows.append({"slot": slot, "k": f"{prefix}instance_type_extra_{spec}", "prop": spec,
                         "cond": "stashed" if slot == "cur" else "resizing_stashed"})
    for i, row in enumerate(rows):
        row["ord"] = i
        row["later"] = int(row["k"].endswith(_LATER))
    return rows


def _value_rows() -> list[dict[str, Any]]:
    """fm_gen_values: each flavor's stored spellings of each prop (NUMA cpus per flavor, too)."""
    rows = []
    for idx, flavor in enumerate(FLAVORS):
        for prop in PROPS:
            v0, v1, v2 = _spellings(prop, flavor[prop])
            rows.append({"idx": idx, "prop": prop, "v0": v0, "v1": v1, "v2": v2})
        cpus = _numa_cpus(idx)
        rows.append({"idx": idx, "prop": "hw:numa_cpus.0", "v0": cpus, "v1": cpus, "v2": cpus})
        rows.append({"idx": idx, "prop": "hw:numa_mem.0", "v0": None, "v1": None, "v2": None})  # per instance
    return rows


async def create_sql_fleet(engine: AsyncEngine, instances: int, seed: int = 42, *, chunk: int = 100_000) -> None:
    """Create nova's tables in an empty MariaDB database and fill them, in the server, with ``instances``
    instances (``oracle(instances, seed)`` says what they hold)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    s = seed
    async with engine.begin() as conn:
        run = _runner(conn)
        await drop_scratch(conn, "fm_gen_inst", "fm_gen_keys", "fm_gen_values")  # left by a failed run
        await run("CREATE TABLE fm_gen_keys (ord INT PRIMARY KEY, slot CHAR(3), k VARCHAR(255), prop VARCHAR(64), "
                  "cond VARCHAR(20), later TINYINT)")
        await run("CREATE TABLE fm_gen_values (idx INT, prop VARCHAR(64), v0 VARCHAR(255), v1 VARCHAR(255), "
                  "v2 VARCHAR(255), PRIMARY KEY (idx, prop)) CHARACTER SET utf8")
        await conn.execute(text("INSERT INTO fm_gen_keys VALUES (:ord, :slot, :k, :prop, :cond, :later)"),
                           _key_rows())
        await conn.execute(text("INSERT INTO fm_gen_values VALUES (:idx, :prop, :v0, :v1, :v2)"), _value_rows())
        # One row of traits per instance, from the same hashes as oracle().
        await run(f"""
            CREATE TABLE fm_gen_inst (n INT PRIMARY KEY, uuid CHAR(36), cur INT, nxt INT, deleted TINYINT,
                busy TINYINT, resizing TINYINT, stashed TINYINT, no_extra TINYINT, history TINYINT,
                mem TINYINT, new_mem TINYINT, hx INT, hw INT, scattered TINYINT, KEY (uuid))
            SELECT seq AS n,
                   CONCAT_WS('-', SUBSTR(m, 1, 8), SUBSTR(m, 9, 4), SUBSTR(m, 13, 4), SUBSTR(m, 17, 4),
                             SUBSTR(m, 21, 12)) AS uuid,
                   {_sql_h(s, 'f')} % {len(FLAVORS)} AS cur,
                   ({_sql_h(s, 'f')} % {len(FLAVORS)} + 1) % {len(FLAVORS)} AS nxt,
                   {_sql_h(s, 'd')} % 1000 < {DELETED} AS deleted,
                   {_sql_h(s, 'd')} % 1000 >= {DELETED} AND {_sql_h(s, 'b')} % 1000 < {BUSY} AS busy,
                   {_sql_h(s, 'r')} % 1000 < {RESIZING} AS resizing,
                   {_sql_h(s, 's')} % 1000 < {STASHED} AS stashed,
                   {_sql_h(s, 'e')} % 1000 < {WITHOUT_EXTRA} AS no_extra,
                   IF({_sql_h(s, 'h')} % 1000 < {HISTORY}, 1 + {_sql_h(s, 'h')} % 2, 0) AS history,
                   {_sql_h(s, 'm')} % 3 AS mem, {_sql_h(s, 'n')} % 3 AS new_mem,
                   {_sql_h(s, 'x')} % 2 AS hx, {_sql_h(s, 'w')} % 3 AS hw,
                   {_sql_h(s, 'c')} % 1000 < {SCATTERED} AS scattered
            FROM (SELECT seq, MD5(CONCAT('{s}u', seq)) AS m FROM seq_1_to_{instances}) AS q""")
        flavor_cols = " ".join(f"WHEN {i} THEN {f['id']}" for i, f in enumerate(FLAVORS))
        await run(f"""
            INSERT INTO instances (id, uuid, display_name, project_id, instance_type_id, vm_state, task_state,
                                   created_at, deleted, deleted_at)
            SELECT n, uuid, CONCAT('vm-', n), 'bench', CASE cur {flavor_cols} END,
                   CASE WHEN NOT busy THEN 'active' WHEN n % 3 = 0 THEN 'active' WHEN n % 3 = 1 THEN 'resized'
                        ELSE 'rescued' END,
                   IF(busy AND n % 3 = 0, 'resize_migrating', NULL),
                   '2015-01-01', IF(deleted, n, 0), IF(deleted, '2015-01-01', NULL)
            FROM fm_gen_inst""")
    for low in range(0, instances, chunk):
        await _sysmeta_chunk(engine, low, min(low + chunk, instances), later=False)
    await _sysmeta_chunk(engine, 0, instances, later=True)
    async with engine.begin() as conn:
        run = _runner(conn)
        await run("""
            INSERT INTO instance_extra (instance_uuid, created_at, deleted)
            SELECT uuid, '2015-01-01', 0 FROM fm_gen_inst WHERE NOT no_extra ORDER BY n""")
        # The history rows are the only ones with a deleted_at so far: soft-delete them properly (deleted = id).
        await run("UPDATE instance_system_metadata SET deleted = id WHERE deleted_at IS NOT NULL AND deleted = 0")
        # Deleted instances took their rows with them (soft-deleted: deleted = id).
        await run("""
            UPDATE instance_system_metadata s JOIN fm_gen_inst g ON g.uuid = s.instance_uuid AND g.deleted
            SET s.deleted = s.id, s.deleted_at = '2015-01-01'""")
        await run("""
            UPDATE instance_extra e JOIN fm_gen_inst g ON g.uuid = e.instance_uuid AND g.deleted
            SET e.deleted = e.id, e.deleted_at = '2015-01-01'""")
        await run("DROP TABLE fm_gen_inst, fm_gen_keys, fm_gen_values")


async def drop_scratch(conn: Any, *tables: str) -> None:
    """Drop these tables of the current database where they exist (DROP ... IF EXISTS would leave a server
    note that the driver logs as a warning)."""
    marks = ", ".join(["%s"] * len(tables))
    found = [row[0] for row in await conn.exec_driver_sql(
        f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME IN ({marks})", tables)]
    if found:
        await conn.exec_driver_sql("DROP TABLE " + ", ".join(found))


def _runner(conn: Any) -> Any:
    """Runs generator SQL as written: the driver's format paramstyle would read its modulo as a placeholder."""
    def run(sql: str) -> Any:
        return conn.exec_driver_sql(sql.replace("%", "%%"))
    return run


async def _sysmeta_chunk(engine: AsyncEngine, low: int, high: int, *, later: bool) -> None:
    """The rows of instances (low, high], in id order per instance; the scattered instances' late rows
    only with ``later`` (then for all instances at once, after everything else)."""
    when = ("(k.cond = 'all' OR (k.cond = 'resizing' AND g.resizing) OR (k.cond = 'stashed' AND g.stashed) "
            "OR (k.cond = 'resizing_stashed' AND g.resizing AND g.stashed))")
    placement = "k.later AND g.scattered" if later else "NOT (k.later AND g.scattered)"
    async with engine.begin() as conn:
        run = _runner(conn)
        if not later:
            # An earlier state, soft-deleted (so: a lower id than the live rows): a replaced flavor value or a
            # removed key.
            await run(f"""
                INSERT INTO instance_system_metadata (instance_uuid, `key`, value, created_at, deleted, deleted_at)
                SELECT uuid, IF(history = 1, 'instance_type_memory_mb', 'image_min_ram'), '1', '2015-01-01', 0,
                       '2015-01-01'
                FROM fm_gen_inst WHERE n > {low} AND n <= {high} AND history > 0 ORDER BY n""")
        await run(f"""
            INSERT INTO instance_system_metadata (instance_uuid, `key`, value, created_at, deleted)
            SELECT g.uuid, k.k,
                   CASE WHEN k.slot = '-' THEN IF(k.k = 'old_vm_state', 'active', CAST(g.n % 100 AS CHAR))
                        WHEN k.prop = 'hw:numa_mem.0' THEN
                             ELT(1 + IF(k.slot = 'new', g.new_mem, g.mem), '256', '512', '1024')
                        ELSE ELT(1 + CASE k.prop WHEN 'rxtx_factor' THEN g.hx WHEN 'vcpu_weight' THEN g.hw ELSE 0 END,
                                 v.v0, v.v1, v.v2) END,
                   '2015-01-01', 0
            FROM fm_gen_inst g JOIN fm_gen_keys k ON {when}
                 LEFT JOIN fm_gen_values v ON v.idx = IF(k.slot = 'new', g.nxt, g.cur) AND v.prop = k.prop
            WHERE g.n > {low} AND g.n <= {high} AND {placement}
            ORDER BY g.n, k.ord""")
