"""Throttling decisions: pure functions over what others measured (gh-ost's throttler, in small).

The writer asks before each batch how long to wait; these functions only look at numbers: how much was
done in how long, and the server status variables the writer sampled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import UsageError

__all__ = ["next_batch_size", "overloaded", "parse_max_load", "rate_pause"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def rate_pause(done: int, elapsed: float, max_rate: float | None) -> float:
    """Seconds to wait so that ``done`` instances over the run's time stay at or under ``max_rate``/s."""
    if not max_rate:
        return 0.0
    return max(0.0, done / max_rate - elapsed)


def next_batch_size(size: int, done: int, seconds: float, target: float, low: int, high: int) -> int:
    """The next batch size, so that a transaction takes about ``target`` seconds, given that the last one
    wrote ``done`` instances in ``seconds`` (lock waits and retries included: contention shrinks batches).

    Damped, since one transaction's time is noisy: at most double or half of ``size`` per step, always
    within ``[low, high]``.
    """
    if done <= 0:
        return size
    ideal = done * target / seconds if seconds > 0 else 2.0 * size
    return max(low, min(high, 2 * size, max(size // 2, round(ideal))))


def overloaded(status: Mapping[str, float], limits: Mapping[str, float]) -> list[str]:
    """The limits the server is over, as ``Name=value>limit`` (empty: go on). A metric the server does
    not report is not over its limit."""
    return [f"{name}={status[name]:g}>{limit:g}" for name, limit in limits.items()
            if name in status and status[name] > limit]


def parse_max_load(text: str) -> dict[str, float]:
    """``Threads_running=25,Threads_connected=800`` -> {name: limit}, as gh-ost's --max-load reads it."""
    limits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = -1.0
        if not sep or not _NAME.match(name) or limit < 0:
            raise UsageError(f"--max-load takes STATUS_VARIABLE=NUMBER[,...], e.g. Threads_running=25; "
                             f"not {part!r}")
        limits[name] = limit
    if not limits:
        raise UsageError("--max-load takes STATUS_VARIABLE=NUMBER[,...], e.g. Threads_running=25")
    return limits
