"""Change tracking for ``placement sync``: triggers on nova_api's placement tables log the key of every row
inserted, updated or deleted, so that a sync rewrites those rows only. Its work then follows the changes, not
the size of the tables (pt-online-schema-change's triggers, put to a catch-up copy's use).

What ``--track-changes`` (on copy or sync) installs in nova_api, and ``placement untrack`` removes:

- ``fastmigrate_placement_log`` (seq, table_name, k1, k2): one row per changed row, its primary key;
- ``fastmigrate_placement_tracking``: one row: the target database the log is kept for, since when, and when
  a full pass into it (a copy, or a sync comparing checksums) last finished with every trigger in place;
- 33 triggers, ``AFTER INSERT/UPDATE/DELETE`` on each of the 11 tables, named ``fastmigrate_<table>_<ins|upd|del>``.

Why the log is exact. ``CREATE TRIGGER`` waits for the transactions already using the table (its metadata
lock), so every change committed after the triggers exist is logged, in the change's own transaction. A full
pass that starts after that leaves the target equal to the source except at logged keys. A sync reads the
committed entries, rewrites their keys in the target in one transaction (delete, then copy the source's
current row, if there is one) and then deletes exactly the entries it read: an entry whose transaction commits
later, whatever its seq, stays for the next sync, and a crash between the two steps only means the same keys
are rewritten again.

What it costs nova: one small INSERT per changed placement row, in the same transaction. A trigger whose log
table is gone does nothing (a handler for "no such table"), so a dropped log never fails nova's writes; the
sync then sees the tracking broken and compares checksums. The triggers run as the user who installed them:
drop that user only after ``placement untrack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import DATABASE_ERRORS, mysql_errno, read_rows, retrying
from ..errors import FastmigrateError
from .schema import COPY_ORDER, SPECS, TableSpec
from .statements import Key

__all__ = ["LOG", "TRACKING", "TRIGGERS", "TrackedElsewhere", "Tracking", "create_trigger", "drop", "forget",
           "install", "key_of", "mark_complete", "read_log", "read_state"]

LOG = "fastmigrate_placement_log"
TRACKING = "fastmigrate_placement_tracking"
_EVENTS = {"INSERT": "ins", "UPDATE": "upd", "DELETE": "del"}


def _trigger_name(table: str, event: str) -> str:
    return f"fastmigrate_{table}_{_EVENTS[event]}"


TRIGGERS = {_trigger_name(table, event): (table, event) for table in COPY_ORDER for event in _EVENTS}

_CREATE_LOG = (f"CREATE TABLE IF NOT EXISTS `{LOG}` (seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, "
               "table_name VARCHAR(64) NOT NULL, k1 INT NOT NULL, k2 INT NULL) ENGINE=InnoDB")
_CREATE_TRACKING = (f"CREATE TABLE IF NOT EXISTS `{TRACKING}` (id TINYINT NOT NULL PRIMARY KEY, "
                    "target VARCHAR(512) NOT NULL, since DATETIME NOT NULL, complete_at DATETIME NULL) ENGINE=InnoDB")
# A transaction that holds a table keeps CREATE TRIGGER waiting, and nova's next statements queue behind it:
# give up soon (retried with a backoff) rather than stall nova.
LOCK_WAIT = "SET SESSION lock_wait_timeout = 2"


def create_trigger(spec: TableSpec, event: str) -> str:
    """The trigger logging ``spec``'s key on ``event``; an UPDATE that changes the key logs the old key too."""
    def log(row: str) -> str:
        keys = [f"{row}.`{c}`" for c in spec.key] + (["NULL"] if len(spec.key) == 1 else [])
        return f"INSERT INTO `{LOG}` (table_name, k1, k2) VALUES ('{spec.name}', {', '.join(keys)});"

    if event == "UPDATE":
        moved = " OR ".join(f"NOT (OLD.`{c}` <=> NEW.`{c}`)" for c in spec.key)
        body = f"{log('NEW')} IF {moved} THEN {log('OLD')} END IF;"
    else:
        body = log("NEW" if event == "INSERT" else "OLD")
    return (f"CREATE TRIGGER `{_trigger_name(spec.name, event)}` AFTER {event} ON `{spec.name}` FOR EACH ROW "
            f"BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '42S02' BEGIN END; {body} END")


def key_of(spec: TableSpec, k1: int, k2: int | None) -> Key:
    """A logged entry's key, as the table's spec orders it."""
    return (int(k1),) if k2 is None or len(spec.key) == 1 else (int(k1), int(k2))


def read_log(last: int, limit: int) -> str:
    """The oldest ``limit`` committed entries up to ``last``: one batch of a sync."""
    return f"SELECT seq, table_name, k1, k2 FROM `{LOG}` WHERE seq <= {int(last)} ORDER BY seq LIMIT {int(limit)}"


class TrackedElsewhere(FastmigrateError):
    """nova_api already logs changes for another target (exit 2): one log cannot serve two."""


