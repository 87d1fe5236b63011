"""The command line: parses, calls the library, prints. Only ``main`` exits."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, NoReturn, Protocol, TextIO, TypeVar

import orjson

from .db import DATABASE_ERRORS
from .errors import FastmigrateError, UsageError
from .flavors import flavor_status, migrate_flavors
from .options import FlavorOptions
from .placement import PlacementOptions
from .placement.audit import AuditOptions
from .report import format_progress, format_table, format_verify, to_json, verify_json
from .results import DatabaseResult, ExitCode, RunResult
from .throttle import parse_max_load
from .verify import verify_flavors

__all__ = ["main"]

T = TypeVar("T")
R = TypeVar("R")
_DEFAULTS = FlavorOptions()
_PLACEMENT = PlacementOptions()
_AUDIT = AuditOptions()

EXIT_CODES = """exit codes:
  0    nothing left that can be migrated
  1    work done and more remains (--max-count reached, busy instances skipped, or interrupted): run again
  2    some instances need manual intervention (listed), or the run failed
  127  invalid usage or input (bad URL, bad number, not a nova cell database)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _max_load(text: str) -> tuple[tuple[str, float], ...]:
    try:
        return tuple(parse_max_load(text).items())
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastmigrate", description="Fast, online, verifiable nova data migrations.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    flavors = commands.add_parser(
        "flavors", help="move flavors from instance_system_metadata into instance_extra.flavor",
        description="Move every live instance's flavor from instance_system_metadata into "
                    "instance_extra.flavor, in batches of one transaction each, while nova keeps running.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    flavors.add_argument("--db", action="append", required=True, metavar="URL",
                         help="a nova cell database, as [database]/connection in nova.conf "
                              "(mysql+pymysql://USER:PASS@HOST/nova or sqlite:///PATH); repeat for several")
    flavors.add_argument("--batch-size", type=_positive, metavar="N",
                         help="a fixed number of instances per transaction (default: adapt it between "
                              "--min-batch-size and --max-batch-size so that transactions take --target-seconds)")
    flavors.add_argument("--target-seconds", type=float, default=_DEFAULTS.target_seconds, metavar="S",
                         help="adaptive batches: aim for transactions of about S seconds (default %(default)g)")
    flavors.add_argument("--min-batch-size", type=_positive, default=_DEFAULTS.min_batch_size, metavar="N",
                         help="adaptive batches: at least N instances per transaction (default %(default)s)")
    flavors.add_argument("--max-batch-size", type=_positive, default=_DEFAULTS.max_batch_size, metavar="N",
                         help="adaptive batches: at most N instances per transaction (default %(default)s)")
    flavors.add_argument("--max-count", type=_positive, metavar="N", help="stop after N instances")
    flavors.add_argument("--force", action="store_true",
                         help="also migrate busy instances (task_state set, vm_state rescued or resized)")
    flavors.add_argument("--include-deleted", action="store_true", help="also migrate soft-deleted instances")
    flavors.add_argument("--soft-delete", action="store_true",
                         help="soft-delete the replaced system_metadata rows (deleted = id) instead of deleting them")
    flavors.add_argument("--dry-run", action="store_true", help="read and report; write nothing")
    flavors.add_argument("--status", action="store_true",
                         help="read only: instances left, busy and broken, and the rows nova's Liberty blocker "
                              "migration 291 counts (what must be 0 before upgrading past it)")
    flavors.add_argument("--writers", type=_positive, default=_DEFAULTS.writers, metavar="N",
                         help="concurrent writer transactions per database (default: 2 on MySQL/MariaDB, "
                              "1 on SQLite)")
    flavors.add_argument("--statement-timeout", type=float, default=_DEFAULTS.statement_timeout, metavar="S",
                         help="longest any one statement may run, in seconds, on MySQL/MariaDB (default "
                              "%(default)g; lock waits get half of it and are retried; 0: no limit)")
    flavors.add_argument("--max-transaction-bytes", type=_positive, default=_DEFAULTS.max_transaction_bytes,
                         metavar="N", help="cut a batch when its blobs reach N bytes: small writesets for "
                                           "Galera (default %(default)s)")
    flavors.add_argument("--sleep", type=float, default=_DEFAULTS.sleep, metavar="S",
                         help="pause S seconds before each batch but the first")
    flavors.add_argument("--max-rate", type=float, metavar="N", help="migrate at most N instances per second")
    flavors.add_argument("--max-load", metavar="VAR=N[,...]", type=_max_load,
                         help="pause while a server status variable is over its limit, e.g. Threads_running=25 "
                              "(checked before every batch)")
    flavors.add_argument("--max-flow-control", type=float, default=_DEFAULTS.max_flow_control, metavar="SHARE",
                         help="on Galera (wsrep_on=ON): pause while flow control paused replication for more than "
                              "this share of the time since the last check (default %(default)g: any pause; 1: never)")
    flavors.add_argument("--max-recv-queue", type=float, metavar="N",
                         help="on Galera: pause while wsrep_local_recv_queue is over N (default: half of "
                              "wsrep_flow_control_interval_high, the length at which the node calls flow control)")
    flavors.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the table")

    verify = commands.add_parser(
        "verify", help="re-read migrated databases and report every instance nova could not load",
        description="An independent re-read: every instance has exactly one instance_extra row with a blob that "
                    "loads as nova reads it, no live flavor rows left, and (after --soft-delete) a current flavor "
                    "equal to its soft-deleted rows. Read only. Run it right after the migration: a flavor nova "
                    "changed since then differs from the soft-deleted rows by design.",
        epilog="exit codes:\n  0    everything verified\n  3    mismatches found (listed)\n"
               "  2    the run failed\n  127  invalid usage or input",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("--db", action="append", required=True, metavar="URL", help="a nova cell database; repeat")
    verify.add_argument("--include-deleted", action="store_true", help="also verify soft-deleted instances")
    verify.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    _placement_parser(commands)

    demo = commands.add_parser("demo", help="generate a demo fleet in SQLite, migrate it and check the result")
    demo.add_argument("--instances", type=_positive, default=20_000, metavar="N",
                      help="instances in the demo fleet (default %(default)s)")
    demo.add_argument("--path", default="demo-fleet.db", help="the SQLite file to (re)create (default %(default)s)")
    demo.add_argument("--broken", type=int, default=0, metavar="N", help="plant N broken instances")
    return parser


PLACEMENT_EXIT_CODES = """exit codes:
  0    done (verify: both sides equal)
  2    needs intervention or failed: a target that already holds placement data (see --replace), change
       tracking refused by nova_api's grants or kept for another target (see untrack), a lost database
  3    verify: differences found (the key ranges are listed; run sync)
  127  invalid usage or input (bad URL, not a nova_api database, --from and --to the same)"""

AUDIT_EXIT_CODES = """exit codes:
  0    nothing orphaned (with --delete: every orphan removed) and nothing blocking `placement-manage db sync`
  1    --delete: some orphans changed while the audit ran and were left alone; rerun
  2    failed: a database could not be reached or a statement failed
  3    orphaned allocations found (listed; --delete removes them), or something blocks `placement-manage db
       sync` (listed; `placement-manage db online_data_migrations` fixes it)
  127  invalid usage or input (bad URL, not a nova_api / placement / cell database, cells left out)"""


def _placement_parser(commands: Any) -> None:
    placement = commands.add_parser(
        "placement", help="copy placement's tables from nova_api into a placement database, sync, verify; "
                          "audit orphaned allocations",
        description="Move placement out of nova_api with a short outage: `copy` while nova runs, `sync` during "
                    "the outage (only what changed), `verify` before starting placement; `audit` finds the "
                    "allocations of instances deleted while placement was down.")
    steps = placement.add_subparsers(dest="step", required=True, parser_class=_Parser)
    helps = {
        "copy": "create placement's schema in an empty target (stamped b4ed3a175331) and copy the 11 tables, "
                "several at once, while nova keeps running",
        "sync": "re-copy only what changed since: the keys nova_api's change log lists (after a copy or sync "
                "with --track-changes), else the rows of the chunks whose checksums differ (computed in each "
                "server), rows deleted at the source included; repeatable",
        "verify": "compare row counts and chunk checksums of every table; change nothing",
    }
    for step, text in helps.items():
        sub = steps.add_parser(step, help=text, description=text[0].upper() + text[1:] + ".",
                               epilog=PLACEMENT_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--from", dest="source", required=True, metavar="URL",
                         help="the nova_api database ([api_database]/connection in nova.conf)")
        sub.add_argument("--to", dest="target", required=True, metavar="URL",
                         help="the placement database ([placement_database]/connection in placement.conf)")
        sub.add_argument("--chunk-size", type=_positive, default=_PLACEMENT.chunk_size, metavar="N",
                         help="rows per chunk: one transaction of a copy, one checksum (default %(default)s)")
        sub.add_argument("--parallel", type=_positive, default=_PLACEMENT.parallel, metavar="N",
                         help="tables worked on at once (default %(default)s)")
        sub.add_argument("--statement-timeout", type=float, default=0, metavar="S",
                         help="longest any one statement may run, in seconds (default: the server's limit)")
        if step != "verify":
            sub.add_argument("--through-client", action="store_true",
                             help="read and write every row through fastmigrate even when both databases are on "
                                  "one server (by default rows are then copied inside it, INSERT ... SELECT)")
        if step == "copy":
            sub.add_argument("--replace", action="store_true",
                             help="empty a target that already holds placement data and copy again (stop "
                                  "placement first; the schema and its alembic revision are kept)")
        if step != "verify":
            sub.add_argument("--track-changes", action="store_true",
                             help="install triggers in nova_api that log the key of every placement row nova "
                                  "changes, so that later syncs rewrite only those (needs CREATE, DROP and TRIGGER "
                                  "on nova_api; `placement untrack` removes them)")
        if step == "sync":
            sub.add_argument("--checksums", action="store_true",
                             help="compare every chunk's checksums even when the change log could be followed")
        sub.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    text = ("remove the change tracking from nova_api (--track-changes): its triggers, then its log")
    untrack = steps.add_parser("untrack", help=text, description=text[0].upper() + text[1:] + ".",
                               epilog=PLACEMENT_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    untrack.add_argument("--from", dest="source", required=True, metavar="URL",
                         help="the nova_api database ([api_database]/connection in nova.conf)")
    untrack.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    text = ("list allocations whose consumer is no live instance in any cell, no migration in progress and no "
            "instance being built, with what they hold; --delete removes them. Also report what blocks "
            "`placement-manage db sync`: providers without root_provider_id, allocations without a consumers row")
    audit = steps.add_parser("audit", help=text, description=text[0].upper() + text[1:] + ".",
                             epilog=AUDIT_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("--api-db", required=True, metavar="URL",
                       help="the nova_api database ([api_database]/connection in nova.conf)")
    audit.add_argument("--placement-db", metavar="URL",
                       help="placement's database (default: --api-db, where placement lived before it was "
                            "extracted)")
    audit.add_argument("--cell-db", action="append", default=[], metavar="URL",
                       help="a cell database; repeat for every cell (default: every cell of nova_api's "
                            "cell_mappings, cell0 included)")
    audit.add_argument("--delete", action="store_true",
                       help="remove the orphaned allocations (and their consumer records), a few consumers per "
                            "transaction, each only if unchanged since read")
    audit.add_argument("--chunk-size", type=_positive, default=_AUDIT.chunk_size, metavar="N",
                       help="allocations read per chunk (default %(default)s)")
    audit.add_argument("--statement-timeout", type=float, default=0, metavar="S",
                       help="longest any one statement may run, in seconds (default: the server's limit)")
    audit.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _placement(args: argparse.Namespace) -> int:
    from .placement import audit_placement, copy_placement, sync_placement, untrack_placement, verify_placement
    from .placement.report import (audit_json, format_audit, format_audit_progress, format_placement,
                                   format_placement_progress, placement_json)

    if args.step == "audit":
        audit = AuditOptions(chunk_size=args.chunk_size, delete=args.delete, statement_timeout=args.statement_timeout)
        return _reported(args, lambda progress: audit_placement(args.api_db, args.placement_db, args.cell_db, audit,
                                                                on_progress=progress),
                         format_audit_progress, audit_json, format_audit,
                         "deletions committed are kept (each removed only allocations that were orphaned): rerun")
    if args.step == "untrack":
        return _reported(args, lambda _: untrack_placement(args.source), format_placement_progress, placement_json,
                         format_placement, "rerun it")
    options = PlacementOptions(chunk_size=args.chunk_size, parallel=args.parallel,
                               replace=getattr(args, "replace", False), statement_timeout=args.statement_timeout,
                               in_server=not getattr(args, "through_client", False),
                               track_changes=getattr(args, "track_changes", False),
                               checksums=getattr(args, "checksums", False))
    command = {"copy": copy_placement, "sync": sync_placement, "verify": verify_placement}[args.step]
    # Every chunk is its own transaction and idempotent: what was committed stays, a rerun goes on.
    return _reported(args, lambda progress: command(args.source, args.target, options, on_progress=progress),
                     format_placement_progress, placement_json, format_placement,
                     "committed chunks are kept: rerun (after a failed copy: `placement sync`, or `copy --replace`)")


class _Outcome(Protocol):
    @property
    def exit_code(self) -> ExitCode: ...


Out = TypeVar("Out", bound=_Outcome)


def _reported(args: argparse.Namespace, start: Callable[[Any], Coroutine[Any, Any, Out]],
              progress_line: Callable[[Out, float], str], as_json: Callable[[Out], str], as_text: Callable[[Out], str],
              after_failure: str) -> int:
    """A placement command: progress on a terminal, its report (or JSON) on stdout, its exit code; a database
    failure becomes a message that says what was kept."""
    began = time.monotonic()
    progress: _Progress[Out] | None = None if args.json else _Progress(
        sys.stderr, lambda result: progress_line(result, time.monotonic() - began))
    try:
        result = _run(start(progress))
    except DATABASE_ERRORS as exc:
        text = str(getattr(exc, "orig", None) or exc)
        raise FastmigrateError(f"placement {args.step} failed: {text}; {after_failure}") from None
    finally:
        if progress:
            progress.close()
    sys.stdout.write(as_json(result) if args.json else as_text(result))
    return int(result.exit_code)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


class _Progress(Generic[R]):
    """One updating line on a terminal, ``render(result)``, at most twice a second; silent otherwise."""

    def __init__(self, stream: TextIO, render: Callable[[R], str]) -> None:
        self.stream = stream
        self.render = render
        self.enabled = stream.isatty()
        self.last = 0.0

    def __call__(self, result: R) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.5:
            self.last = now
            self.stream.write("\r\x1b[2K" + self.render(result))
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


async def _flavors(databases: Sequence[str], options: FlavorOptions, progress: _Progress[DatabaseResult] | None,
                   status: bool) -> RunResult:
    """migrate_flavors with signal handling: the first SIGINT/SIGTERM lets the batches being written commit
    and starts nothing more (exit 1, with the summary); a second one cancels, rolling them back."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(name: str) -> None:
        if stop.is_set():
            print(f"\nfastmigrate: {name} again: rolling back the batches in flight", file=sys.stderr)
            task.cancel()
        else:
            print(f"\nfastmigrate: {name}: committing the batches in flight, then stopping "
                  f"({name} again to roll them back instead)", file=sys.stderr)
            stop.set()

    # Signals reach only the main thread; main() called from another thread (an embedding program) leaves
    # signals to its caller, who can pass a stop event to migrate_flavors itself.
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        run = flavor_status if status else migrate_flavors
        return await run(databases, options, on_progress=progress, stop=stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _failed(args: argparse.Namespace, message: str, code: int) -> int:
    """A run that could not finish: the message on stderr, and with --json a document on stdout too, so that
    automation reading stdout always gets one."""
    print(f"fastmigrate: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        command = " ".join(filter(None, (args.command, getattr(args, "step", None))))
        sys.stdout.write(orjson.dumps({"command": command, "exit_code": int(code), "error": message},
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return _run(run_demo(args.path, args.instances, args.broken, out=sys.stdout))
        if args.command == "placement":
            return _placement(args)
        if args.command == "verify":
            checked = _run(verify_flavors(args.db, include_deleted=args.include_deleted))
            sys.stdout.write(verify_json(checked) if args.json else format_verify(checked))
            return checked.exit_code
        options = FlavorOptions(batch_size=args.batch_size, target_seconds=args.target_seconds,
                                min_batch_size=args.min_batch_size, max_batch_size=args.max_batch_size,
                                max_count=args.max_count, force=args.force,
                                include_deleted=args.include_deleted, soft_delete=args.soft_delete,
                                dry_run=args.dry_run, writers=args.writers,
                                statement_timeout=args.statement_timeout,
                                max_transaction_bytes=args.max_transaction_bytes, sleep=args.sleep,
                                max_rate=args.max_rate, max_load=args.max_load or (),
                                max_flow_control=args.max_flow_control, max_recv_queue=args.max_recv_queue)
        progress = _Progress(sys.stderr, format_progress) if not args.json else None
        try:
            result = _run(_flavors(args.db, options, progress, args.status))
        except asyncio.CancelledError:
            print("fastmigrate: stopped; the batches in flight were rolled back, committed ones are kept; "
                  "rerun to continue", file=sys.stderr)
            return ExitCode.MORE
        finally:
            if progress:
                progress.close()
    except UsageError as exc:
        return _failed(args, str(exc), ExitCode.USAGE)
    except FastmigrateError as exc:
        return _failed(args, str(exc), exc.exit_code)
    except Exception:  # noqa: BLE001 - a bug must not exit 1, which tells automation to loop
        traceback.print_exc()
        return _failed(args, "unexpected error (a bug: please report it with the traceback above); committed "
                       "batches are kept, nothing half-written", ExitCode.FAILED)
    sys.stdout.write(to_json(result) if args.json else format_table(result))
    return result.exit_code
