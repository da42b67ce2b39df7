"""The PostgreSQL store as a highly available store: pinned sessions, one round trip per write, transient
errors retried on the same connection, and hosts that die or hang (a black hole, a server that freezes).

The suite's PostgreSQL (scripts/test-postgres.sh) is never stopped or frozen here: a host that hangs is a
TCP listener that never answers, or a proxy in front of the real server that stops forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from csserver.store import sql
from csserver.store.base import Fence, Idem, StoreUnavailable
from csserver.store.postgres import PostgresStore
from labkit.pg import pg_schema
from tests.support import require_pg, run

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def schema_url():
    with pg_schema(require_pg()) as url:
        yield url


def fence(ctx):
    return Fence(ctx.id, ctx.owner, ctx.epoch)


def _backend_pid():
    return (yield sql.Stmt("SELECT pg_backend_pid()")).rows[0][0]


def _setting(name):
    def script():
        return (yield sql.Stmt(f"SHOW {name}")).rows[0][0]
    return script


def test_postgres_reconnects_after_its_connections_are_killed(schema_url):
    url = require_pg()

    async def body():
        store = PostgresStore(schema_url, pool_size=1)
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        pid = await store._run(_backend_pid, sql.READ)
        with psycopg.connect(url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
        # The idle connection is dead; the store notices before sending and uses a fresh one.
        assert (await store.put_value(fence(ctx), "k", "1", T0)).version == 1
        assert (await store.get_context(ctx.id)).epoch == 1
        assert await store._run(_backend_pid, sql.READ) != pid
        await store.close()

    run(body())


def test_sessions_pin_isolation_commit_durability_and_timeouts_below_a_clients_deadline(schema_url):
    # A DBA's defaults that would break the contract: asynchronous commit, serializable isolation.
    weakened = make_conninfo(schema_url, options=conninfo_to_dict(schema_url)["options"]
                             + " -c synchronous_commit=off -c default_transaction_isolation=serializable")

    async def body():
        store = PostgresStore(weakened, pool_size=1)
        await store.open()
        settings = {name: await store._run(_setting(name), sql.READ) for name in (
            "synchronous_commit", "default_transaction_isolation", "lock_timeout", "statement_timeout",
            "idle_in_transaction_session_timeout")}
        await store.close()
        return settings

    assert run(body()) == {"synchronous_commit": "on", "default_transaction_isolation": "read committed",
                           "lock_timeout": "1s", "statement_timeout": "1500ms",
                           "idle_in_transaction_session_timeout": "2s"}


def test_a_write_is_one_round_trip(schema_url, monkeypatch):
    statements = []
    real = psycopg.AsyncConnection.execute

    async def counting(self, query, *args, **kw):
        statements.append(query)
        return await real(self, query, *args, **kw)

    async def body():
        store = PostgresStore(schema_url, pool_size=1)
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        await store.put_value(fence(ctx), "warm", "1", T0)  # the connection exists: no setup counted
        monkeypatch.setattr(psycopg.AsyncConnection, "execute", counting)
        await store.put_value(fence(ctx), "k", "1", T0, Idem("i1", "fp"))
        await store.delete_value(fence(ctx), "k", T0, Idem("i2", "fp"))
        await store.create_context("cs-a", "cs-b", "cs-a", {}, T0, Idem("i3", "fp"))
        await store.delete_context(fence(ctx), T0, Idem("i4", "fp"))
        monkeypatch.setattr(psycopg.AsyncConnection, "execute", real)
        await store.close()

    run(body())
    assert len(statements) == 4, statements  # was BEGIN, claim, fence, upsert, record, COMMIT per write


def test_a_lock_timeout_is_retried_on_the_same_connection(schema_url):
    async def body():
        store = PostgresStore(schema_url, pool_size=1)
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        pid = await store._run(_backend_pid, sql.READ)
        blocker = await psycopg.AsyncConnection.connect(schema_url)
        await blocker.execute("SELECT 1 FROM contexts WHERE id = %s FOR UPDATE", (ctx.id,))  # holds the row
        release = asyncio.get_running_loop().call_later(1.3, lambda: asyncio.ensure_future(blocker.rollback()))
        started = time.monotonic()
        # lock_timeout (1 s) fires once; the retry on the same healthy connection gets the row at 1.3 s.
        assert (await store.put_value(fence(ctx), "k", "1", T0)).version == 1
        assert 1.0 < time.monotonic() - started < 2.5
        assert await store._run(_backend_pid, sql.READ) == pid  # not dropped as if it had failed
        release.cancel()
        await blocker.close()
        await store.close()

    run(body())


@contextlib.contextmanager
def black_hole():
    """A TCP port that completes handshakes and never says a word: a frozen server, as a client sees it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def with_hosts(url: str, ports: list[int]) -> str:
    info = conninfo_to_dict(url)
    return make_conninfo(url, host=",".join(["127.0.0.1"] * len(ports)), port=",".join(map(str, ports)),
                         **{"hostaddr": ""} if "hostaddr" in info else {})


def test_each_host_gets_its_own_connect_budget(schema_url):
    real_port = int(conninfo_to_dict(schema_url).get("port") or 5432)
    with black_hole() as dead1, black_hole() as dead2:
        async def body():
            # Two hung hosts first: each costs its connect timeout (2 s), then the third answers. A single
            # outer cap of one host's budget (the old 4 s) would have given up before reaching it.
            store = PostgresStore(with_hosts(schema_url, [dead1, dead2, real_port]), pool_size=1)
            started = time.monotonic()
            await store.open()
            opened_after = time.monotonic() - started
            ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
            await store.close()
            return opened_after, ctx

        opened_after, ctx = run(body(), timeout=30)
        assert 4.0 <= opened_after < 8.0 and ctx.epoch == 1


class FreezableProxy:
    """A TCP proxy to the real server that can stop forwarding without closing anything (a hung host)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        self.tasks.add(asyncio.current_task())
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if self.frozen.is_set():
                        await asyncio.Event().wait()  # hold it for ever, as a frozen server does
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self):
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def test_a_server_that_hangs_is_cut_off_and_the_next_host_serves(schema_url):
    real_port = int(conninfo_to_dict(schema_url).get("port") or 5432)

    async def body():
        proxy = FreezableProxy(real_port)
        proxy_port = await proxy.start()
        store = PostgresStore(with_hosts(schema_url, [proxy_port, real_port]), pool_size=2)
        await store.open()
        ctx = await store.create_context("cs-a", "cs-b", "cs-a", {}, T0)
        assert (await store.put_value(fence(ctx), "k", "1", T0, Idem("i1", "fp"))).version == 1
        proxy.frozen.set()  # the first host hangs: connections stay open, nothing comes back
        started = time.monotonic()
        outcome = None
        while time.monotonic() - started < 10:
            try:
                outcome = await store.put_value(fence(ctx), "k", "2", T0, Idem("i2", "fp"))
                break
            except StoreUnavailable:
                continue  # as csserver's client does: retry with the same Idempotency-Key
        took = time.monotonic() - started
        assert outcome is not None and outcome.version == 2
        # The operation timeout (2 s) cut the hung connection (no cancel request to wait on) and the
        # retry went to the other host first: well under the client's 10 s deadline.
        assert took < 5.0, took
        started = time.monotonic()
        for n in range(5):  # from now on, straight to the host that answers
            await store.get_value(ctx.id, "k")
        assert time.monotonic() - started < 1.0
        await store.close()
        proxy.frozen.clear()
        await proxy.close()

    run(body(), timeout=60)
