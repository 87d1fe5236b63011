"""The command line: parses, calls the library, prints. Only ``main`` exits."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, NoReturn, Protocol, TypeVar


from .db import DATABASE_ERRORS, SECRETS, mask, scrub
from .deployment import NovaConfig, cell_databases, read_config
from .errors import FastmigrateError, UsageError
from .flavors import flavor_status, migrate_flavors
from .options import FlavorOptions
from .placement import PlacementOptions
from .placement.audit import AuditOptions
from .output import Display, Events, Track, log, setup_logging
from .report import (Problem, Seen, database_problems, database_tracks, format_table, format_verify, run_document,
                     verified_tracks, verify_document, verify_tracks)
from .results import DatabaseResult, ExitCode, RunResult
from .throttle import parse_max_load
from .verify import VerifyResult, VerifyRun, verify_flavors

__all__ = ["main"]

T = TypeVar("T")
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


def _databases_options(parser: argparse.ArgumentParser) -> None:
    """How a flavor command is told its databases: by URL, from nova.conf, or every cell nova_api maps."""
    group = parser.add_argument_group("databases (one of --db, --config-file, --all-cells/--cell)")
    group.add_argument("--db", action="append", default=[], metavar="URL",
                       help="a nova cell database, as [database]/connection in nova.conf "
                            "(mysql+pymysql://USER:PASS@HOST/nova or sqlite:///PATH); repeat for several")
    _config_option(group)
    group.add_argument("--all-cells", action="store_true",
                       help="every cell database nova_api's cell_mappings lists, cell0 included, concurrently")
    group.add_argument("--cell", action="append", default=[], metavar="NAME_OR_UUID",
                       help="only this cell of cell_mappings; repeat for several")
    group.add_argument("--api-db", metavar="URL",
                       help="nova_api, where --all-cells and --cell read cell_mappings (default: "
                            "[api_database]/connection of --config-file)")


def _output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true",
                       help="newline-delimited JSON events on stdout (start, progress, problem, summary or error; "
                            "see the README) instead of the report")
    group.add_argument("--progress-interval", type=float, default=5.0, metavar="S",
                       help="with --json: a progress event per database at most every S seconds (default %(default)g)")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="log every step (and the database driver's warnings) on stderr")
    group.add_argument("-q", "--quiet", action="count", default=0,
                       help="no progress display, and only warnings and errors in the log")


def _config_option(parser: Any) -> None:
    parser.add_argument("--config-file", action="append", default=[], metavar="PATH",
                        help="an oslo.config file (nova.conf, placement.conf) to read database URLs from, so that "
                             "no password is typed on a command line; repeat, later files win")


async def _cell_databases(args: argparse.Namespace) -> tuple[list[str], list[str | None]]:
    found = await cell_databases(args.db, args.config, api_db=args.api_db,
                                 all_cells=args.all_cells, cells=args.cell)
    return [url for url, _ in found], [cell for _, cell in found]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastmigrate", description="Fast, online, verifiable nova data migrations.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    flavors = commands.add_parser(
        "flavors", help="move flavors from instance_system_metadata into instance_extra.flavor",
        description="Move every live instance's flavor from instance_system_metadata into "
                    "instance_extra.flavor, in batches of one transaction each, while nova keeps running.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _databases_options(flavors)
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
    flavors.add_argument("--no-flavor-extra-specs", action="store_true",
                         help="do not merge each flavor's extra specs from nova's flavor tables (instance_types in "
                              "the cell database, else nova_api's flavors); by default they are merged, the specs "
                              "stashed in system_metadata winning, as Kilo's migrate_flavor_data did")
    flavors.add_argument("--max-flow-control", type=float, default=_DEFAULTS.max_flow_control, metavar="SHARE",
                         help="on Galera (wsrep_on=ON): pause while flow control paused replication for more than "
                              "this share of the time since the last check (default %(default)g: any pause; 1: never)")
    flavors.add_argument("--max-recv-queue", type=float, metavar="N",
                         help="on Galera: pause while wsrep_local_recv_queue is over N (default: half of "
                              "wsrep_flow_control_interval_high, the length at which the node calls flow control)")
    _output_options(flavors)

    verify = commands.add_parser(
        "verify", help="re-read migrated databases and report every instance nova could not load",
        description="An independent re-read: every instance has exactly one instance_extra row with a blob that "
                    "loads as nova reads it, no live flavor rows left, and (after --soft-delete) a current flavor "
                    "equal to its soft-deleted rows. Read only. Run it right after the migration: a flavor nova "
                    "changed since then differs from the soft-deleted rows by design.",
        epilog="exit codes:\n  0    everything verified\n  3    mismatches found (listed)\n"
               "  2    the run failed\n  127  invalid usage or input",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _databases_options(verify)
    verify.add_argument("--include-deleted", action="store_true", help="also verify soft-deleted instances")
    _output_options(verify)

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
        sub.add_argument("--from", dest="source", metavar="URL",
                         help="the nova_api database (default: [api_database]/connection of --config-file)")
        sub.add_argument("--to", dest="target", metavar="URL",
                         help="the placement database (default: [placement_database]/connection of --config-file, "
                              "placement.conf)")
        _config_option(sub)
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
        _output_options(sub)
    text = ("remove the change tracking from nova_api (--track-changes): its triggers, then its log")
    untrack = steps.add_parser("untrack", help=text, description=text[0].upper() + text[1:] + ".",
                               epilog=PLACEMENT_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    untrack.add_argument("--from", dest="source", metavar="URL",
                         help="the nova_api database (default: [api_database]/connection of --config-file)")
    _config_option(untrack)
    _output_options(untrack)
    text = ("list allocations whose consumer is no live instance in any cell, no migration in progress and no "
            "instance being built, with what they hold; --delete removes them. Also report what blocks "
            "`placement-manage db sync`: providers without root_provider_id, allocations without a consumers row")
    audit = steps.add_parser("audit", help=text, description=text[0].upper() + text[1:] + ".",
                             epilog=AUDIT_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("--api-db", metavar="URL",
                       help="the nova_api database (default: [api_database]/connection of --config-file)")
    audit.add_argument("--placement-db", metavar="URL",
                       help="placement's database (default: [placement_database]/connection of --config-file, "
                            "else --api-db, where placement lived before it was extracted)")
    _config_option(audit)
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
    _output_options(audit)


def _placement(args: argparse.Namespace) -> int:
    from .placement import (PlacementRun, audit_placement, copy_placement, sync_placement, untrack_placement,
                            verify_placement)
    from .placement.report import (audit_document, audit_tracks, format_audit, format_placement, placement_document,
                                   placement_tracks)

    placement_shown: _Shown[PlacementRun] = _Shown(placement_tracks, format_placement, placement_document)

    config: NovaConfig = args.config

    def url(given: str | None, configured: str | None, option: str, where: str) -> str:
        if given or configured:
            return str(given or configured)
        raise UsageError(f"name {where}: {option} URL, or --config-file with its [{where.split()[0]}]/connection")

    if args.step == "audit":
        audit = AuditOptions(chunk_size=args.chunk_size, delete=args.delete, statement_timeout=args.statement_timeout)
        api = url(args.api_db, config.api_database, "--api-db", "api_database (nova_api)")
        placement = args.placement_db or config.placement_database
        return _execute(args, lambda progress: audit_placement(api, placement, args.cell_db, audit,
                                                               nova_database=config.database, on_progress=progress),
                        _Shown(audit_tracks, format_audit, audit_document),
                        after_failure="deletions committed are kept (each removed only allocations that were "
                                      "orphaned): rerun")
    source = url(args.source, config.api_database, "--from", "api_database (nova_api)")
    if args.step == "untrack":
        return _execute(args, lambda _: untrack_placement(source), placement_shown, after_failure="rerun it")
    target = url(args.target, config.placement_database, "--to", "placement_database (placement)")
    options = PlacementOptions(chunk_size=args.chunk_size, parallel=args.parallel,
                               replace=getattr(args, "replace", False), statement_timeout=args.statement_timeout,
                               in_server=not getattr(args, "through_client", False),
                               track_changes=getattr(args, "track_changes", False),
                               checksums=getattr(args, "checksums", False))
    command = {"copy": copy_placement, "sync": sync_placement, "verify": verify_placement}[args.step]
    # Every chunk is its own transaction and idempotent: what was committed stays, a rerun goes on.
    return _execute(args, lambda progress: command(source, target, options, on_progress=progress), placement_shown,
                    after_failure="committed chunks are kept: rerun (after a failed copy: `placement sync`, or "
                                  "`copy --replace`)")


class _Outcome(Protocol):
    @property
    def exit_code(self) -> int: ...


Out = TypeVar("Out", bound=_Outcome)
Problems = Callable[[Any, Seen], list[Problem]]  # the problems not yet in ``Seen``, which it advances


@dataclass(slots=True)
class _Shown(Generic[Out]):
    """How a command's result is shown: its progress tracks, problems, report and summary document."""

    tracks: Callable[[Out], list[Track]]
    text: Callable[[Out], str]
    document: Callable[[Out], dict[str, Any]]
    problems: Problems = lambda _, __: []


