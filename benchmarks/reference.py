"""The in-server reference: the flavor migration done by MariaDB alone, as a DBA would try it first.

One ``CREATE TABLE ... SELECT`` builds every blob with ``JSON_OBJECT`` over ``GROUP BY instance_uuid`` (a
pivot of the ten props per prefix, the stashed extra specs folded into an object), then an ``UPDATE ...
JOIN`` writes them into the existing instance_extra rows, an ``INSERT ... SELECT`` adds the missing rows
(there is no unique key on instance_extra.instance_uuid, so no upsert), and a ``DELETE ... JOIN`` removes
the flavor rows; all in one transaction, with no client round trip per row. It is not online-safe (it locks
the whole fleet's rows for its duration and writes one enormous writeset), which is why it is only a
yardstick: the time the server alone needs for the same work.

Its scope is fastmigrate's default: live, not busy instances without a blob. Its blobs load in nova and
match the generator's oracle (``tests/test_bench_smoke.py`` checks it), so both sides do the same work.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.sql_fleet import drop_scratch
from fastmigrate.transform import PROPS

__all__ = ["reference_migrate"]

_FLAVOR_KEY = "s.`key` LIKE '%%instance!_type!_%%' ESCAPE '!'"
_INT_PROPS = ("id", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "swap")


def _value(prefix: str, prop: str) -> str:
    return f"MAX(IF(s.`key` = '{prefix}instance_type_{prop}', s.value, NULL))"


def _prop(prefix: str, prop: str) -> str:
    raw = _value(prefix, prop)
    if prop in _INT_PROPS:
        return f"CAST({raw} AS INTEGER)"
    if prop == "vcpu_weight":
        return f"CAST(NULLIF(NULLIF({raw}, ''), 'None') AS INTEGER)"
    if prop == "rxtx_factor":
        return f"CAST(NULLIF(NULLIF({raw}, ''), 'None') AS DOUBLE)"
    return raw  # name, flavorid: strings


def _flavor(prefix: str) -> str:
    """The Flavor 1.1 primitive of one prefix ('' for cur, 'old_', 'new_'), or NULL without its rows."""
    extra = f"{prefix}instance_type_extra_"
    specs = (f"JSON_EXTRACT(CONCAT('{{', IFNULL(GROUP_CONCAT(IF(s.`key` LIKE '{extra.replace('_', '!_')}%%' "
             f"ESCAPE '!', CONCAT(JSON_QUOTE(SUBSTR(s.`key`, {len(extra) + 1})), ':', JSON_QUOTE(s.value)), "
             f"NULL)), ''), '}}'), '$')")
    data = ", ".join(f"'{p}', {_prop(prefix, p)}" for p in PROPS)
    changes = ", ".join(f"'{p}'" for p in sorted((*PROPS, "extra_specs")))
    return (f"IF({_value(prefix, 'id')} IS NULL, NULL, JSON_OBJECT("
            f"'nova_object.name', 'Flavor', 'nova_object.namespace', 'nova', 'nova_object.version', '1.1', "
            f"'nova_object.data', JSON_OBJECT({data}, 'extra_specs', {specs}), "
            f"'nova_object.changes', JSON_ARRAY({changes})))")


def statements() -> list[tuple[str, str]]:
    """(phase, SQL) in order. ``%%`` is the driver's escaped ``%``."""
    build = f"""
        CREATE TABLE fm_ref_blobs (uuid CHAR(36) PRIMARY KEY, flavor MEDIUMTEXT) CHARACTER SET utf8
        SELECT s.instance_uuid AS uuid,
               JSON_OBJECT('cur', {_flavor('')}, 'old', {_flavor('old_')}, 'new', {_flavor('new_')}) AS flavor
        FROM instance_system_metadata s
             JOIN instances i ON i.uuid = s.instance_uuid AND i.deleted = 0 AND i.task_state IS NULL
                              AND IFNULL(i.vm_state, '') NOT IN ('resized', 'rescued')
        WHERE s.deleted = 0 AND {_FLAVOR_KEY}
          AND NOT EXISTS (SELECT 1 FROM instance_extra d WHERE d.instance_uuid = i.uuid AND d.deleted = 0
                          AND d.flavor IS NOT NULL)
        GROUP BY s.instance_uuid"""
    update = """
        UPDATE instance_extra e JOIN fm_ref_blobs b ON b.uuid = e.instance_uuid
        SET e.flavor = b.flavor, e.updated_at = UTC_TIMESTAMP()
        WHERE e.deleted = 0 AND e.flavor IS NULL"""
    insert = """
        INSERT INTO instance_extra (instance_uuid, flavor, created_at, deleted)
        SELECT b.uuid, b.flavor, UTC_TIMESTAMP(), 0 FROM fm_ref_blobs b
        WHERE NOT EXISTS (SELECT 1 FROM instance_extra e WHERE e.instance_uuid = b.uuid AND e.deleted = 0)"""
    delete = f"""
        DELETE s FROM instance_system_metadata s JOIN fm_ref_blobs b ON b.uuid = s.instance_uuid
        WHERE s.deleted = 0 AND {_FLAVOR_KEY}"""
    return [("build", build), ("update", update), ("insert", insert), ("delete", delete)]


async def reference_migrate(engine: AsyncEngine) -> dict[str, Any]:
    """Run the reference on a nova cell database; seconds per phase and rows touched."""
    report: dict[str, Any] = {}
    started = time.monotonic()
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET SESSION group_concat_max_len = 16777216")
        await drop_scratch(conn, "fm_ref_blobs")
        await conn.commit()
        async with conn.begin():
            for phase, sql in statements():
                begun = time.monotonic()
                result: Any = await conn.exec_driver_sql(sql)
                report[f"{phase}_seconds"] = round(time.monotonic() - begun, 3)
                report[f"{phase}_rows"] = result.rowcount
        await conn.exec_driver_sql("DROP TABLE fm_ref_blobs")
    report["seconds"] = round(time.monotonic() - started, 3)
    return report
