"""What a command shows while it runs: a live display on a terminal (rich), newline-delimited JSON events for
automation (``--json``), log lines (``--verbose`` / ``--quiet``). Passwords are masked in all of them.

Rates and ETAs come from the recent pace (``RecentRate``: the last 30 seconds), not the average since the
start: a run that slowed down (a busy hour on the cloud) says so at once.

The events, one JSON object per line on stdout, each with ``schema_version`` and ``event``:

- ``start``: the command and what it works on;
- ``progress``: per track (a database, a cell, a placement step) at most every ``--progress-interval``
  seconds: ``done``, ``total``, ``unit``, ``rate`` (per second, recent), ``eta_seconds`` (null when unknown);
- ``problem``: one per instance that needs a human (``kind`` broken) or was skipped busy (``kind`` busy);
- ``summary``: last, the whole result (what ``--json`` printed as one document before), with ``exit_code``;
- ``error``: instead of the summary when the run could not finish: ``error``, ``exit_code``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from .db import SECRETS, scrub

__all__ = ["SCHEMA_VERSION", "Display", "Events", "RecentRate", "Track", "log", "setup_logging"]

SCHEMA_VERSION = 2
log = logging.getLogger("fastmigrate")


class RecentRate:
    """Units per second over the last ``window`` seconds of ``update`` calls."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self.samples: deque[tuple[float, int]] = deque()

    def update(self, done: int) -> None:
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    @property
    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, done: int, total: int | None) -> float | None:
        """Seconds left at the recent rate; None when nothing is known (no total, no pace yet)."""
        rate = self.rate
        if total is None or rate <= 0:
            return None
        return max(total - done, 0) / rate


@dataclass(frozen=True, slots=True)
class Track:
    """One line of progress: a database, a cell, a placement step."""

    key: str
    done: int
    total: int | None
    unit: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Events:
    """NDJSON events on ``out`` (see the module's docstring)."""

    def __init__(self, out: TextIO, command: str, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.command, self.interval, self.clock = out, command, interval, clock
        self.rates: dict[str, RecentRate] = {}
        self.last_sent: dict[str, float] = {}

    def emit(self, event: str, **fields: Any) -> None:
        document = {"schema_version": SCHEMA_VERSION, "event": event, "time": _now(), "command": self.command,
                    **fields}
        line = orjson.dumps(document).decode()
        self.out.write(scrub(line, SECRETS) + "\n")
        self.out.flush()

    def progress(self, tracks: Iterable[Track], *, final: bool = False) -> None:
        now = self.clock()
        for track in tracks:
            rate = self.rates.setdefault(track.key, RecentRate(clock=self.clock))
            rate.update(track.done)
            if final or now - self.last_sent.get(track.key, -self.interval) >= self.interval:
                self.last_sent[track.key] = now
                eta = rate.eta(track.done, track.total)
                self.emit("progress", track=track.key, done=track.done, total=track.total, unit=track.unit,
                          rate=round(rate.rate, 1), eta_seconds=None if eta is None else round(eta))


class Display:
    """A live progress display on a terminal: one bar per track, done/total, recent rate, ETA. Does nothing
    when ``stream`` is not a terminal (or ``enabled`` is False)."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.enabled = enabled and stream.isatty()
        self.rates: dict[str, RecentRate] = {}
        self.tasks: dict[str, Any] = {}
        self.progress: Any = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self.console = Console(file=stream)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                                     TextColumn("{task.fields[pace]}"), console=self.console, transient=True,
                                     refresh_per_second=4)
            self.progress.start()

    def update(self, tracks: Iterable[Track]) -> None:
        if not self.enabled:
            return
        for track in tracks:
            rate = self.rates.setdefault(track.key, RecentRate())
            rate.update(track.done)
            eta = rate.eta(track.done, track.total)
            count = f"{track.done:,}/{track.total:,} {track.unit}" if track.total is not None else f"{track.done:,}"
            pace = f"{rate.rate:,.0f}/s" + (f"  ETA {_clock(eta)}" if eta is not None else "")
            if track.key not in self.tasks:
                self.tasks[track.key] = self.progress.add_task(track.key, total=track.total, count=count, pace=pace)
            self.progress.update(self.tasks[track.key], completed=track.done, total=track.total, count=count,
                                 pace=pace)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Masked(logging.Filter):
    """Every password fastmigrate has seen in a URL, masked in every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), SECRETS)
        record.args = None
        return True


def setup_logging(verbosity: int, display: Display | None = None, stream: TextIO | None = None) -> None:
    """Log lines on ``stream`` (above the live display when there is one): warnings and errors always; what
    a run does (``verbosity`` 0) when ``stream`` is a terminal; every step, retries included, with 1 or more
    (--verbose); only warnings with -1 (--quiet). The database driver's own warnings show with --verbose."""
    stream = stream or sys.stderr
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else (
        logging.INFO if stream.isatty() else logging.WARNING)
    handler: logging.Handler
    if display is not None and display.enabled:
        from rich.logging import RichHandler

        handler = RichHandler(console=display.console, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("fastmigrate: %(levelname)s: %(message)s"))
    handler.addFilter(_Masked())
    for name, wanted in (("fastmigrate", level), ("asyncmy", logging.WARNING if verbosity > 0 else logging.ERROR)):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(wanted)
        logger.propagate = False