def _execute(args: argparse.Namespace, start: Callable[[Callable[[Any], None]], Coroutine[Any, Any, Out]],
             shown: _Shown[Out], *, progress_of: tuple[Callable[[Any], list[Track]], Problems] | None = None,
             after_failure: str = "") -> int:
    """Run a command: a live display on a terminal (not with --quiet), NDJSON events with --json (start,
    progress, problems, then the summary), else its report on stdout; its exit code. ``progress_of``: the
    tracks and the problems of what the command reports as it goes (default: ``shown``'s, of the same result).
    A database failure becomes a message that says what was kept (``after_failure``)."""
    command = " ".join(filter(None, (args.command, getattr(args, "step", None))))
    events = Events(sys.stdout, command, args.progress_interval) if args.json else None
    display = Display(sys.stderr, enabled=not args.quiet)
    setup_logging(args.verbose - args.quiet, display)
    if events:
        events.emit("start", argv=[mask(arg) if "://" in arg else arg for arg in args.argv])
    seen: Seen = {}  # problems emitted so far, per track and kind: each one once

    def emit(found: list[Problem]) -> None:
        for track, kind, instance, text in found:
            assert events is not None
            events.emit("problem", track=track, kind=kind, instance=instance, problem=text)

    tracks_of, problems_of = progress_of or (shown.tracks, shown.problems)

    def on_progress(result: Any) -> None:
        tracks = tracks_of(result)
        display.update(tracks)
        if events:
            events.progress(tracks)
            emit(problems_of(result, seen))

    try:
        result = _run(start(on_progress))
    except DATABASE_ERRORS as exc:
        text = str(getattr(exc, "orig", None) or exc)
        raise FastmigrateError(f"{command} failed: {text}; {after_failure}") from None
    finally:
        display.close()
    if events:
        events.progress(shown.tracks(result), final=True)
        emit(shown.problems(result, seen))
        events.emit("summary", **shown.document(result))
    else:
        sys.stdout.write(shown.text(result))
    return int(result.exit_code)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _verify(args: argparse.Namespace, progress: Callable[[VerifyResult], None]) -> VerifyRun:
    databases, cells = await _cell_databases(args)
    return await verify_flavors(databases, include_deleted=args.include_deleted, cells=cells, on_progress=progress)


