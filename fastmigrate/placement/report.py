"""A placement run as a table for people or one JSON document for automation. Pure formatters."""

from __future__ import annotations

from typing import Any

import orjson

from .results import PlacementRun, TableResult
from .statements import Key

__all__ = ["format_placement", "format_placement_progress", "placement_json"]

def _headers(command: str) -> tuple[str, ...]:
    return ("table", "source rows", "target rows", "copied", "deleted", "chunks",
            "repaired" if command == "sync" else "differing", "seconds")


def _range(low: Key | None, high: Key | None) -> str:
    def show(key: Key | None, open_end: str) -> str:
        return open_end if key is None else ", ".join(str(k) for k in key)
    return f"({show(low, 'start')} .. {show(high, 'end')}]"


def _cells(t: TableResult, command: str) -> tuple[str, ...]:
    differing = len(t.differing) if command == "verify" else t.chunks_repaired
    target = f"{t.target_rows:,}" if command != "copy" else f"{t.rows_copied:,}"
    return (t.table, f"{t.source_rows:,}", target, f"{t.rows_copied:,}", f"{t.rows_deleted:,}", f"{t.chunks:,}",
            f"{differing:,}", f"{t.seconds:.1f}")


def format_placement(run: PlacementRun, *, max_listed: int = 50) -> str:
    rows = [_headers(run.command), *(_cells(t, run.command) for t in run.tables)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"placement {run.command}: {run.source} -> {run.target}"]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip())
    if run.created_schema:
        lines.append("created placement's initial schema in the target")
    if run.replaced:
        lines.append("--replace: emptied the target's placement tables first (schema and revision kept)")
    if run.stamped:
        lines.append(f"stamped alembic revision {run.stamped}: `placement-manage db sync` takes it to head")
    listed = [(t.table, low, high) for t in run.tables for low, high in t.differing]
    for table, low, high in listed[:max_listed]:
        lines.append(f"differs: {table} keys {_range(low, high)}")
    if len(listed) > max_listed:
        lines.append(f"... and {len(listed) - max_listed} more differing ranges (--json lists them all)")
    verdict = {"copy": "copied", "sync": "synced"}.get(run.command)
    if verdict:
        lines.append(f"{verdict} in {run.seconds:.1f} s; "
                     + ("now `fastmigrate placement verify` (with placement and nova-api stopped, or it "
                        "finds what changed since)" if run.command == "sync"
                        else "nova is still writing: during the outage run `fastmigrate placement sync`, then verify"))
    elif listed:
        lines.append(f"{len(listed)} differing key ranges: run `fastmigrate placement sync` (exit 3)")
    else:
        lines.append(f"every table equal on both sides ({run.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


def _table_json(t: TableResult) -> dict[str, Any]:
    return {"table": t.table, "source_rows": t.source_rows, "target_rows": t.target_rows,
            "rows_copied": t.rows_copied, "rows_deleted": t.rows_deleted, "chunks": t.chunks,
            "chunks_repaired": t.chunks_repaired, "seconds": t.seconds,
            "differing": [{"after": list(low) if low else None, "through": list(high) if high else None}
                          for low, high in t.differing]}


def placement_json(run: PlacementRun) -> str:
    document = {"command": f"placement {run.command}", "source": run.source, "target": run.target,
                "exit_code": int(run.exit_code), "seconds": run.seconds, "created_schema": run.created_schema,
                "replaced": run.replaced, "stamped": run.stamped, "tables": [_table_json(t) for t in run.tables]}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def format_placement_progress(run: PlacementRun, elapsed: float) -> str:
    done = sum(t.source_rows for t in run.tables)
    rate = done / elapsed if elapsed > 0 else 0.0
    left = max(run.expected_rows - done, 0)
    eta = f", ETA {int(left / rate // 60)}:{int(left / rate % 60):02d}" if rate > 0 and left else ""
    busy = [t.table for t in run.tables if t.chunks and not t.seconds]
    return (f"placement {run.command}: {done:,}/{run.expected_rows:,} rows, {rate:,.0f} rows/s{eta}"
            + (f" ({', '.join(busy)})" if busy else ""))
