"""A placement run as a table for people, its summary document for automation, its progress tracks. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..output import Track
from .results import AuditResult, Orphan, PlacementRun, TableResult
from .statements import Key

__all__ = ["audit_document", "audit_json", "audit_tracks", "format_audit", "format_placement", "placement_document",
           "placement_json", "placement_tracks"]

def _headers(run: PlacementRun) -> tuple[str, ...]:
    if run.tracking.followed:
        return ("table", "changed keys", "target rows", "copied", "deleted", "batches", "repaired", "seconds")
    return ("table", "source rows", "target rows", "copied", "deleted", "chunks",
            "repaired" if run.command == "sync" else "differing", "seconds")


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
    if run.command == "untrack":
        return _format_untrack(run)
    rows = [_headers(run), *(_cells(t, run.command) for t in run.tables)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"placement {run.command}: {run.source} -> {run.target}"]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip())
    if run.created_schema:
        lines.append("created placement's initial schema in the target")
    if run.in_server:
        lines.append("rows copied inside the server (INSERT ... SELECT from the source database), not through "
                     "fastmigrate")
    if run.indexes_built:
        lines.append(f"built {run.indexes_built} secondary indexes after the rows were in")
    if run.missing_indexes:
        lines.append(f"indexes an unfinished copy has yet to build: {', '.join(run.missing_indexes)} (run sync)")
    if run.replaced:
        lines.append("--replace: emptied the target's placement tables first (schema and revision kept)")
    if run.stamped:
        lines.append(f"stamped alembic revision {run.stamped}: `placement-manage db sync` takes it to head")
    lines += _tracking_lines(run)
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
    elif listed or run.missing_indexes:
        lines.append(f"{len(listed)} differing key ranges: run `fastmigrate placement sync` (exit 3)")
    else:
        lines.append(f"every table equal on both sides ({run.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


def _tracking_lines(run: PlacementRun) -> list[str]:
    note, lines = run.tracking, []
    if note.installed:
        lines.append(f"installed change tracking in nova_api ({note.installed} triggers): nova's changes to these "
                     "tables are logged from now on")
    if note.followed:
        lines.append(f"followed the change log: {note.replayed:,} logged changes applied")
    elif note.why_checksums and run.command == "sync":
        lines.append(f"compared checksums: {note.why_checksums}")
    if note.elsewhere:
        lines.append(f"nova_api logs changes for another target: {note.target}")
    elif note.complete:
        lines.append(f"change log: {note.pending:,} changes waiting; the next sync follows it "
                     "(`fastmigrate placement untrack` removes the tracking once placement runs on its own)")
    elif note.target:
        lines.append("change tracking installed; the log becomes usable when a full pass (a copy, or a sync "
                     "comparing checksums) finishes")
    return lines


def _format_untrack(run: PlacementRun) -> str:
    note = run.tracking
    if not note.removed and note.target is None:
        return f"placement untrack: {run.source}: no change tracking to remove\n"
    kept_for = f" (kept for {note.target})" if note.target else ""
    return (f"placement untrack: {run.source}: removed {note.removed} triggers and the change log{kept_for}, "
            f"{note.pending:,} changes in it dropped; a later sync compares checksums ({run.seconds:.1f} s)\n")


def _table_json(t: TableResult) -> dict[str, Any]:
    return {"table": t.table, "source_rows": t.source_rows, "target_rows": t.target_rows,
            "rows_copied": t.rows_copied, "rows_deleted": t.rows_deleted, "chunks": t.chunks,
            "chunks_repaired": t.chunks_repaired, "seconds": t.seconds,
            "differing": [{"after": list(low) if low else None, "through": list(high) if high else None}
                          for low, high in t.differing]}


def placement_document(run: PlacementRun) -> dict[str, Any]:
    return {"command": f"placement {run.command}", "source": run.source, "target": run.target,
            "exit_code": int(run.exit_code), "seconds": run.seconds, "created_schema": run.created_schema,
            "replaced": run.replaced, "in_server": run.in_server, "stamped": run.stamped,
            "indexes_built": run.indexes_built, "missing_indexes": run.missing_indexes,
            "tracking": dataclasses.asdict(run.tracking), "tables": [_table_json(t) for t in run.tables]}


def placement_json(run: PlacementRun) -> str:
    return orjson.dumps(placement_document(run), option=orjson.OPT_INDENT_2).decode() + "\n"


def placement_tracks(run: PlacementRun) -> list[Track]:
    """Progress: rows compared or copied (changes applied, for a sync following the log)."""
    if run.tracking.followed:
        return [Track(f"placement {run.command}", run.tracking.replayed, run.expected_rows, "changes")]
    return [Track(f"placement {run.command}", sum(t.source_rows for t in run.tables), run.expected_rows or None,
                  "rows")]


def audit_tracks(result: AuditResult) -> list[Track]:
    return [Track("placement audit", result.consumers, result.expected_consumers or None, "consumers")]


def _amounts(held: dict[str, int]) -> str:
    return ", ".join(f"{name} {amount:,}" for name, amount in sorted(held.items())) or "nothing"


def _orphan_lines(result: AuditResult, orphan: Orphan) -> list[str]:
    """One line per provider the orphan holds resources on."""
    by_provider: dict[int, dict[str, int]] = {}
    for _, provider, class_id, used in orphan.allocations:
        by_provider.setdefault(provider, {})[result.class_names.get(class_id, str(class_id))] = used
    lines = []
    for provider, held in sorted(by_provider.items()):
        uuid, name = result.providers.get(provider, (f"provider id {provider}", None))
        lines.append(f"  {orphan.consumer}  {uuid} ({name})  {_amounts(held)}  [{orphan.reason}]")
    return lines


def format_audit(result: AuditResult, *, max_listed: int = 50) -> str:
    lines = [f"placement audit: placement {result.placement}, nova_api {result.api}, {len(result.cells)} cell(s): "
             f"{', '.join(result.cells)}",
             f"  consumers with allocations   {result.consumers:,} ({result.allocations:,} allocations); "
             f"{result.not_nova:,} hold none of nova's resource classes (left alone)",
             f"  not live, kept               {result.kept['migrating']:,} migrating, {result.kept['building']:,} "
             f"building (build request), {result.kept['mapped']:,} mapped to a cell that has no record yet",
             f"  orphaned                     {len(result.orphans):,} consumers, "
             f"{sum(len(o.allocations) for o in result.orphans):,} allocations, holding "
             f"{_amounts(result.held(result.orphans))}"]
    if result.delete:
        lines.append(f"  deleted                      {len(result.deleted):,} consumers, "
                     f"{sum(len(o.allocations) for o in result.deleted):,} allocations"
                     + (f"; {len(result.gone):,} already gone" if result.gone else "")
                     + (f"; {len(result.changed):,} changed since read, left for the next run" if result.changed
                        else ""))
    lines.append(f"  providers without root_provider_id     {len(result.no_root):,}")
    lines.append(f"  allocations without a consumers row    "
                 f"{sum(n for _, n in result.blocking_consumers):,} (of {len(result.blocking_consumers):,} consumers)")
    listed = result.deleted if result.delete else result.orphans
    if listed:
        lines.append(("deleted" if result.delete else "orphaned") + ": consumer  provider (name)  resources  [why]")
        shown = [line for orphan in listed[:max_listed] for line in _orphan_lines(result, orphan)]
        lines += shown
        if len(listed) > max_listed:
            lines.append(f"  ... and {len(listed) - max_listed:,} more consumers (--json lists them all)")
    for orphan in result.changed[:max_listed]:
        lines.append(f"changed since read, not deleted: {orphan.consumer}")
    for uuid, name in result.no_root[:max_listed]:
        lines.append(f"no root_provider_id: provider {uuid} ({name})")
    for uuid, count in result.blocking_consumers[:max_listed]:
        lines.append(f"no consumers row: consumer {uuid} ({count} allocations)")
    lines.append(_audit_verdict(result))
    return "\n".join(lines) + "\n"


def _audit_verdict(result: AuditResult) -> str:
    code = int(result.exit_code)
    advice = []
    if result.changed:
        advice.append("some orphans changed while this ran: rerun to look at them again")
    if result.orphans and not result.delete:
        advice.append("rerun with --delete to remove the orphaned allocations (placement's writers may keep "
                      "running)")
    if result.no_root or result.blocking_consumers:
        advice.append("`placement-manage db online_data_migrations` fixes what blocks `placement-manage db sync`")
    if not advice:
        advice.append("nothing orphaned, nothing blocking `placement-manage db sync`")
    return f"{'; '.join(advice)} ({result.seconds:.1f} s, exit {code})"


def _orphan_json(result: AuditResult, orphan: Orphan) -> dict[str, Any]:
    return {"consumer": orphan.consumer, "reason": orphan.reason,
            "project": result.projects.get(orphan.project_id) if orphan.project_id is not None else None,
            "consumer_record": orphan.generation is not None,
            "allocations": [{"id": allocation, "provider": result.providers.get(provider, (None, None))[0],
                             "provider_name": result.providers.get(provider, (None, None))[1],
                             "resource_class": result.class_names.get(class_id, str(class_id)), "used": used}
                            for allocation, provider, class_id, used in orphan.allocations]}


def audit_document(result: AuditResult) -> dict[str, Any]:
    return {
        "command": "placement audit", "placement": result.placement, "api": result.api, "cells": result.cells,
        "exit_code": int(result.exit_code), "seconds": result.seconds, "delete": result.delete,
        "consumers": result.consumers, "allocations": result.allocations, "not_nova": result.not_nova,
        "kept": {kind: result.kept[kind] for kind in ("migrating", "building", "mapped")},
        "orphaned": [_orphan_json(result, o) for o in result.orphans],
        "held": result.held(result.orphans),
        "deleted": [o.consumer for o in result.deleted], "already_gone": [o.consumer for o in result.gone],
        "changed": [o.consumer for o in result.changed],
        "providers_without_root": [{"uuid": uuid, "name": name} for uuid, name in result.no_root],
        "allocations_without_consumer": [{"consumer": uuid, "allocations": count}
                                         for uuid, count in result.blocking_consumers],
    }


def audit_json(result: AuditResult) -> str:
    return orjson.dumps(audit_document(result), option=orjson.OPT_INDENT_2).decode() + "\n"