async def _flavors(args: argparse.Namespace, options: FlavorOptions,
                   progress: Callable[[DatabaseResult], None]) -> RunResult:
    """migrate_flavors with signal handling: the first SIGINT/SIGTERM lets the batches being written commit
    and starts nothing more (exit 1, with the summary); a second one cancels, rolling them back."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("%s again: rolling back the batches in flight", name)
            task.cancel()
        else:
            log.warning("%s: committing the batches in flight, then stopping (%s again to roll them back instead)",
                        name, name)
            stop.set()

    # Signals reach only the main thread; main() called from another thread (an embedding program) leaves
    # signals to its caller, who can pass a stop event to migrate_flavors itself.
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        databases, cells = await _cell_databases(args)
        run = flavor_status if args.status else migrate_flavors
        return await run(databases, options, on_progress=progress, stop=stop, cells=cells)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _failed(args: argparse.Namespace, message: str, code: int) -> int:
    """A run that could not finish: the message on stderr, and with --json an ``error`` event on stdout too,
    so that automation reading stdout always gets its last line."""
    print(f"fastmigrate: error: {scrub(message, SECRETS)}", file=sys.stderr)
    if getattr(args, "json", False):
        command = " ".join(filter(None, (args.command, getattr(args, "step", None))))
        Events(sys.stdout, command).emit("error", exit_code=int(code), error=message)
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return _run(run_demo(args.path, args.instances, args.broken, out=sys.stdout))
        args.config = read_config(args.config_file)  # once: every command but the demo takes --config-file
        if args.command == "placement":
            return _placement(args)
        if args.command == "verify":
            return _execute(args, lambda progress: _verify(args, progress),
                            _Shown(verify_tracks, format_verify, verify_document),
                            progress_of=(verified_tracks, lambda _, __: []))
        options = FlavorOptions(batch_size=args.batch_size, target_seconds=args.target_seconds,
                                min_batch_size=args.min_batch_size, max_batch_size=args.max_batch_size,
                                max_count=args.max_count, force=args.force,
                                include_deleted=args.include_deleted, soft_delete=args.soft_delete,
                                dry_run=args.dry_run, writers=args.writers,
                                statement_timeout=args.statement_timeout,
                                max_transaction_bytes=args.max_transaction_bytes, sleep=args.sleep,
                                max_rate=args.max_rate, max_load=args.max_load or (),
                                max_flow_control=args.max_flow_control, max_recv_queue=args.max_recv_queue,
                                flavor_extra_specs=not args.no_flavor_extra_specs,
                                api_db=args.api_db or args.config.api_database)
        shown: _Shown[RunResult] = _Shown(
            lambda run: [t for db in run.databases for t in database_tracks(db)], format_table, run_document,
            lambda run, seen: [p for db in run.databases for p in database_problems(db, seen)])
        try:
            return _execute(args, lambda progress: _flavors(args, options, progress), shown,
                            progress_of=(database_tracks, database_problems),
                            after_failure="committed batches are kept, rerun to continue")
        except asyncio.CancelledError:
            return _failed(args, "stopped; the batches in flight were rolled back, committed ones are kept; rerun "
                                 "to continue", ExitCode.MORE)
    except UsageError as exc:
        return _failed(args, str(exc), ExitCode.USAGE)
    except FastmigrateError as exc:
        return _failed(args, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        # A signal outside the run's own handling: during start-up, or a second Ctrl-C landing while the run
        # removes its handlers at the very end. Every batch is one transaction: nothing is half-written.
        return _failed(args, "interrupted; committed batches are kept, nothing half-written; rerun to continue",
                       ExitCode.MORE)
    except Exception:  # noqa: BLE001 - a bug must not exit 1, which tells automation to loop
        traceback.print_exc()
        return _failed(args, "unexpected error (a bug: please report it with the traceback above); committed "
                       "batches are kept, nothing half-written", ExitCode.FAILED)
