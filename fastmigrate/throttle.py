"""Throttling decisions: pure functions over what others measured (gh-ost's throttler, in small).

The writer asks before each batch how long to wait; these functions only look at numbers: how much was
done in how long, and the server status variables the writer sampled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["GALERA_STATUS", "GaleraSample", "galera_pressure", "next_batch_size", "overloaded", "parse_max_load",
           "rate_pause"]

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


# What a Galera node reports that the throttle reads (SHOW GLOBAL STATUS).
GALERA_STATUS = ("wsrep_flow_control_paused_ns", "wsrep_flow_control_paused", "Uptime_since_flush_status",
                 "wsrep_local_recv_queue", "wsrep_flow_control_interval_high")
_GALERA_DEFAULT_FC_LIMIT = 16.0  # gcs.fc_limit's default, for nodes that do not report their interval


@dataclass(frozen=True, slots=True)
class GaleraSample:
    """One reading of a Galera node: when (monotonic seconds), how long flow control has paused replication
    in all (seconds; None when the node does not say), its receive queue, and where flow control starts."""

    at: float
    paused: float | None
    recv_queue: float | None
    fc_limit: float

    @classmethod
    def of(cls, status: Mapping[str, float], at: float) -> GaleraSample:
        paused: float | None = None
        if "wsrep_flow_control_paused_ns" in status:
            paused = status["wsrep_flow_control_paused_ns"] / 1e9
        elif "wsrep_flow_control_paused" in status and "Uptime_since_flush_status" in status:
            # Older nodes give only the paused fraction since FLUSH STATUS: back to a running total.
            paused = status["wsrep_flow_control_paused"] * status["Uptime_since_flush_status"]
        return cls(at, paused, status.get("wsrep_local_recv_queue"),
                   status.get("wsrep_flow_control_interval_high", _GALERA_DEFAULT_FC_LIMIT))


def galera_pressure(before: GaleraSample | None, now: GaleraSample, max_flow_control: float,
                    max_recv_queue: float | None) -> list[str]:
    """Why to hold back on a Galera cluster (empty: go on).

    - flow control paused replication for more than ``max_flow_control`` of the time between the two
      samples (0: any pause at all): some node cannot keep up with the cluster's writes;
    - this node's receive queue is over ``max_recv_queue`` (default: half the queue length at which the node
      itself would call flow control), i.e. it is falling behind applying what the others write.
    """
    reasons: list[str] = []
    if before is not None and before.paused is not None and now.paused is not None and now.at > before.at:
        interval = now.at - before.at
        share = (now.paused - before.paused) / interval  # negative after a FLUSH STATUS: not a pause
        if share > max_flow_control:
            reasons.append(f"wsrep flow control paused replication {min(share, 1.0):.0%} of the last {interval:.1f} s")
    limit = now.fc_limit / 2 if max_recv_queue is None else max_recv_queue
    if now.recv_queue is not None and now.recv_queue > limit:
        reasons.append(f"wsrep_local_recv_queue={now.recv_queue:g}>{limit:g}")
    return reasons
