"""What a run found and did: counters kept apart from the (frozen) options, and the exit-code contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .transform import Broken
from .writer import BatchOutcome

__all__ = ["DatabaseResult", "ExitCode", "RunResult"]


class ExitCode(IntEnum):
    """The contract deployment tools loop on (nova-manage's online_data_migrations convention)."""

    DONE = 0  # nothing left that can be migrated
    MORE = 1  # work done and more remains: --max-count reached, or busy instances skipped
    FAILED = 2  # some instances need manual intervention (broken), or the run failed
    DIFFERENCES = 3  # verify commands: differences found
    USAGE = 127  # invalid usage or input: bad URL, bad number, not a nova database


@dataclass(slots=True)
class DatabaseResult:
    database: str  # the URL with its password masked
    cell: str | None = None  # the cell's name (or uuid) when the database came from cell_mappings
    dry_run: bool = False
    scanned: int = 0  # instances looked at
    batch_size: int = 0  # instances per transaction at the end (adaptive: where it settled)
    pages: int = 0  # page reads (few where most instances are migrated: those are skipped in the server)
    found: int = 0  # of those, without a blob: migrated + busy + broken + skipped
    migrated: int = 0  # in a dry run: would be migrated
    rebuilt: int = 0  # of those, legacy instances without flavor rows, their flavor rebuilt from instance_types
    busy: list[str] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    skipped: int = 0  # migrated or deleted by someone else while this run was at it
    refreshed: int = 0  # changed between read and write; re-read and written from fresh data
    retries: int = 0
    throttled_seconds: float = 0.0  # paused by --sleep, --max-rate or --max-load
    throttled_by: str | None = None  # the last --max-load limit the server was over, or Galera's pressure
    galera: bool = False  # a Galera node: paused while flow control or the receive queue says so
    transactions: int = 0  # committed batches
    rows_removed: int = 0
    left_behind: list[tuple[str, str]] = field(default_factory=list)
    pending_before: int | None = None
    blocker_rows: int | None = None  # status only: what nova's Liberty migration 291 counts
    remaining: int | None = None  # instances without a blob after the run (busy and broken included)
    stopped_early: bool = False  # --max-count reached
    interrupted: bool = False  # stopped by a signal (or the library caller)
    seconds: float = 0.0
    error: str | None = None
    error_code: int = 0

    def absorb(self, outcome: BatchOutcome) -> None:
        self.migrated += outcome.migrated
        self.rebuilt += outcome.rebuilt
        self.transactions += 1
        self.rows_removed += outcome.rows_removed
        self.busy.extend(outcome.busy)
        self.broken.extend(outcome.broken)
        self.skipped += outcome.skipped
        self.refreshed += outcome.refreshed
        self.retries += outcome.retries
        self.left_behind.extend(outcome.left_behind)

    @property
    def rate(self) -> float:
        return self.migrated / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_code or ExitCode.FAILED
        if self.broken:
            return ExitCode.FAILED
        if self.remaining or self.interrupted:
            return ExitCode.MORE
        return ExitCode.DONE


@dataclass(slots=True)
class RunResult:
    databases: list[DatabaseResult]
    dry_run: bool = False
    command: str = "flavors"  # or "status"

    @property
    def exit_code(self) -> int:
        # 127 (the invocation is wrong) > 2 (needs a human) > 1 (loop again) > 0.
        return max((db.exit_code for db in self.databases), default=ExitCode.DONE)
