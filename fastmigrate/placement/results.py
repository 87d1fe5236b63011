"""What a placement command found and did, per table, and its exit code."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..results import ExitCode
from .statements import Key

__all__ = ["PlacementRun", "TableResult"]


@dataclass(slots=True)
class TableResult:
    table: str
    source_rows: int = 0  # rows read or counted at the source
    target_rows: int = 0  # rows counted at the target (sync, verify)
    rows_copied: int = 0  # rows written to the target
    rows_deleted: int = 0  # target rows removed: gone or changed at the source (sync)
    chunks: int = 0
    chunks_repaired: int = 0  # sync: chunks that differed and were made equal
    differing: list[tuple[Key | None, Key | None]] = field(default_factory=list)  # key ranges (low, high]
    seconds: float = 0.0


@dataclass(slots=True)
class PlacementRun:
    command: str  # copy, sync or verify
    source: str  # URLs with their passwords masked
    target: str
    tables: list[TableResult] = field(default_factory=list)
    created_schema: bool = False
    replaced: bool = False  # --replace emptied the target's tables first
    stamped: str | None = None  # the alembic revision written to alembic_version, if this run wrote it
    seconds: float = 0.0
    expected_rows: int = 0  # for progress: the source's row count when the run began

    @property
    def exit_code(self) -> ExitCode:
        if any(t.differing for t in self.tables):
            return ExitCode.DIFFERENCES
        return ExitCode.DONE

    def table(self, name: str) -> TableResult:
        return next(t for t in self.tables if t.table == name)
