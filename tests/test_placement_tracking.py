"""Change tracking: a sync that follows nova_api's change log instead of comparing every chunk."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy.engine import make_url

from fastmigrate.cli import main
from fastmigrate.errors import FastmigrateError
from fastmigrate.placement import (PlacementOptions, copy_placement, sync_placement, untrack_placement,
                                   verify_placement)
from fastmigrate.placement.copy import _shares
from fastmigrate.placement.schema import SPECS
from fastmigrate.placement.tracking import LOG, TRACKING, TRIGGERS, TrackedElsewhere, create_trigger
from fastmigrate.results import ExitCode

from .conftest import Database, summary
from .test_placement import CHANGED, SMALL, _change_source, _contents, _copied_and_deleted

TRACKED = PlacementOptions(chunk_size=500, track_changes=True)


async def _triggers(db: Database) -> set[str]:
    rows = await db.rows("SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE()")
    return {str(r[0]) for r in rows}


async def _tables(db: Database) -> set[str]:
    rows = await db.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
    return {str(r[0]) for r in rows}


@pytest.mark.pure
def test_triggers_log_each_key_and_the_old_key_of_a_moved_row() -> None:
    assert len(TRIGGERS) == 33 and all(len(name) <= 64 for name in TRIGGERS)
    assert create_trigger(SPECS["allocations"], "DELETE") == (
        "CREATE TRIGGER `fastmigrate_allocations_del` AFTER DELETE ON `allocations` FOR EACH ROW BEGIN "
        "DECLARE CONTINUE HANDLER FOR SQLSTATE '42S02' BEGIN END; "
        f"INSERT INTO `{LOG}` (table_name, k1, k2) VALUES ('allocations', OLD.`id`, NULL); END")
    update = create_trigger(SPECS["resource_provider_traits"], "UPDATE")
    assert ("VALUES ('resource_provider_traits', NEW.`trait_id`, NEW.`resource_provider_id`); IF "
            "NOT (OLD.`trait_id` <=> NEW.`trait_id`) OR NOT (OLD.`resource_provider_id` <=> "
            "NEW.`resource_provider_id`) THEN INSERT") in update


@pytest.mark.pure
def test_a_batch_is_cut_by_key_only_where_no_other_unique_key_could_pass_between_rows() -> None:
    logged = {"allocations": {(i,) for i in range(1, 601)}, "consumers": {(i,) for i in range(1, 301)},
              "traits": {(1,), (2,)}}
    shares = _shares(logged, 3)
    assert sorted(sum(len(keys) for _, keys in share) for share in shares) == [300, 301, 301]
    for name, found in logged.items():
        parts = [keys for share in shares for table, keys in share if table == name]
        assert sorted(key for keys in parts for key in keys) == sorted(found)
        assert len(parts) == (2 if name == "allocations" else 1)


@pytest.mark.mariadb
@pytest.mark.parametrize("in_server", [True, False], ids=["in-server", "through-client"])
async def test_a_tracked_sync_rewrites_only_the_logged_keys(nova_api: Database, mariadb_target: Database,
                                                            in_server: bool) -> None:
    copied = await copy_placement(nova_api.url, mariadb_target.url, TRACKED)
    assert copied.tracking.installed == 33 and copied.tracking.complete and copied.tracking.pending == 0
    assert await _triggers(nova_api) == set(TRIGGERS)
    await _change_source(nova_api)
    logged = await nova_api.scalar(f"SELECT COUNT(*) FROM {LOG}")
    assert logged == 2 + 5 + 2 + 1 + 2 + 1 + 1 + 3 + 1  # one entry per row changed, by the statements above

    run = await sync_placement(nova_api.url, mariadb_target.url, PlacementOptions(chunk_size=2, parallel=2,
                                                                                  in_server=in_server))
    assert run.tracking.followed and run.tracking.replayed == logged and run.tracking.pending == 0
    assert run.in_server is in_server and run.exit_code == ExitCode.DONE
    assert _copied_and_deleted(run) == CHANGED[in_server]
    assert max(t.chunks for t in run.tables) >= 2  # 18 entries in batches of 2 x 2
    assert await _contents(mariadb_target) == await _contents(nova_api)
    assert (await verify_placement(nova_api.url, mariadb_target.url, SMALL)).exit_code == ExitCode.DONE
    again = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert again.tracking.followed and again.tracking.replayed == 0
    assert sum(t.rows_copied + t.rows_deleted for t in again.tables) == 0


async def _nova_writes(db: Database, stop: asyncio.Event, seed: int) -> int:
    """What a running nova does to placement's tables, as fast as it can until ``stop``: allocations replaced
    and removed, consumer and provider generations bumped, traits moved. How many changes it made."""
    rng, changes, next_id = random.Random(seed), 0, 100_000
    while not stop.is_set():
        allocation, consumer, provider = rng.randrange(1, 9_000), rng.randrange(1, 3_000), rng.randrange(1, 75)
        match changes % 5:
            case 0:
                await db.execute(f"UPDATE allocations SET used = used + 1 WHERE id = {allocation}")
            case 1:
                await db.execute(f"DELETE FROM allocations WHERE id = {allocation}")
            case 2:
                next_id += 1
                await db.execute("INSERT INTO allocations (id, resource_provider_id, consumer_id, resource_class_id, "
                                 f"used) VALUES ({next_id}, {provider}, 'c-{next_id}', 0, 1)")
            case 3:
                await db.execute(f"UPDATE consumers SET generation = generation + 1 WHERE id = {consumer}")
            case 4:
                await db.execute(f"UPDATE resource_providers SET generation = generation + 1 WHERE id = {provider}")
        changes += 1
    return changes


@pytest.mark.mariadb
async def test_what_nova_changes_during_the_copy_is_in_the_log(nova_api: Database, mariadb_target: Database) -> None:
    stop = asyncio.Event()
    writer = asyncio.create_task(_nova_writes(nova_api, stop, seed=7))
    await asyncio.sleep(0.2)  # nova was running before the copy began
    copied = await copy_placement(nova_api.url, mariadb_target.url,
                                  PlacementOptions(chunk_size=50, parallel=1, track_changes=True))
    stop.set()
    changes = await writer
    assert changes > 200 and copied.tracking.complete
    # What the copy missed is in the log: following it makes the two sides equal.
    assert await _contents(mariadb_target) != await _contents(nova_api)
    run = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert run.tracking.followed and run.tracking.replayed > 0
    assert await _contents(mariadb_target) == await _contents(nova_api)


@pytest.mark.mariadb
async def test_a_sync_that_runs_while_nova_writes_leaves_later_changes_for_the_next(
        nova_api: Database, mariadb_target: Database) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, TRACKED)
    stop = asyncio.Event()
    writer = asyncio.create_task(_nova_writes(nova_api, stop, seed=11))
    for _ in range(3):
        await asyncio.sleep(0.3)
        assert (await sync_placement(nova_api.url, mariadb_target.url, PlacementOptions(chunk_size=20))
                ).tracking.followed
    stop.set()
    await writer
    final = await sync_placement(nova_api.url, mariadb_target.url, SMALL)  # the outage: nova stopped
    assert final.tracking.followed and final.tracking.pending == 0
    assert await _contents(mariadb_target) == await _contents(nova_api)


@pytest.mark.mariadb
async def test_a_log_entry_replayed_twice_changes_nothing(nova_api: Database, mariadb_target: Database) -> None:
    # as after a crash between the target's commit and the log's cleanup: the same keys come again
    await copy_placement(nova_api.url, mariadb_target.url, TRACKED)
    await nova_api.execute(f"INSERT INTO {LOG} (table_name, k1, k2) VALUES ('allocations', 17, NULL), "
                           "('resource_provider_traits', 3, 4), ('allocations', 999999, NULL)")
    before = await _contents(mariadb_target)
    run = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert run.tracking.replayed == 3 and run.table("allocations").rows_copied == 1
    assert await _contents(mariadb_target) == before == await _contents(nova_api)


@pytest.mark.mariadb
async def test_broken_tracking_falls_back_to_checksums_and_is_repaired(nova_api: Database,
                                                                        mariadb_target: Database) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, TRACKED)
    await nova_api.execute("DROP TRIGGER fastmigrate_allocations_upd")
    await nova_api.execute("UPDATE allocations SET used = 99 WHERE id = 42")  # not logged
    run = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert not run.tracking.followed and "fastmigrate_allocations_upd missing" in str(run.tracking.why_checksums)
    assert run.table("allocations").rows_copied == 1 and not run.tracking.complete
    assert await _contents(mariadb_target) == await _contents(nova_api)

    repaired = await sync_placement(nova_api.url, mariadb_target.url, TRACKED)
    assert repaired.tracking.installed == 1 and not repaired.tracking.followed and repaired.tracking.complete
    await nova_api.execute("UPDATE allocations SET used = 98 WHERE id = 42")
    after = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert after.tracking.followed and after.table("allocations").rows_copied == 1
    assert await _contents(mariadb_target) == await _contents(nova_api)

    # A log dropped by hand must not fail nova's writes; the sync sees the tracking broken.
    await nova_api.execute(f"DROP TABLE {LOG}")
    await nova_api.execute("UPDATE allocations SET used = 97 WHERE id = 42")
    broken = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert not broken.tracking.followed and LOG in str(broken.tracking.why_checksums)
    assert await _contents(mariadb_target) == await _contents(nova_api)


@pytest.mark.mariadb
async def test_one_log_serves_one_target(nova_api: Database, mariadb_target: Database,
                                         mariadb_cells: list[Database]) -> None:
    other = mariadb_cells[0]
    await copy_placement(nova_api.url, mariadb_target.url, TRACKED)
    with pytest.raises(TrackedElsewhere, match="untrack"):
        await copy_placement(nova_api.url, other.url, TRACKED)
    assert await _tables(other) == set()  # refused before the target was touched
    run = await copy_placement(nova_api.url, other.url, SMALL)  # untracked copies are fine
    assert run.tracking.elsewhere and not run.tracking.complete
    await _change_source(nova_api)
    synced = await sync_placement(nova_api.url, other.url, SMALL)
    assert not synced.tracking.followed and "another target" in str(synced.tracking.why_checksums)
    assert await _contents(other) == await _contents(nova_api)
    ours = await sync_placement(nova_api.url, mariadb_target.url, SMALL)  # the log is still whole
    assert ours.tracking.followed and await _contents(mariadb_target) == await _contents(nova_api)


@pytest.mark.mariadb
async def test_cli_untrack_and_checksums(nova_api: Database, mariadb_target: Database,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    urls = ["--from", nova_api.url, "--to", mariadb_target.url, "--chunk-size", "1000"]

    async def cli(*args: str) -> tuple[int, str]:
        code = await asyncio.to_thread(main, ["placement", *args])
        return code, capsys.readouterr().out

    code, out = await cli("copy", *urls, "--track-changes")
    assert code == ExitCode.DONE and "installed change tracking in nova_api (33 triggers)" in out
    await _change_source(nova_api)
    code, out = await cli("sync", *urls, "--checksums", "--json")
    document = summary(out)
    assert code == ExitCode.DONE and document["tracking"]["why_checksums"] == "--checksums"
    assert document["tracking"]["pending"] == 18 and document["tracking"]["complete"]
    code, out = await cli("sync", *urls)
    assert code == ExitCode.DONE and "followed the change log: 18 logged changes applied" in out
    code, out = await cli("untrack", "--from", nova_api.url)
    assert code == ExitCode.DONE and "removed 33 triggers and the change log" in out
    assert not await _triggers(nova_api) and not {LOG, TRACKING} & await _tables(nova_api)
    code, out = await cli("untrack", "--from", nova_api.url, "--json")
    assert code == ExitCode.DONE and summary(out)["tracking"]["removed"] == 0
    code, out = await cli("sync", *urls)
    assert code == ExitCode.DONE and "compared checksums: changes are not tracked" in out


@pytest.mark.mariadb
async def test_a_user_who_may_not_make_triggers_gets_the_way_out_and_nothing_installed(
        nova_api: Database, mariadb_target: Database) -> None:
    api_db = make_url(nova_api.url).database
    user = f"fm_{api_db[-12:]}"
    await nova_api.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        await nova_api.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP ON `{api_db}`.* TO '{user}'@'%'")
        url = make_url(nova_api.url).set(username=user, password="pw").render_as_string(hide_password=False)
        with pytest.raises(FastmigrateError, match="TRIGGER") as refused:
            await copy_placement(url, mariadb_target.url, TRACKED)
        assert "pw" not in str(refused.value).replace("pw'", "")
        assert not await _triggers(nova_api) and not {LOG, TRACKING} & await _tables(nova_api)
        run = await copy_placement(url, mariadb_target.url, SMALL)  # without tracking it goes on
        assert run.exit_code == ExitCode.DONE and run.tracking.target is None
    finally:
        await nova_api.execute(f"DROP USER '{user}'@'%'")


@pytest.mark.mariadb
async def test_untrack_leaves_nova_writing(nova_api: Database, mariadb_target: Database) -> None:
    await copy_placement(nova_api.url, mariadb_target.url, TRACKED)
    await nova_api.execute("UPDATE consumers SET generation = 5 WHERE id = 1")
    run = await untrack_placement(nova_api.url)
    assert run.tracking.removed == 33 and run.tracking.pending == 1 and run.exit_code == ExitCode.DONE
    await nova_api.execute("UPDATE consumers SET generation = 6 WHERE id = 1")
    assert not await _triggers(nova_api) and not {LOG, TRACKING} & await _tables(nova_api)


@pytest.mark.mariadb
@pytest.mark.parametrize("tracked", [True, False], ids=["log", "checksums"])
async def test_rows_that_swapped_a_unique_name_are_rewritten(nova_api: Database, mariadb_target: Database,
                                                             tracked: bool) -> None:
    # Updated in place one by one, the first row would take a name the second still has (duplicate key):
    # the batch is rewritten by deleting both and copying them again.
    await copy_placement(nova_api.url, mariadb_target.url, TRACKED if tracked else SMALL)
    (first, second), = await nova_api.rows("SELECT (SELECT name FROM traits WHERE id = 1), "
                                           "(SELECT name FROM traits WHERE id = 2)")
    for sql in ("UPDATE traits SET name = 'CUSTOM_SWAPPING' WHERE id = 1",
                f"UPDATE traits SET name = '{first}' WHERE id = 2",
                f"UPDATE traits SET name = '{second}' WHERE id = 1"):
        await nova_api.execute(sql)
    run = await sync_placement(nova_api.url, mariadb_target.url, SMALL)
    assert run.tracking.followed is tracked and run.table("traits").rows_copied == 2
    assert await _contents(mariadb_target) == await _contents(nova_api)
