"""The upstream-style baseline: one instance at a time, as nova's ``migrate_flavor_data`` did through its ORM.

For each instance (in id order, live, not busy, no blob yet): read its instance_extra row and its flavor
rows, build the blob, write it (UPDATE, or INSERT when the instance has no row), delete the rows it replaces,
COMMIT. Raw PyMySQL, so the figure is the per-instance round trips and commits, not ORM overhead: the
baseline is faster than upstream ever was. Run on a sample (``limit``) and extrapolated.

The blob is built by fastmigrate's own transform (a fair share of the work, and correct by the oracle).
"""

from __future__ import annotations

import time
from typing import Any

import pymysql  # type: ignore[import-untyped]
from sqlalchemy.engine import URL

from fastmigrate import statements
from fastmigrate.transform import Candidate, Migration, SysmetaRow, transform

__all__ = ["baseline_migrate"]

def baseline_migrate(url: URL, limit: int) -> dict[str, Any]:
    """Migrate up to ``limit`` instances one transaction each; what it did and how long it took."""
    conn = pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
                           password=url.password or "", database=url.database, charset="utf8",
                           autocommit=False)
    done = rows_removed = 0
    started = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute("""
                SELECT i.uuid FROM instances i
                WHERE i.deleted = 0 AND i.task_state IS NULL AND IFNULL(i.vm_state, '') NOT IN ('resized', 'rescued')
                  AND NOT EXISTS (SELECT 1 FROM instance_extra e WHERE e.instance_uuid = i.uuid AND e.deleted = 0
                                  AND e.flavor IS NOT NULL)
                ORDER BY i.id LIMIT %s""", (limit,))
            uuids = [row[0] for row in cur.fetchall()]
            conn.commit()
            started = time.monotonic()  # the per-instance work only
            for uuid in uuids:
                cur.execute("SELECT id FROM instance_extra WHERE instance_uuid = %s AND deleted = 0 FOR UPDATE",
                            (uuid,))
                extra = cur.fetchone()
                cur.execute(*statements.flavor_rows("format", [uuid], include_deleted=False, lock=True))
                rows = tuple(SysmetaRow(*r[1:]) for r in cur.fetchall())  # rows of (uuid, id, key, value, deleted)
                outcome = transform(Candidate(uuid, False, extra[0] if extra else None, rows))
                if not isinstance(outcome, Migration):
                    conn.rollback()
                    continue
                if extra:
                    cur.execute("UPDATE instance_extra SET flavor = %s, updated_at = UTC_TIMESTAMP() WHERE id = %s",
                                (outcome.blob, extra[0]))
                else:
                    cur.execute("INSERT INTO instance_extra (instance_uuid, flavor, created_at, deleted) "
                                "VALUES (%s, %s, UTC_TIMESTAMP(), 0)", (uuid, outcome.blob))
                cur.executemany("DELETE FROM instance_system_metadata WHERE id = %s", [(i,) for i in outcome.row_ids])
                conn.commit()
                done += 1
                rows_removed += len(outcome.row_ids)
    finally:
        conn.close()
    seconds = time.monotonic() - started
    return {"migrated": done, "rows_removed": rows_removed, "seconds": round(seconds, 3),
            "instances_per_second": round(done / seconds, 1) if seconds else 0.0}
