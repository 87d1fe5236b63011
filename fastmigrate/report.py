"""Reports are pure formatters over a RunResult: a table for people, the summary document for automation (the
command line's last ``--json`` event), progress tracks and per-instance problems for the events."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .output import SCHEMA_VERSION, Track
from .results import DatabaseResult, RunResult

if TYPE_CHECKING:
    from .verify import VerifyResult, VerifyRun

__all__ = ["SCHEMA_VERSION", "Problem", "Seen", "database_problems", "database_tracks", "format_table",
           "format_verify", "run_document", "to_json", "total", "verified_tracks", "verify_document", "verify_json",
           "verify_tracks"]

def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


Column = tuple[str, Callable[[DatabaseResult], str]]
_DATABASE: Column = ("database", lambda db: db.database)
_BUSY_BROKEN: tuple[Column, ...] = (("busy", lambda db: _count(len(db.busy))),
                                    ("broken", lambda db: _count(len(db.broken))))
_SECONDS: Column = ("seconds", lambda db: f"{db.seconds:.1f}")
_COLUMNS: dict[str, tuple[Column, ...]] = {
    "flavors": (_DATABASE, ("found", lambda db: _count(db.found)), ("migrated", lambda db: _count(db.migrated)),
                *_BUSY_BROKEN, ("remaining", lambda db: _count(db.remaining)), _SECONDS,
                ("instances/s", lambda db: f"{db.rate:,.0f}")),
    "status": (_DATABASE, ("left", lambda db: _count(db.pending_before)),
               ("can migrate", lambda db: _count(db.migrated)), *_BUSY_BROKEN,
               ("blocker rows (291)", lambda db: _count(db.blocker_rows)), _SECONDS),
}
_HEADERS = {
    "flavors": "DRY RUN: nothing was written; 'migrated' counts what a real run would migrate.",
    "status": "STATUS (read only): 'left' have no blob yet; 'blocker rows' is what nova's Liberty migration 291 "
              "counts (live instance_type_id rows of live instances): it must be 0 before nova's schema can "
              "move past 290.",
}


def total(run: RunResult) -> DatabaseResult:
    """The databases added up (seconds: the longest, as they run at once)."""
    dbs = run.databases

    def known(values: list[int | None]) -> int | None:
        return None if any(v is None for v in values) else sum(v or 0 for v in values)

    return DatabaseResult(
        database="total", dry_run=run.dry_run, found=sum(db.found for db in dbs),
        migrated=sum(db.migrated for db in dbs), busy=[u for db in dbs for u in db.busy],
        broken=[b for db in dbs for b in db.broken], skipped=sum(db.skipped for db in dbs),
        pending_before=known([db.pending_before for db in dbs]), remaining=known([db.remaining for db in dbs]),
        blocker_rows=known([db.blocker_rows for db in dbs]), seconds=max((db.seconds for db in dbs), default=0.0))


def format_table(run: RunResult, *, max_listed: int = 50) -> str:
    columns = _COLUMNS[run.command]
    added = total(run)
    if any(db.cell for db in run.databases):
        columns = (("cell", lambda db: db.cell or ""), *columns)
        added.cell, added.database = "total", ""
    shown = [*run.databases, added] if len(run.databases) > 1 else run.databases
    rows = [tuple(name for name, _ in columns), *(tuple(cell(db) for _, cell in columns) for db in shown)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]

    def line(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))
        return "  ".join((first, *rest)).rstrip()

    out = []
    if run.dry_run:
        out.append(_HEADERS[run.command])
    out.append(line(rows[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in rows[1:len(run.databases) + 1])
    if len(run.databases) > 1:
        out.append("  ".join("-" * w for w in widths))
        out.append(line(rows[-1]))
    for db in run.databases:
        if db.error:
            out.append(f"\nerror: {db.error}")
        if db.broken:
            out.append(f"\n{db.database}: {len(db.broken)} instance(s) need manual intervention (left untouched):")
            out.extend(f"  {b.uuid}: {b.reason}" for b in db.broken[:max_listed])
            if len(db.broken) > max_listed:
                out.append(f"  ... and {len(db.broken) - max_listed} more (--json lists them all)")
        if db.busy:
            out.append(f"\n{db.database}: {len(db.busy)} busy instance(s) skipped (task_state set, or vm_state "
                       "rescued/resized); rerun when they settle, or use --force")
        if db.left_behind:
            out.append(f"\n{db.database}: {len(db.left_behind)} incomplete old_/new_ flavor(s) were treated as absent "
                       "and left in system_metadata (as upstream did)")
        if db.interrupted:
            out.append(f"\n{db.database}: interrupted: the batches in flight were committed, nothing else was "
                       "started; rerun to continue")
        if db.stopped_early:
            out.append(f"\n{db.database}: stopped at --max-count; rerun to continue")
    out.append(f"\nexit code {run.exit_code}")
    return "\n".join(out) + "\n"


def _db_json(db: DatabaseResult) -> dict[str, Any]:
    return {
        "database": db.database,
        "cell": db.cell,
        "found": db.found,
        "migrated": db.migrated,
        "rebuilt": db.rebuilt,
        "busy": len(db.busy),
        "broken": len(db.broken),
        "remaining": db.remaining,
        "pending_before": db.pending_before,
        "blocker_rows": db.blocker_rows,
        "skipped": db.skipped,
        "refreshed": db.refreshed,
        "retries": db.retries,
        "transactions": db.transactions,
        "throttled_seconds": round(db.throttled_seconds, 3),
        "throttled_by": db.throttled_by,
        "galera": db.galera,
        "scanned": db.scanned,
        "pages": db.pages,
        "batch_size": db.batch_size,
        "sysmeta_rows_removed": db.rows_removed,
        "stopped_early": db.stopped_early,
        "interrupted": db.interrupted,
        "seconds": round(db.seconds, 3),
        "instances_per_second": round(db.rate, 1),
        "exit_code": db.exit_code,
        "error": db.error,
        "broken_instances": [{"uuid": b.uuid, "reason": b.reason} for b in db.broken],
        "busy_instances": db.busy,
        "left_behind": [{"uuid": uuid, "note": note} for uuid, note in db.left_behind],
    }


def run_document(run: RunResult) -> dict[str, Any]:
    added = total(run)
    return {"command": run.command, "dry_run": run.dry_run, "exit_code": run.exit_code,
            "databases": [_db_json(db) for db in run.databases],
            "total": {"found": added.found, "migrated": added.migrated, "busy": len(added.busy),
                      "broken": len(added.broken), "remaining": added.remaining, "seconds": round(added.seconds, 3)}}


def to_json(run: RunResult) -> str:
    """The run as one JSON document (the library's; the command line prints it as the summary event)."""
    return orjson.dumps({"schema_version": SCHEMA_VERSION, **run_document(run)},
                        option=orjson.OPT_INDENT_2).decode() + "\n"


def database_tracks(db: DatabaseResult) -> list[Track]:
    """Progress of one database: instances dealt with (migrated, busy, broken, skipped) of those found at the
    start."""
    done = db.migrated + len(db.busy) + len(db.broken) + db.skipped
    return [Track(db.cell or db.database, done, db.pending_before, "instances")]


def verify_tracks(run: VerifyRun) -> list[Track]:
    return [t for db in run.databases for t in verified_tracks(db)]


def verified_tracks(db: VerifyResult) -> list[Track]:
    """Progress of one database's verify: instances re-read of those in scope at the start."""
    return [Track(db.cell or db.database, db.checked, db.expected, "instances")]


Problem = tuple[str, str, str, str]  # (track, kind, instance, problem)
Seen = dict[tuple[str, str], int]  # (track, kind) -> how many of those problems were reported already


def database_problems(db: DatabaseResult, seen: Seen) -> list[Problem]:
    """(track, kind, instance, problem) of the instances that need a human or were skipped busy since
    ``seen`` (which it advances): the lists only grow, so a call costs what is new, not the whole run."""
    key = db.cell or db.database
    broken, busy = seen.get((key, "broken"), 0), seen.get((key, "busy"), 0)
    seen[key, "broken"], seen[key, "busy"] = len(db.broken), len(db.busy)
    return [*((key, "broken", b.uuid, b.reason) for b in db.broken[broken:]),
            *((key, "busy", uuid, "task_state set, or vm_state rescued/resized: rerun when it settles, or --force")
              for uuid in db.busy[busy:])]


def format_verify(run: VerifyRun, *, max_listed: int = 50) -> str:
    """The verify report: one line per database, then the mismatches found."""
    def name(db: Any) -> str:
        return f"{db.cell}: {db.database}" if db.cell else db.database

    width = max(len("database"), *(len(name(db)) for db in run.databases))
    out = [f"{'database'.ljust(width)}  {'instances':>9}  {'mismatches':>10}  {'seconds':>7}",
           f"{'-' * width}  {'-' * 9}  {'-' * 10}  {'-' * 7}"]
    out += [f"{name(db).ljust(width)}  {db.checked:>9,}  {len(db.mismatches):>10,}  {db.seconds:>7.1f}"
            for db in run.databases]
    for db in run.databases:
        if db.error:
            out.append(f"\nerror: {db.error}")
        if db.mismatches:
            out.append(f"\n{db.database}: {len(db.mismatches)} mismatch(es):")
            out.extend(f"  {uuid}: {problem}" for uuid, problem in db.mismatches[:max_listed])
            if len(db.mismatches) > max_listed:
                out.append(f"  ... and {len(db.mismatches) - max_listed} more (--json lists them all)")
    out.append(f"\nexit code {run.exit_code}")
    return "\n".join(out) + "\n"


def verify_json(run: VerifyRun) -> str:
    return orjson.dumps({"schema_version": SCHEMA_VERSION, **verify_document(run)},
                        option=orjson.OPT_INDENT_2).decode() + "\n"


def verify_document(run: VerifyRun) -> dict[str, Any]:
    return {"command": "verify", "exit_code": run.exit_code, "databases": [
        {"database": db.database, "cell": db.cell, "instances": db.checked, "mismatches": len(db.mismatches),
         "seconds": round(db.seconds, 3), "exit_code": db.exit_code, "error": db.error,
         "mismatched_instances": [{"uuid": uuid, "problem": problem} for uuid, problem in db.mismatches]}
        for db in run.databases]}
