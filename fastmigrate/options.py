"""Options, validated once at the edge into an immutable object."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .reader import ReadOptions
from .writer import WriteOptions

__all__ = ["FlavorOptions"]

_FIRST_ADAPTIVE_BATCH = 500  # about 0.1 s on a quiet MariaDB; the first transactions move it from there


@dataclass(frozen=True, slots=True)
class FlavorOptions:
    batch_size: int | None = None  # instances per transaction; None: adapt it toward target_seconds
    target_seconds: float = 0.5  # adaptive batches: aim for transactions of about this long
    min_batch_size: int = 50  # adaptive batches: never fewer instances than this per transaction...
    max_batch_size: int = 2_000  # ...nor more (with a few batches alive at once, this bounds memory)
    max_count: int | None = None  # stop after this many instances
    force: bool = False  # also migrate busy instances (task_state set, vm_state rescued/resized)
    include_deleted: bool = False  # also migrate soft-deleted instances
    soft_delete: bool = False  # soft-delete the replaced rows (deleted = id) instead of deleting them
    dry_run: bool = False  # read and report, write nothing
    writers: int | None = None  # concurrent writer transactions per database; None: see writers_on()
    queue_depth: int = 2  # batches waiting between two stages
    statement_timeout: float = 10.0  # seconds any one statement may run (MySQL/MariaDB); 0: no limit
    max_transaction_bytes: int = 4 << 20  # a batch is cut when its blobs reach this size (Galera writesets)
    sleep: float = 0.0  # seconds to pause between batches
    max_rate: float | None = None  # instances per second at most
    max_load: tuple[tuple[str, float], ...] = ()  # pause while a server status variable is over its limit
    # Galera nodes (wsrep_on = ON) only: pause while flow control paused replication for more than this share
    # of the time since the last sample (0: any pause; 1: never), or while the node's receive queue is
    # longer than max_recv_queue (None: half the length at which the node calls flow control itself).
    max_flow_control: float = 0.0
    max_recv_queue: float | None = None
    # Merge each flavor's extra specs from nova's flavor tables (stashed keys win), as Kilo's migration did:
    # the cell database's instance_types, else nova_api's flavors (api_db: nova_api's URL, when known).
    flavor_extra_specs: bool = True
    api_db: str | None = None

    def __post_init__(self) -> None:
        for name, low, high in (("batch_size", 1, 100_000), ("min_batch_size", 1, 100_000),
                                ("max_batch_size", 1, 100_000), ("writers", 1, 64), ("queue_depth", 1, 64)):
            value = getattr(self, name)
            if name in ("batch_size", "writers") and value is None:
                continue
            if not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number from {low} to {high}, "
                                 f"not {value!r}")
        if self.min_batch_size > self.max_batch_size:
            raise UsageError(f"--min-batch-size ({self.min_batch_size}) must not be over --max-batch-size "
                             f"({self.max_batch_size})")
        if not isinstance(self.target_seconds, int | float) or not 0.01 <= self.target_seconds <= 60:
            raise UsageError(f"--target-seconds must be a number of seconds from 0.01 to 60, "
                             f"not {self.target_seconds!r}")
        if not isinstance(self.statement_timeout, int | float) or not 0 <= self.statement_timeout <= 86_400:
            raise UsageError(f"--statement-timeout must be a number of seconds from 0 (no limit) to 86400, "
                             f"not {self.statement_timeout!r}")
        if not isinstance(self.max_transaction_bytes, int) or self.max_transaction_bytes < 65_536:
            raise UsageError(f"--max-transaction-bytes must be a whole number of at least 65536 (one blob), "
                             f"not {self.max_transaction_bytes!r}")
        for name in ("sleep", "max_rate"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a number of at least 0, not {value!r}")
        if not isinstance(self.max_flow_control, int | float) or not 0 <= self.max_flow_control <= 1:
            raise UsageError(f"--max-flow-control must be a share of time from 0 (any pause) to 1 (never), "
                             f"not {self.max_flow_control!r}")
        if self.max_recv_queue is not None and (not isinstance(self.max_recv_queue, int | float)
                                                or self.max_recv_queue < 0):
            raise UsageError(f"--max-recv-queue must be a number of at least 0, not {self.max_recv_queue!r}")
        if self.max_count is not None and (not isinstance(self.max_count, int) or self.max_count < 1):
            raise UsageError(f"--max-count must be a whole number of at least 1, not {self.max_count!r}")

    def writers_on(self, backend: str) -> int:
        """Writers for a database of this backend: ``writers`` if given; else two on MySQL/MariaDB (one's
        statements run while the other's batch is built: measured 14% faster at 100k), one on SQLite, which
        lets one transaction write at a time anyway."""
        if self.writers is not None:
            return self.writers
        return 1 if backend == "sqlite" else 2

    @property
    def adaptive(self) -> bool:
        return self.batch_size is None and self.min_batch_size < self.max_batch_size

    @property
    def first_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return max(self.min_batch_size, min(self.max_batch_size, _FIRST_ADAPTIVE_BATCH))

    @property
    def read(self) -> ReadOptions:
        return ReadOptions(include_deleted=self.include_deleted, force=self.force)

    @property
    def write(self) -> WriteOptions:
        return WriteOptions(soft_delete=self.soft_delete, read=self.read)
