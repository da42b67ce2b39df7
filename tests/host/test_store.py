"""The store conformance suite: every test runs against SQLite and against a real PostgreSQL server.

PostgreSQL comes from `scripts/test-postgres.sh start` (CSSERVER_TEST_PG_URL); without it these tests skip,
except under CI=true, where they fail. Nothing here mocks a database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from csserver.store import sql
from csserver.store.base import (
    Fence, Idem, IdempotencyKeyReused, NotFound, SchemaTooNew, StaleEpoch, StoreUnavailable,
)
from csserver.store.postgres import PostgresStore
from csserver.store.sqlite import SqliteStore
from labkit.pg import pg_schema
from tests.support import require_pg, run

T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=timezone.utc)




async def opened(make):
    store = make()
    await store.open()
    return store


def fence(ctx, owner=None, epoch=None):
    return Fence(ctx.id, owner or ctx.owner, epoch or ctx.epoch)


# ---- schema ------------------------------------------------------------------------------------------

def test_migrations_are_applied_at_open_and_only_once(make_store):
    async def body():
        first = await opened(make_store)
        assert await first.schema_version() == sql.LATEST_VERSION
        ctx = await first.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await first.close()
        again = await opened(make_store)  # a restart: nothing re-created, nothing lost
        assert await again.schema_version() == sql.LATEST_VERSION
        assert (await again.get_context(ctx.id)).primary == "cs-a"
        await again.close()

    run(body())


def test_a_database_from_a_newer_csserver_is_refused(make_store):
    async def body():
        store = await opened(make_store)
        await store._run(lambda: _insert_migration(sql.LATEST_VERSION + 1), write=True)
        await store.close()
        with pytest.raises(SchemaTooNew):
            await opened(make_store)

    run(body())


def _insert_migration(version):
    yield sql.Stmt("INSERT INTO schema_migrations (version, name, applied) VALUES (%s, %s, %s)", (version, "future", T0))


# ---- contexts ----------------------------------------------------------------------------------------

def test_create_and_get_a_context(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {"team": "x", "n": [1, 2]}, T0)
        assert (ctx.primary, ctx.backup, ctx.owner, ctx.epoch) == ("cs-a", "cs-b", "cs-a", 1)
        got = await store.get_context(ctx.id)
        assert got == ctx
        assert got.created == T0 and got.updated == T0 and got.labels == {"team": "x", "n": [1, 2]}
        assert await store.get_context(ctx.id + 1000) is None
        await store.close()

    run(body())


def test_ids_of_deleted_contexts_are_never_reused(make_store):
    async def body():
        store = await opened(make_store)
        first = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.delete_context(fence(first), T0)
        second = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        assert second.id > first.id
        await store.close()

    run(body())


def test_adoption_makes_the_caller_owner_with_the_next_epoch(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        later = T0 + timedelta(seconds=5)
        adopted = await store.adopt(ctx.id, "cs-b", later)
        assert (adopted.owner, adopted.epoch, adopted.updated) == ("cs-b", 2, later)
        assert await store.get_context(ctx.id) == adopted
        # The owner adopting again (two requests that both saw the old owner) changes nothing.
        assert await store.adopt(ctx.id, "cs-b", later + timedelta(seconds=1)) == adopted
        back = await store.adopt(ctx.id, "cs-a", later)
        assert (back.owner, back.epoch) == ("cs-a", 3)
        assert await store.adopt(ctx.id + 1000, "cs-b", later) is None
        await store.close()

    run(body())


def test_delete_context_removes_its_values_and_is_fenced(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "k", '"v"', T0)
        adopted = await store.adopt(ctx.id, "cs-b", T0)
        with pytest.raises(StaleEpoch):
            await store.delete_context(fence(ctx), T0)
        assert await store.get_value(ctx.id, "k") is not None  # not applied
        await store.delete_context(fence(adopted), T0)
        assert await store.get_context(ctx.id) is None
        assert await store.list_values(ctx.id) == []
        with pytest.raises(NotFound):
            await store.delete_context(fence(adopted), T0)
        await store.close()

    run(body())


# ---- values ------------------------------------------------------------------------------------------

def test_put_get_and_versions(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        first = await store.put_value(fence(ctx), "k", '{"a": [1, 2.5, null, "é"]}', T0)
        assert (first.key, first.value, first.version) == ("k", {"a": [1, 2.5, None, "é"]}, 1)
        second = await store.put_value(fence(ctx), "k", "null", T0)
        assert (second.value, second.version) == (None, 2)
        assert await store.get_value(ctx.id, "k") == second
        assert await store.get_value(ctx.id, "missing") is None
        await store.close()

    run(body())


def test_a_write_with_a_stale_epoch_is_refused_and_not_applied(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "k", "1", T0)
        adopted = await store.adopt(ctx.id, "cs-b", T0)
        with pytest.raises(StaleEpoch) as refused:
            await store.put_value(fence(ctx), "k", "2", T0)
        assert (refused.value.held_epoch, refused.value.current_epoch, refused.value.owner) == (1, 2, "cs-b")
        with pytest.raises(StaleEpoch):  # the right epoch, but not the owner
            await store.put_value(Fence(ctx.id, "cs-a", adopted.epoch), "k", "2", T0)
        with pytest.raises(StaleEpoch):
            await store.put_value(fence(ctx), "new", "2", T0)
        with pytest.raises(StaleEpoch):
            await store.delete_value(fence(ctx), "k", T0)
        value = await store.get_value(ctx.id, "k")
        assert (value.value, value.version) == (1, 1)
        assert await store.get_value(ctx.id, "new") is None
        assert (await store.put_value(fence(adopted), "k", "3", T0)).version == 2
        await store.close()

    run(body())


def test_writes_to_an_unknown_context_are_not_found(make_store):
    async def body():
        store = await opened(make_store)
        with pytest.raises(NotFound):
            await store.put_value(Fence(424242, "cs-a", 1), "k", "1", T0)
        with pytest.raises(NotFound):
            await store.delete_value(Fence(424242, "cs-a", 1), "k", T0)
        await store.close()

    run(body())


def test_delete_value(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "k", "1", T0)
        await store.delete_value(fence(ctx), "k", T0)
        assert await store.get_value(ctx.id, "k") is None
        with pytest.raises(NotFound):
            await store.delete_value(fence(ctx), "k", T0)
        await store.close()

    run(body())


def test_list_values_by_prefix_in_code_point_order(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        other = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        for key in ("job/b", "job/a", "job/B", "job/é", "jobs", "x", "Job/a"):
            await store.put_value(fence(ctx), key, json.dumps(key), T0)
        await store.put_value(fence(other), "job/z", "0", T0)
        assert [v.key for v in await store.list_values(ctx.id, "job/")] == ["job/B", "job/a", "job/b", "job/é"]
        assert [v.key for v in await store.list_values(ctx.id)] == sorted(
            ["job/b", "job/a", "job/B", "job/é", "jobs", "x", "Job/a"])
        assert [v.value for v in await store.list_values(ctx.id, "x")] == ["x"]
        assert await store.list_values(ctx.id, "nothing") == []
        await store.close()

    run(body())


# ---- idempotency -------------------------------------------------------------------------------------

def test_a_retried_put_returns_the_first_result_and_applies_once(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        idem = Idem("key-1", "fp-1")
        first = await store.put_value(fence(ctx), "k", "1", T0, idem)
        again = await store.put_value(fence(ctx), "k", "1", T0, idem)
        assert first == again and again.version == 1
        await store.put_value(fence(ctx), "k", "2", T0)  # someone else writes afterwards
        late = await store.put_value(fence(ctx), "k", "1", T0, idem)
        assert late == first  # the first result, not applied over the newer value
        assert (await store.get_value(ctx.id, "k")).value == 2
        await store.close()

    run(body())


def test_a_retry_reaching_the_adopting_node_is_answered_not_refused(make_store):
    """A's write committed but its answer was lost; the client retries through the VIP, now on B."""
    async def body():
        node_a, node_b = await opened(make_store), await opened(make_store)
        ctx = await node_a.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        idem = Idem("lost-answer", "fp")
        first = await node_a.put_value(fence(ctx), "k", "1", T0, idem)
        adopted = await node_b.adopt(ctx.id, "cs-b", T0)
        assert await node_b.put_value(fence(adopted), "k", "1", T0, idem) == first
        assert (await node_b.get_value(ctx.id, "k")).version == 1
        await node_a.close()
        await node_b.close()

    run(body())


