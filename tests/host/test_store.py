"""The store conformance suite: every test runs against SQLite and against a real PostgreSQL server (each
backend's own machinery: test_store_sqlite.py, test_store_postgres.py).

PostgreSQL comes from `scripts/test-postgres.sh start` (CSSERVER_TEST_PG_URL); without it these tests skip,
except under CI=true, where they fail. Nothing here mocks a database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime, timedelta, timezone

import pytest

from csserver.haid import MAX_ID
from csserver.store import sql
from csserver.store.base import (
    BadInput, Fence, Idem, IdempotencyKeyReused, NotFound, SchemaTooNew, StaleEpoch, StoreUnavailable,
)
from csserver.store.postgres import PostgresStore
from csserver.store.sqlite import SqliteStore
from tests.support import run

T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=timezone.utc)




async def opened(make):
    store = make()
    await store.open()
    return store


def fence(ctx, owner=None, epoch=None):
    return Fence(ctx.id, owner or ctx.owner, epoch or ctx.epoch)


async def take(store, context_id, owner, now):
    """Adopt as a node does: compare and swap on the owner and epoch just read."""
    seen = await store.get_context(context_id)
    return await store.adopt(context_id, owner, seen.owner, seen.epoch, now)


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
        await store._run(lambda: _insert_migration(sql.LATEST_VERSION + 1), sql.WRITE)
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


def test_context_ids_are_random_63_bit_and_a_collision_is_retried(make_store):
    async def body():
        store = await opened(make_store)
        ids = [(await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)).id for _ in range(20)]
        assert len(set(ids)) == 20 and all(1 <= i <= MAX_ID for i in ids)
        assert max(ids) > 2**40  # random over 63 bits, not a sequence (chance of failing: 20 x 2**-23)
        # A second store (a restore, the other side of a split) that happens to draw a taken id: the
        # primary key refuses it, another id is drawn, and the taken one is never served twice.
        draws = itertools.chain([ids[0], ids[0]], itertools.count(4242))
        store.new_id = lambda: next(draws)
        fresh = await store.create_context("cs-a", "cs-b", "cs-a", {"n": 2}, T0)
        assert fresh.id == 4242
        assert (await store.get_context(ids[0])).labels == {}  # the first context is untouched
        store.new_id = lambda: ids[1]
        with pytest.raises(StoreUnavailable):  # never a context without an id of its own
            await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.close()

    run(body())


def test_the_store_has_an_identity_and_knows_who_joined_it(make_store):
    async def body():
        node_a, node_b = await opened(make_store), await opened(make_store)
        assert node_a.store_id and node_a.store_id == node_b.store_id  # one store, one identity
        assert [n.alias for n in await node_a.heartbeat("cs-a", "a-1", T0)] == ["cs-a"]
        later = T0 + timedelta(seconds=3)
        seen = await node_b.heartbeat("cs-b", "b-1", later)
        assert [(n.alias, n.instance, n.joined, n.seen) for n in seen] == [
            ("cs-a", "a-1", T0, T0), ("cs-b", "b-1", later, later)]
        again = await node_a.heartbeat("cs-a", "a-2", later)  # a restarted process: joined stays
        assert [(n.alias, n.instance, n.joined, n.seen) for n in again][0] == ("cs-a", "a-2", T0, later)
        await node_a.close()
        reopened = await opened(make_store)
        assert reopened.store_id == node_b.store_id  # kept in the store, not in the process
        await reopened.close()
        await node_b.close()

    run(body())


def test_adoption_makes_the_caller_owner_with_the_next_epoch(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        later = T0 + timedelta(seconds=5)
        adopted = await store.adopt(ctx.id, "cs-b", "cs-a", 1, later)
        assert (adopted.owner, adopted.epoch, adopted.updated) == ("cs-b", 2, later)
        assert await store.get_context(ctx.id) == adopted
        back = await store.adopt(ctx.id, "cs-a", "cs-b", 2, later)
        assert (back.owner, back.epoch) == ("cs-a", 3)
        assert await store.adopt(ctx.id + 1000, "cs-b", "cs-a", 1, later) is None
        await store.close()

    run(body())


def test_adoption_is_a_compare_and_swap_on_what_the_adopter_saw(make_store):
    """Two nodes that both read (cs-a, 1) race to adopt: one wins, the other gets the context unchanged
    (it must not steal it with a second bump); nor can a node take a context back on a stale reading."""
    async def body():
        node_a, node_b = await opened(make_store), await opened(make_store)
        ctx = await node_a.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        first, second = await asyncio.gather(node_b.adopt(ctx.id, "cs-b", "cs-a", 1, T0),
                                              node_b.adopt(ctx.id, "cs-c", "cs-a", 1, T0))
        winners = [c for c, me in ((first, "cs-b"), (second, "cs-c")) if c.owner == me]
        assert len(winners) == 1 and winners[0].epoch == 2
        assert first == second  # the loser sees the winner's context, untouched
        # A returns with what it read before the failover: (cs-a, 1). Too late: nothing changes.
        assert await node_a.adopt(ctx.id, "cs-a", "cs-a", 1, T0) == winners[0]
        assert (await node_a.get_context(ctx.id)).epoch == 2
        await node_a.close()
        await node_b.close()

    run(body())


def test_delete_context_removes_its_values_and_is_fenced(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "k", '"v"', T0)
        adopted = await take(store, ctx.id, "cs-b", T0)
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
        adopted = await take(store, ctx.id, "cs-b", T0)
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
        for key in ("job/b", "job/a", "job/B", "job/é", "jobs", "x", "Job/a", "job0", "job/\U0010ffff", "jo"):
            await store.put_value(fence(ctx), key, json.dumps(key), T0)
        await store.put_value(fence(other), "job/z", "0", T0)
        assert [v.key for v in await store.list_values(ctx.id, "job/")] == [
            "job/B", "job/a", "job/b", "job/é", "job/\U0010ffff"]
        everything = await store.list_values(ctx.id)
        assert [v.key for v in everything] == sorted(v.key for v in everything) and len(everything) == 10
        assert [v.value for v in await store.list_values(ctx.id, "x")] == ["x"]
        assert await store.list_values(ctx.id, "nothing") == []
        await store.close()

    run(body())


def test_list_values_pages_by_key(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        keys = [f"p/{n:03d}" for n in range(25)] + ["q/1", "o/1"]
        for key in keys:
            await store.put_value(fence(ctx), key, "1", T0)
        pages, after = [], None
        while True:
            page = await store.list_values(ctx.id, "p/", after=after, limit=10)
            pages.append([v.key for v in page])
            if len(page) < 10:
                break
            after = page[-1].key
        assert [len(p) for p in pages] == [10, 10, 5]
        assert sum(pages, []) == sorted(k for k in keys if k.startswith("p/"))
        assert [v.key for v in await store.list_values(ctx.id, after="p/024", limit=5)] == ["q/1"]
        assert [v.key for v in await store.list_values(ctx.id, "p/", after="a", limit=1)] == ["p/000"]
        await store.close()

    run(body())


@pytest.mark.parametrize("bad", ["nul\x00inside", "lone \ud800 surrogate"])
def test_text_a_store_cannot_hold_is_bad_input_on_both_stores(make_store, bad):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        for attempt in (lambda: store.put_value(fence(ctx), bad, "1", T0),
                        lambda: store.put_value(fence(ctx), "k", f'"{bad}"', T0),  # the character itself
                        lambda: store.get_value(ctx.id, bad),
                        lambda: store.list_values(ctx.id, bad),
                        lambda: store.delete_value(fence(ctx), bad, T0),
                        lambda: store.create_context(bad, "cs-b", "cs-a", {}, T0)):
            with pytest.raises(BadInput):
                await attempt()
        assert await store.list_values(ctx.id) == []  # nothing was half applied
        assert (await store.put_value(fence(ctx), "k", "1", T0)).version == 1  # and the store still works
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
        adopted = await take(node_b, ctx.id, "cs-b", T0)
        assert await node_b.put_value(fence(adopted), "k", "1", T0, idem) == first
        assert (await node_b.get_value(ctx.id, "k")).version == 1
        await node_a.close()
        await node_b.close()

    run(body())


def test_a_refused_write_records_nothing_so_its_retry_applies(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        adopted = await take(store, ctx.id, "cs-b", T0)
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


def test_an_idempotency_record_keeps_the_outcome_not_the_value(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0, Idem("c", "fp-c"))
        big = json.dumps("x" * 10_000)
        first = await store.put_value(fence(ctx), "k", big, T0, Idem("p", "fp-p"))
        await store.delete_value(fence(ctx), "k", T0, Idem("d", "fp-d"))
        rows = await store._run(_idempotency_rows, sql.READ)
        assert rows == [("c", 201, None, ctx.id, None), ("d", 204, None, None, None), ("p", 200, 1, None, None)]
        # The retry carries the same body (the fingerprint says so): it gets the first version with it.
        assert await store.put_value(fence(ctx), "k", big, T0, Idem("p", "fp-p")) == first
        await store.close()

    run(body())


def _idempotency_rows():
    return (yield sql.Stmt("SELECT key, status, version, context_id, result FROM idempotency ORDER BY key")).rows


def test_idempotency_expires_in_small_batches_by_age_and_by_count(make_store):
    async def body():
        store = await opened(make_store)
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        for n in range(10):
            await store.put_value(fence(ctx), f"k{n}", "1", T0 + timedelta(minutes=n), Idem(f"i{n}", "fp"))
        assert await store.idempotency_records() == 10
        cutoff = T0 + timedelta(minutes=6)  # i0..i5 are older
        assert await store.expire_idempotency(cutoff, limit=4) == 4  # a batch, never more
        assert await store.expire_idempotency(cutoff, limit=4) == 2
        assert await store.expire_idempotency(cutoff, limit=4) == 0
        assert await store.trim_idempotency(keep=3, limit=10) == 1  # the count bound: oldest first
        assert await store.trim_idempotency(keep=3, limit=10) == 0
        assert await store.idempotency_records() == 3
        # Forgotten: the retry applies again; kept: the retry replays.
        assert (await store.put_value(fence(ctx), "k0", "1", T0, Idem("i0", "fp"))).version == 2
        assert (await store.put_value(fence(ctx), "k9", "1", T0, Idem("i9", "fp"))).version == 1
        await store.close()

    run(body())


# ---- two nodes, one database, and failures ------------------------------------------------------------

def test_two_nodes_on_one_database_are_fenced(make_store):
    async def body():
        node_a, node_b = await opened(make_store), await opened(make_store)
        ctx = await node_a.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await node_a.put_value(fence(ctx), "k", '"from a"', T0)
        adopted = await take(node_b, ctx.id, "cs-b", T0)
        await node_b.put_value(fence(adopted), "k", '"from b"', T0)
        with pytest.raises(StaleEpoch):
            await node_a.put_value(fence(ctx), "k", '"stale a"', T0)
        back = await take(node_a, ctx.id, "cs-a", T0)
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
        adopted = await take(node_b, ctx.id, "cs-b", T0)
        await asyncio.gather(*tasks)
        after = await node_a._run(lambda: _all_versions(ctx.id), sql.READ)
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


def test_an_unreachable_database_is_unavailable_not_a_crash(make_store, tmp_path):
    async def body():
        store = make_store()
        bad = (SqliteStore(str(tmp_path / "no" / "such" / "dir.db")) if isinstance(store, SqliteStore)
               else PostgresStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1))
        with pytest.raises(StoreUnavailable):
            await bad.open()
        await bad.close()

    run(body())