@dataclass(frozen=True, slots=True)
class Tracking:
    """What nova_api holds of the tracking, read before a run."""

    target: str | None  # the database the log is kept for ("host:port/name"); None: not installed
    complete: bool  # a full pass into that target finished with every trigger in place: the log can be followed
    missing: tuple[str, ...]  # triggers absent (all 33 when not installed)
    has_log: bool
    pending: int  # entries waiting in the log
    last: int  # the newest entry's seq

    def whole(self, target: str) -> bool:
        """Whether the tracking is kept for ``target`` with every trigger and the log in place: a full pass
        that begins so makes the log followable."""
        return self.target == target and not self.missing and self.has_log

    def follows(self, target: str) -> bool:
        """Whether a sync into ``target`` can follow the log instead of comparing checksums."""
        return self.whole(target) and self.complete

    def refuse_another(self, target: str) -> None:
        """Tracking for ``target`` cannot be installed while the log is kept for another."""
        if self.target not in (None, target):
            raise TrackedElsewhere(
                f"nova_api already logs placement changes for {self.target}, not {target}: one log cannot serve "
                "two targets. Run `fastmigrate placement untrack --from ...` first (the next sync into "
                f"{self.target} then compares checksums), or sync into {self.target}")

    def why_not(self, target: str) -> str:
        """Why a sync into ``target`` compares checksums (for the report)."""
        if self.target is None:
            return "changes are not tracked (--track-changes on copy or sync makes later syncs follow them)"
        if self.target != target:
            return f"nova_api tracks changes for another target ({self.target})"
        if self.missing or not self.has_log:
            lost = ", ".join(self.missing) or LOG
            return f"change tracking is broken ({lost} missing): rerun with --track-changes to repair it"
        return "no full pass has finished since the triggers were installed"


async def read_state(engine: AsyncEngine) -> Tracking:
    tables = {str(r[0]) for r in await read_rows(
        engine, "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                f"AND table_name IN ('{LOG}', '{TRACKING}')")}
    present = {str(r[0]) for r in await read_rows(
        engine, "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() "
                f"AND trigger_name IN ({', '.join(repr(n) for n in TRIGGERS)})")}
    target, complete = None, False
    if TRACKING in tables:
        for found, complete_at in await read_rows(engine, f"SELECT target, complete_at FROM `{TRACKING}`"):
            target, complete = str(found), complete_at is not None
    pending = last = 0
    if LOG in tables:
        ((pending, last),) = await read_rows(engine, f"SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM `{LOG}`")
    return Tracking(target, complete, tuple(n for n in TRIGGERS if n not in present), LOG in tables,
                    int(pending), int(last))


async def _execute(engine: AsyncEngine, *statements: str) -> None:
    async def attempt() -> None:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(LOCK_WAIT)
            for sql in statements:
                await conn.exec_driver_sql(sql)

    await retrying(attempt)


async def install(engine: AsyncEngine, target: str) -> int:
    """Make nova_api log changes for ``target``: the tables, the tracking row, every missing trigger. A
    trigger created now means changes may have gone unlogged: the log is complete again only after the next
    full pass (``mark_complete``). How many triggers it created. ``engine`` may write nova_api."""
    (await read_state(engine)).refuse_another(target)
    await _execute(engine, _CREATE_LOG, _CREATE_TRACKING,
                   f"INSERT IGNORE INTO `{TRACKING}` (id, target, since) VALUES (1, '{_quote(target)}', NOW())")
    state = await read_state(engine)
    if state.missing:
        await _execute(engine, f"UPDATE `{TRACKING}` SET complete_at = NULL")
    for name in state.missing:
        table, event = TRIGGERS[name]
        try:
            await _execute(engine, create_trigger(SPECS[table], event))
        except DATABASE_ERRORS as exc:  # 1359: an answer lost after it was made; it is there, as wanted
            if mysql_errno(exc) != 1359:
                raise
    return len(state.missing)


async def mark_complete(engine: AsyncEngine, target: str) -> bool:
    """After a full pass into ``target`` that began with every trigger in place: the log can be followed, if
    the triggers are all still there. Whether it could."""
    if not (await read_state(engine)).whole(target):
        return False
    await _execute(engine, f"UPDATE `{TRACKING}` SET complete_at = NOW()")
    return True


async def forget(engine: AsyncEngine, seqs: Sequence[int]) -> None:
    """Delete exactly these log entries, once the target has what they logged."""
    for i in range(0, len(seqs), 5_000):
        listed = ", ".join(str(int(s)) for s in seqs[i:i + 5_000])
        await _execute(engine, f"DELETE FROM `{LOG}` WHERE seq IN ({listed})")


async def drop(engine: AsyncEngine) -> int:
    """Remove the tracking: the triggers first (then no write needs the log), then the two tables. How many
    triggers it removed."""
    state = await read_state(engine)
    present = [name for name in TRIGGERS if name not in state.missing]
    for name in present:
        await _execute(engine, f"DROP TRIGGER IF EXISTS `{name}`")
    await _execute(engine, f"DROP TABLE IF EXISTS `{LOG}`", f"DROP TABLE IF EXISTS `{TRACKING}`")
    return len(present)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")
