"""What a placement command found and did, per table, and its exit code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..results import ExitCode
from .statements import Key

__all__ = ["AuditResult", "Orphan", "PlacementRun", "TableResult", "TrackingNote"]


@dataclass(slots=True)
class TableResult:
    table: str
    source_rows: int = 0  # rows read or counted at the source
    target_rows: int = 0  # rows counted at the target (sync, verify)
    rows_copied: int = 0  # rows written to the target
    rows_deleted: int = 0  # target rows removed: gone or changed at the source (sync; changed ones are copied again)
    chunks: int = 0
    chunks_repaired: int = 0  # sync: chunks that differed and were made equal
    differing: list[tuple[Key | None, Key | None]] = field(default_factory=list)  # key ranges (low, high]
    seconds: float = 0.0


@dataclass(slots=True)
class TrackingNote:
    """The change tracking in nova_api (see tracking.py): what a run found, did and left."""

    target: str | None = None  # the target nova_api logs changes for, after the run (None: not tracked)
    elsewhere: bool = False  # that target is another one than this run's
    complete: bool = False  # after the run: a sync into that target can follow the log
    pending: int = 0  # entries in the log after the run
    installed: int = 0  # triggers this run created
    removed: int = 0  # untrack: triggers removed
    followed: bool = False  # sync: it followed the log
    replayed: int = 0  # sync: log entries applied
    why_checksums: str | None = None  # sync: why it compared checksums instead


@dataclass(slots=True)
class PlacementRun:
    command: str  # copy, sync, verify or untrack
    source: str  # URLs with their passwords masked
    target: str
    tables: list[TableResult] = field(default_factory=list)
    created_schema: bool = False
    replaced: bool = False  # --replace emptied the target's tables first
    in_server: bool = False  # rows copied inside the server (INSERT ... SELECT), not through fastmigrate
    indexes_built: int = 0  # secondary indexes built after the rows were in (copy, or a sync finishing one)
    missing_indexes: list[str] = field(default_factory=list)  # verify: those an unfinished copy has yet to build
    stamped: str | None = None  # the alembic revision written to alembic_version, if this run wrote it
    tracking: TrackingNote = field(default_factory=TrackingNote)
    seconds: float = 0.0
    expected_rows: int = 0  # for progress: the source's row count when the run began

    @property
    def exit_code(self) -> ExitCode:
        if any(t.differing for t in self.tables) or self.missing_indexes:
            return ExitCode.DIFFERENCES
        return ExitCode.DONE

    def table(self, name: str) -> TableResult:
        return next(t for t in self.tables if t.table == name)


@dataclass(frozen=True, slots=True)
class Orphan:
    """A consumer nothing in nova accounts for, with its allocations as the audit read them."""

    consumer: str
    reason: str  # why: instance deleted in <cell>, migration <status> in <cell>, or no record anywhere
    allocations: tuple[tuple[int, int, int, int], ...]  # (allocation id, provider id, class id, used)
    generation: int | None  # its consumers row's generation; None when it has no consumers row
    project_id: int | None


@dataclass(slots=True)
class AuditResult:
    placement: str  # URLs with their passwords masked
    api: str
    delete: bool = False
    cells: list[str] = field(default_factory=list)
    expected_consumers: int = 0  # rows of consumers when the run began: for progress
    consumers: int = 0  # consumers with allocations, looked at
    allocations: int = 0
    not_nova: int = 0  # consumers holding none of nova's resource classes: left alone
    kept: Counter[str] = field(default_factory=Counter)  # not live instances, kept: migrating, building, mapped
    orphans: list[Orphan] = field(default_factory=list)
    deleted: list[Orphan] = field(default_factory=list)  # --delete: removed by this run
    gone: list[Orphan] = field(default_factory=list)  # --delete: already removed by someone else
    changed: list[Orphan] = field(default_factory=list)  # --delete: changed since read; left for the next run
    no_root: list[tuple[str, str | None]] = field(default_factory=list)  # providers (uuid, name), root NULL
    no_consumer: list[tuple[str, int]] = field(default_factory=list)  # (consumer uuid, allocations) without a row
    providers: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # id -> (uuid, name), for reports
    projects: dict[int, str] = field(default_factory=dict)  # id -> external id
    class_names: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    def held(self, orphans: list[Orphan]) -> dict[str, int]:
        """Resource class name -> the amount these orphans hold."""
        total: Counter[str] = Counter()
        for orphan in orphans:
            for _, _, class_id, used in orphan.allocations:
                total[self.class_names.get(class_id, str(class_id))] += used
        return dict(total)

    @property
    def blocking_consumers(self) -> list[tuple[str, int]]:
        """Allocations without a consumers row that are still there (an orphan deleted here no longer is)."""
        removed = {o.consumer for o in (*self.deleted, *self.gone)}
        return [(c, n) for c, n in self.no_consumer if c not in removed]

    @property
    def exit_code(self) -> ExitCode:
        if self.changed:
            return ExitCode.MORE  # rerun: they are looked at again
        if (self.orphans and not self.delete) or self.no_root or self.blocking_consumers:
            return ExitCode.DIFFERENCES
        return ExitCode.DONE
