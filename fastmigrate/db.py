"""Database URLs, engines and the facts about drivers that the rest of the code should not know.

nova.conf URLs name sync drivers (``mysql+pymysql://``); fastmigrate swaps in the asyncio driver of the same
database (asyncmy, aiosqlite) so the URL can be pasted as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from asyncmy.errors import MySQLError
from sqlalchemy import Executable, delete, event, false, insert, inspect, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import ConnectionFailed, SchemaError, UsageError
from .schema import REQUIRED_COLUMNS, REQUIRED_INDEXES, instance_extra, sysmeta

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = [
    "DATABASE_ERRORS",
    "RETRYABLE_ERRNOS",
    "SECRETS",
    "backoff",
    "check_schema",
    "check_writable",
    "galera_enabled",
    "global_status",
    "connect_engine",
    "is_mysql",
    "mask",
    "mysql_errno",
    "mysql_url",
    "normalize_url",
    "read_catalog",
    "read_rows",
    "schema_problems",
    "session_settings",
    "retrying",
    "scrub",
]

_ASYNC_DRIVERS = {"mysql": "mysql+asyncmy", "mariadb": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}
# 1205 lock wait timeout, 1213 deadlock, 2006/2013 lost connection: try again (after a reconnect).
RETRYABLE_ERRNOS = frozenset({1205, 1213, 2006, 2013})
# What a database failure can look like: SQLAlchemy's wrapper, or (from the asyncio adaptation's pool
# reset of a connection the server killed) the driver's own exception, unwrapped.
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, MySQLError, sqlite3.Error)
# A statement cut off by the time budget: MariaDB's max_statement_time (1969), MySQL's max_execution_time (3024).
STATEMENT_TIMEOUT_ERRNOS = frozenset({1969, 3024})


# Every password seen in a URL (decoded, and as written), for what prints text that may quote one: log lines,
# JSON events. Passwords shorter than 4 characters are left out: masking "pw" everywhere would mangle words.
SECRETS: set[str] = set()


def remember_password(text: str, url: URL | None) -> None:
    for secret in (url.password if url is not None else None, _password_of(text)):
        if secret and len(str(secret)) >= 4:
            SECRETS.add(str(secret))


def normalize_url(text: str) -> URL:
    """The URL nova.conf holds, with its driver swapped for the asyncio one."""
    try:
        url = make_url(text)
        remember_password(text, url)
    except ArgumentError:
        remember_password(text, None)
        raise UsageError(
            f"{mask(text)!r} is not a database URL; "
            "use mysql+pymysql://USER:PASSWORD@HOST/DB or sqlite:///PATH"
        ) from None
    backend = url.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise UsageError(f"{mask(url)}: {backend!r} databases are not supported; use a mysql:// or sqlite:/// URL")
    # 'plugin' names SQLAlchemy plugins of the nova process (devstack's dbcounter): not ours to load.
    url = url.set(drivername=_ASYNC_DRIVERS[backend]).difference_update_query(["plugin"])
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise UsageError(f"{mask(url)}: name a database file, e.g. sqlite:////var/lib/nova/nova.sqlite")
    return url


def mysql_url(text: str) -> URL:
    """``normalize_url`` for the commands that work on MySQL/MariaDB only (placement's)."""
    url = normalize_url(text)
    if url.get_backend_name() != "mysql":
        raise UsageError(f"{mask(text)}: placement commands work on MySQL/MariaDB databases "
                         "(mysql+pymysql://USER:PASSWORD@HOST/nova_api)")
    return url


def _password_of(text: str) -> str:
    # For messages about URLs too broken to parse: mask whatever sits between ':' and '@' after '//'.
    rest = text.split("//", 1)[-1]
    creds = rest.rsplit("@", 1)[0] if "@" in rest else ""
    return creds.split(":", 1)[1] if ":" in creds else ""


def mask(url: URL | str) -> str:
    """The URL with its password shown as ***. A URL given as text without a password comes back exactly as
    written (re-rendered, SQLite's ``file:`` URIs would read ``file%3A``); text too broken to parse (or a
    template of nova's cell_mappings) with whatever stands where a password would."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return scrub(str(url), [_password_of(str(url))])
    if isinstance(url, str) and parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Text with every secret replaced by ***: for messages that may quote a URL or a driver error."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def is_mysql(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name == "mysql"


def mysql_errno(exc: BaseException) -> int | None:
    """The MySQL error number behind an exception (decisions go by number, never by message)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


Sleep = Callable[[float], Awaitable[None]]


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt + 1``: 0.05, 0.1, 0.2 ... capped at 2."""
    return min(0.05 * (1 << attempt), 2.0)


async def retrying(operation: Callable[[], Awaitable[T]], *, attempts: int = 6,
                   sleep: Sleep = asyncio.sleep) -> tuple[T, int]:
    """``operation()``, run again after a backoff when it fails with a retryable MySQL error (decided by
    number), at most ``attempts`` more times. Returns its result and the number of retries it took.

    Each call of ``operation`` must stand alone: its own connection from the pool (SQLAlchemy discards one
    that was lost) and its own transaction.
    """
    attempt = 0
    while True:
        try:
            return await operation(), attempt
        except DATABASE_ERRORS as exc:
            if mysql_errno(exc) not in RETRYABLE_ERRNOS or attempt >= attempts:
                raise
            log.debug("MySQL error %s, retry %d of %d: %s", mysql_errno(exc), attempt + 1, attempts,
                      getattr(exc, "orig", None) or exc)
        await sleep(backoff(attempt))
        attempt += 1


async def read_rows(engine: AsyncEngine, statement: str | Executable) -> list[Any]:
    """The rows of one read (SQL text or a Core statement) in autocommit: no snapshot held open between
    reads, each its own connection from the pool, retried on a lost connection."""
    async def attempt() -> list[Any]:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            result = await (conn.exec_driver_sql(statement) if isinstance(statement, str) else conn.execute(statement))
            return list(result)

    rows, _ = await retrying(attempt)
    return rows


def session_settings(server_version: str, statement_timeout: float) -> list[str]:
    """The SET statements for a MySQL-family session: a pure function of the server and the budget.

    The budget caps every statement (MariaDB's max_statement_time; MySQL's max_execution_time, which only
    covers SELECT). Lock waits get half of it, so that waiting on nova surfaces as a lock wait timeout
    (1205, retried) well before the budget would cut the statement off (1969, not retried).
    """
    settings = ["SET SESSION group_concat_max_len = 16777216"]
    mariadb = "mariadb" in server_version.lower()
    if mariadb and _version(server_version) >= (10, 3, 18):
        # MariaDB turns an IN list of 1,000 values or more into a join with a temporary table, a plan that
        # may scan the whole table instead of looking the values up (measured: 0.6 s against 0.08 s for a
        # batch of 2,000 uuids in 1.9M sysmeta rows). Keep IN lists as index lookups.
        settings.append("SET SESSION in_predicate_conversion_threshold = 0")
    if statement_timeout > 0:
        settings.append(f"SET SESSION innodb_lock_wait_timeout = {max(1, int(statement_timeout / 2))}")
        if mariadb:
            settings.append(f"SET SESSION max_statement_time = {statement_timeout:g}")
        else:
            settings.append(f"SET SESSION max_execution_time = {int(statement_timeout * 1000)}")
    return settings


def _version(server_version: str) -> tuple[int, ...]:
    """``'10.11.19-MariaDB-0+deb12u1'`` -> ``(10, 11, 19)`` (also after the ``5.5.5-`` of old handshakes)."""
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", server_version.removeprefix("5.5.5-"))
    return tuple(int(n) for n in found.groups()) if found else ()


def connect_engine(url: URL, *, pool_size: int = 4, read_only: bool = False,
                   statement_timeout: float = 0, settings: Sequence[str] = ()) -> AsyncEngine:
    """An engine for ``url``. ``read_only`` (dry runs) makes the server refuse any write on its sessions;
    ``statement_timeout`` (seconds, 0 for none) is the longest any statement may run on MySQL/MariaDB;
    ``settings`` are more SET statements for every MySQL session."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, read_only)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
        pool_recycle=3600,
        # The writer's locking reads rely on next-key locks, which READ COMMITTED (common on Galera
        # setups) does not take: without them a concurrent insert could slip in between check and write.
        isolation_level="REPEATABLE READ",
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _session(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT VERSION()")
        for statement in [*session_settings(cursor.fetchone()[0], statement_timeout), *settings]:
            cursor.execute(statement)
        if read_only:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()

    return engine


def _sqlite_engine(url: URL, read_only: bool) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": 60})

    # pysqlite's own transaction handling begins DEFERRED: two writers could both read, then deadlock on
    # the upgrade to a write lock. Writers begin IMMEDIATE (taking the write lock up front); readers run
    # in autocommit mode, each statement its own snapshot, never holding a transaction open.
    @event.listens_for(engine.sync_engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        if read_only:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")  # query_only refuses IMMEDIATE

    return engine


async def check_schema(engine: AsyncEngine, label: str) -> None:
    """Refuse, before any write, a database that lacks the nova tables, columns or indexes fastmigrate needs."""
    found, indexes = await read_catalog(engine, label, REQUIRED_COLUMNS)
    problems = schema_problems(found, REQUIRED_COLUMNS)
    if problems:
        raise SchemaError(f"{label}: not a nova cell database fastmigrate can migrate: {'; '.join(problems)}. "
                          "Point --db at a nova cell database (the [database]/connection of nova.conf), "
                          "at a schema from Kilo or later")
    if is_mysql(engine):  # where statements name the indexes
        problems = [_index_problem(table, name, column, indexes[table])
                    for table, (name, column) in REQUIRED_INDEXES.items() if name not in indexes[table]]
        if problems:
            raise SchemaError(f"{label}: {'; '.join(problems)}; then rerun")


def schema_problems(found: dict[str, set[str]], required: Mapping[str, Iterable[str]]) -> list[str]:
    """What ``found`` (``read_catalog``'s columns) lacks of ``required`` (table -> columns), table by table."""
    problems = []
    for table, needed in required.items():
        if table not in found:
            problems.append(f"table {table} is missing")
        elif missing := sorted(set(needed) - found[table]):
            problems.append(f"table {table} lacks column(s) {', '.join(missing)}")
    return problems


def _index_problem(table: str, name: str, column: str, present: dict[str, list[str]]) -> str:
    # Lookups name the index (FORCE INDEX), so it must exist under nova's name.
    others = [other for other, columns in present.items() if columns[:1] == [column]]
    if others:
        return (f"table {table} indexes {column} as {others[0]}, not as {name} (nova's name, which fastmigrate "
                f"uses): ALTER TABLE {table} RENAME INDEX {others[0]} TO {name}")
    return (f"table {table} has no index on {column} (nova's {name}); without it every lookup scans the "
            f"table: CREATE INDEX {name} ON {table} ({column})")


async def global_status(engine: AsyncEngine, names: Iterable[str]) -> dict[str, float]:
    """The server's numeric status variables of these names (``SHOW GLOBAL STATUS``); those the server
    does not have are absent."""
    wanted = sorted(set(names))
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        marks = ", ".join(["%s"] * len(wanted))
        rows: Any = await conn.exec_driver_sql(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({marks})",
                                               tuple(wanted))  # rows of (name, value)
        status: dict[str, float] = {}
        for name, value in rows:
            try:
                status[name] = float(value)
            except (TypeError, ValueError):
                pass
        return status


async def galera_enabled(engine: AsyncEngine) -> bool:
    """Whether the server is a Galera cluster node (``wsrep_on = ON``); never on SQLite."""
    if not is_mysql(engine):
        return False
    async with engine.connect() as conn:
        rows: Any = await conn.exec_driver_sql("SHOW GLOBAL VARIABLES LIKE 'wsrep\\_on'")
        return any(str(value).upper() == "ON" for _, value in rows)


async def check_writable(engine: AsyncEngine, label: str, *, soft_delete: bool) -> None:
    """Refuse, before any write, a user who may not write what a run writes.

    Statements that match no row (WHERE false) still make the server check the privileges they need, and
    they run in a transaction that is rolled back: nothing is written, nothing locked for long.
    """
    probes: list[tuple[str, Executable]] = [
        ("UPDATE on instance_extra",
         update(instance_extra).where(false()).values(flavor=instance_extra.c.flavor)),
        ("INSERT on instance_extra",
         insert(instance_extra).from_select(["instance_uuid"], select(instance_extra.c.instance_uuid).where(false()))),
        ("UPDATE on instance_system_metadata", update(sysmeta).where(false()).values(deleted=sysmeta.c.id))
        if soft_delete else ("DELETE on instance_system_metadata", delete(sysmeta).where(false())),
    ]
    if engine.dialect.name == "sqlite":
        who, fix = "the database file is read-only", "open it read-write (file permissions, the URL's mode=)"
    else:
        who = "the database user may not write"
        fix = (f"grant it (GRANT SELECT, INSERT, UPDATE{'' if soft_delete else ', DELETE'} ON <nova db>.* TO "
               "<user>) or use nova's own database user")
    async with engine.connect() as conn:
        async with conn.begin() as transaction:
            for needed, statement in probes:
                try:
                    await conn.execute(statement)
                except DBAPIError as exc:
                    raise ConnectionFailed(f"{label}: {who} ({needed} refused: {_driver_message(exc)}); {fix}, "
                                           "or look without writing: --dry-run / --status") from None
            await transaction.rollback()


Catalog = tuple[dict[str, set[str]], dict[str, dict[str, list[str]]]]


async def read_catalog(engine: AsyncEngine, label: str, tables: Iterable[str]) -> Catalog:
    """Of ``tables``, those the database has: table -> its columns, and table -> {index name: its columns}.
    The first contact with a database: a failure to connect becomes a message that says what to check."""
    wanted = set(tables)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync_conn: _columns(sync_conn, wanted))
    except DBAPIError as exc:
        raise ConnectionFailed(f"{label}: cannot connect ({_driver_message(exc)}); check host, port, user and "
                               "password in the URL, and that the server is up") from None
    except OSError as exc:
        raise ConnectionFailed(f"{label}: cannot connect ({exc}); check host and port, and that the server "
                               "is up") from None


def _columns(sync_conn: Any, tables: set[str]) -> Catalog:
    inspector = inspect(sync_conn)
    present = set(inspector.get_table_names()) & tables
    columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in present}
    indexes = {t: {str(i["name"]): [str(c) for c in i["column_names"]] for i in inspector.get_indexes(t)}
               for t in present}
    return columns, indexes


def _driver_message(exc: DBAPIError) -> str:
    orig = exc.orig
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if len(args) >= 2:
        return f"{args[0]}: {args[1]}"
    return str(orig) or type(orig).__name__
