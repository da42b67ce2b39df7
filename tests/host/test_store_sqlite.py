"""The SQLite store's own machinery: WAL with full sync, group commit, and reads beside the writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime, timezone

import pytest

from csserver.store import sqlite as sqlite_store
from csserver.store.base import Fence, StaleEpoch, StoreUnavailable
from csserver.store.sqlite import SqliteStore
from tests.support import run

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)


def test_sqlite_uses_wal_with_full_sync(tmp_path):
    async def body():
        store = SqliteStore(str(tmp_path / "c.db"))
        await store.open()
        await store.close()

    run(body())
    conn = sqlite3.connect(tmp_path / "c.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    conn.close()
    store = SqliteStore(str(tmp_path / "c.db"))

    async def sync_level():
        await store.open()
        level = await store._writer.call(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        await store.close()
        return level

    assert run(sync_level()) == 2  # FULL


def test_writes_that_arrive_together_share_one_commit_and_a_refused_one_fails_alone(tmp_path):
    async def body():
        store = SqliteStore(str(tmp_path / "c.db"))
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        adopted = await store.adopt(ctx.id, "cs-b", "cs-a", 1, T0)
        before = store.batches
        good = [store.put_value(Fence(ctx.id, "cs-b", adopted.epoch), f"k{n}", str(n), T0) for n in range(30)]
        stale = store.put_value(Fence(ctx.id, "cs-a", 1), "stale", "0", T0)  # A's old epoch, in the same group
        results = await asyncio.gather(*good, stale, return_exceptions=True)
        assert isinstance(results[-1], StaleEpoch)
        assert [r.version for r in results[:-1]] == [1] * 30
        assert store.batches - before <= 3  # 31 writes, a few commits (not 31 fsyncs)
        assert {v.key for v in await store.list_values(ctx.id)} == {f"k{n}" for n in range(30)}
        await store.close()

    run(body())


def test_a_failed_commit_answers_every_write_of_its_group_and_applies_none(tmp_path, monkeypatch):
    async def body():
        store = SqliteStore(str(tmp_path / "c.db"))
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        real = sqlite_store._commit

        def failing_commit(conn):
            conn.execute("ROLLBACK")  # as SQLite does when the disk fails under the COMMIT
            raise sqlite3.OperationalError("disk I/O error (simulated)")

        monkeypatch.setattr(sqlite_store, "_commit", failing_commit)
        results = await asyncio.gather(*(store.put_value(Fence(ctx.id, "cs-a", 1), f"k{n}", "1", T0)
                                         for n in range(5)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        monkeypatch.setattr(sqlite_store, "_commit", real)
        assert await store.list_values(ctx.id) == []  # none of them was applied
        assert (await store.put_value(Fence(ctx.id, "cs-a", 1), "k0", "1", T0)).version == 1
        await store.close()

    run(body())


def test_a_write_lock_held_by_another_process_is_waited_for_off_the_event_loop(tmp_path):
    async def body():
        store = SqliteStore(str(tmp_path / "c.db"))
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)  # a second csserver on this host
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(store.put_value(Fence(ctx.id, "cs-a", 1), "k", "1", T0))
        ticks = 0
        for _ in range(20):  # the event loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done() and ticks == 20
        assert await store.get_value(ctx.id, "k") is None  # reads go on too
        other.execute("ROLLBACK")
        assert (await asyncio.wait_for(write, 5)).version == 1
        other.close()
        await store.close()

    run(body())


def test_a_store_opens_while_another_process_holds_the_write_lock(tmp_path):
    """Two csservers on one host start together on a new file (the demo): the one that comes second waits
    for the other's lock (switching to WAL, migrating) instead of failing with "database is locked"."""
    path = tmp_path / "c.db"

    async def body():
        other = sqlite3.connect(path, isolation_level=None)  # the other node got there first
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.3, other.execute, "ROLLBACK")
        store = SqliteStore(str(path))
        await asyncio.wait_for(store.open(), 5)
        assert store.store_id and await store.schema_version() >= 2
        other.close()
        await store.close()

    run(body())


def test_reads_and_health_do_not_wait_behind_a_slow_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "WRITER_STUCK_S", 0.3)

    async def body():
        store = SqliteStore(str(tmp_path / "c.db"))
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(Fence(ctx.id, "cs-a", 1), "k", '"before"', T0)
        release = threading.Event()
        real = sqlite_store._commit

        def slow_commit(conn):
            release.wait(10)  # an fsync on a disk that hangs
            return real(conn)

        monkeypatch.setattr(sqlite_store, "_commit", slow_commit)
        write = asyncio.ensure_future(store.put_value(Fence(ctx.id, "cs-a", 1), "k", '"after"', T0))
        await asyncio.sleep(0.05)
        assert not write.done()
        value = await asyncio.wait_for(store.get_value(ctx.id, "k"), 1.0)  # served beside the writer
        assert value.value == "before"  # the last commit: the pending write is not visible yet
        await asyncio.wait_for(store.ping(), 1.0)
        await asyncio.sleep(0.35)
        with pytest.raises(StoreUnavailable, match="commit has been under way"):
            await store.ping()  # a writer stuck that long fails /healthz
        release.set()
        assert (await write).version == 2
        await store.ping()
        await store.close()

    run(body())