def test_a_refused_write_records_nothing_so_its_retry_applies(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        adopted = await store.adopt(ctx.id, "cs-b", T0)
        idem = Idem("k", "fp")
        with pytest.raises(StaleEpoch):
            await store.put_value(fence(ctx), "k", "1", T0, idem)
        assert (await store.put_value(fence(adopted), "k", "1", T0, idem)).version == 1
        await store.close()

    run(body())


def test_an_idempotency_key_reused_for_another_request_is_refused(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "k", "1", T0, Idem("same", "fp-1"))
        with pytest.raises(IdempotencyKeyReused):
            await store.put_value(fence(ctx), "k", "2", T0, Idem("same", "fp-2"))
        assert (await store.get_value(ctx.id, "k")).value == 1
        await store.close()

    run(body())


def test_idempotent_create_and_deletes(make_store):
    async def body():
        store = await opened(make_store)
        first = await store.create_context("cs-a", "cs-b", "cs-a", {"l": 1}, T0, Idem("c", "fp"))
        assert await store.create_context("cs-a", "cs-b", "cs-a", {"l": 1}, T0, Idem("c", "fp")) == first
        await store.put_value(fence(first), "k", "1", T0)
        await store.delete_value(fence(first), "k", T0, Idem("dv", "fp"))
        await store.delete_value(fence(first), "k", T0, Idem("dv", "fp"))  # the retry: no NotFound
        await store.delete_context(fence(first), T0, Idem("dc", "fp"))
        await store.delete_context(fence(first), T0, Idem("dc", "fp"))
        with pytest.raises(NotFound):
            await store.delete_context(fence(first), T0, Idem("dc-other", "fp"))
        await store.close()

    run(body())


def test_concurrent_duplicates_apply_once(make_store):
    async def body():
        stores = [await opened(make_store) for _ in range(2)]
        ctx = await stores[0].create_context("cs-a", "cs-b", "cs-a", {}, T0)
        for round_ in range(5):
            idem = Idem(f"dup-{round_}", "fp")
            results = await asyncio.gather(*(stores[i % 2].put_value(fence(ctx), "k", str(round_), T0, idem)
                                             for i in range(6)))
            assert len(set(results)) == 1
            assert results[0].version == round_ + 1
        assert (await stores[0].get_value(ctx.id, "k")).version == 5
        for store in stores:
            await store.close()

    run(body())


def test_expired_idempotency_records_are_forgotten(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "k", "1", T0, Idem("old", "fp"))
        await store.put_value(fence(ctx), "k", "2", T0 + timedelta(hours=2), Idem("new", "fp"))
        assert await store.expire_idempotency(T0 + timedelta(hours=1)) == 1
        assert (await store.put_value(fence(ctx), "k", "1", T0, Idem("old", "fp"))).version == 3  # applies again
        assert (await store.put_value(fence(ctx), "k", "2", T0, Idem("new", "fp"))).version == 2  # replayed
        await store.close()

    run(body())


# ---- two nodes, one database, and failures ------------------------------------------------------------

def test_two_nodes_on_one_database_are_fenced(make_store):
    async def body():
        node_a, node_b = await opened(make_store), await opened(make_store)
        ctx = await node_a.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await node_a.put_value(fence(ctx), "k", '"from a"', T0)
        adopted = await node_b.adopt(ctx.id, "cs-b", T0)
        await node_b.put_value(fence(adopted), "k", '"from b"', T0)
        with pytest.raises(StaleEpoch):
            await node_a.put_value(fence(ctx), "k", '"stale a"', T0)
        back = await node_a.adopt(ctx.id, "cs-a", T0)
        assert (await node_a.get_value(ctx.id, "k")).value == "from b"
        with pytest.raises(StaleEpoch):
            await node_b.put_value(fence(adopted), "k", '"stale b"', T0)
        assert (await node_a.put_value(fence(back), "k", '"a again"', T0)).version == 3
        await node_a.close()
        await node_b.close()

    run(body())


def test_racing_writes_and_adoptions_never_apply_under_a_stale_epoch(make_store):
    """Writers holding epoch e race adoptions: a write that succeeded happened while e was current, so the
    value's version history has no write acknowledged after the adoption that ended e."""
    async def body():
        node_a, node_b = await opened(make_store), await opened(make_store)
        ctx = await node_a.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        acked = []

        async def write(n):
            try:
                acked.append(await node_a.put_value(fence(ctx), "k", str(n), T0))
            except StaleEpoch:
                pass

        tasks = [asyncio.ensure_future(write(n)) for n in range(20)]
        await asyncio.sleep(0)
        adopted = await node_b.adopt(ctx.id, "cs-b", T0)
        await asyncio.gather(*tasks)
        after = await node_a._run(lambda: _all_versions(ctx.id), write=False)
        # Every acknowledged write is what the store holds at its version; none beyond the acknowledged.
        assert after == max((v.version for v in acked), default=0) == len(acked)
        final = await node_b.get_value(ctx.id, "k")
        assert final is None or final in acked
        with pytest.raises(StaleEpoch):
            await node_a.put_value(fence(ctx), "k", "late", T0)
        assert adopted.epoch == 2
        await node_a.close()
        await node_b.close()

    run(body())


def _all_versions(context_id):
    rows = (yield sql.Stmt("SELECT COALESCE(MAX(version), 0) FROM context_values WHERE context_id = %s",
                           (context_id,))).rows
    return int(rows[0][0])


def _backend_pid():
    return (yield sql.Stmt("SELECT pg_backend_pid()")).rows[0][0]


def test_an_unreachable_database_is_unavailable_not_a_crash(make_store, tmp_path):
    async def body():
        store = make_store()
        bad = (SqliteStore(str(tmp_path / "no" / "such" / "dir.db")) if isinstance(store, SqliteStore)
               else PostgresStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1))
        with pytest.raises(StoreUnavailable):
            await bad.open()
        await bad.close()

    run(body())


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
        level = await store._call(lambda: store._connection().execute("PRAGMA synchronous").fetchone()[0])
        await store.close()
        return level

    assert run(sync_level()) == 2  # FULL


def test_postgres_reconnects_after_its_connections_are_killed():
    url = require_pg()

    async def body(schema_url):
        store = PostgresStore(schema_url, pool_size=1)
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        pid = await store._run(_backend_pid, write=False)
        with psycopg.connect(url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        # The idle connection is dead; the store notices before COMMIT and retries on a fresh one.
        assert (await store.put_value(fence(ctx), "k", "1", T0)).version == 1
        assert (await store.get_context(ctx.id)).epoch == 1
        await store.close()

    with pg_schema(url) as schema_url:
        run(body(schema_url))
