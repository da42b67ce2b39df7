"""PostgreSQL backend (psycopg 3, async) for nodes that share one database: a small reconnecting pool.

Each transaction takes a connection from the pool (opening one if the slot is empty or its connection
broke), runs a script from `sql.py` inside BEGIN ... COMMIT and gives the connection back. A connection
that fails is closed and its slot left empty, so the next user reconnects: a database restart costs the
requests in flight a 503 (which the client retries with the same Idempotency-Key), not the process.
A failure on a reused connection before COMMIT was sent is retried once at once on a fresh connection,
since nothing was applied (the usual case after a restart: an idle connection the server has closed).

Session limits keep a frozen peer from freezing this node: `lock_timeout` bounds the wait on a context row
locked by a transaction that does not finish, `idle_in_transaction_session_timeout` makes the server end
such a transaction, `statement_timeout` bounds everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from csserver.store import sql
from csserver.store.base import StoreError, StoreUnavailable

T = TypeVar("T")

SESSION_OPTIONS = "-c lock_timeout=3000 -c statement_timeout=10000 -c idle_in_transaction_session_timeout=10000"


class _Uncommitted(Exception):
    """A database failure before COMMIT was sent: nothing of the transaction was applied."""

    def __init__(self, cause: psycopg.Error):
        super().__init__(str(cause))
        self.cause = cause


class PostgresStore(sql.SqlStore):
    def __init__(self, url: str, pool_size: int = 4, connect_timeout_s: float = 3.0, acquire_timeout_s: float = 5.0):
        self.url = url
        # The URL's own `options` (e.g. a search_path) are kept; the session limits are added to them.
        own = conninfo_to_dict(url).get("options")
        self._conninfo = make_conninfo(url, options=f"{own} {SESSION_OPTIONS}" if own else SESSION_OPTIONS)
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self._slots: asyncio.Queue[psycopg.AsyncConnection | None] | None = None

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # the URL may carry a password

    async def open(self) -> None:
        self._slots = asyncio.Queue()
        for _ in range(self.pool_size):
            self._slots.put_nowait(None)
        await self._run(lambda: sql.migrate(sql.POSTGRES, datetime.now(timezone.utc)), write=True)

    async def close(self) -> None:
        if self._slots is None:
            return
        slots, self._slots = self._slots, None
        while not slots.empty():
            conn = slots.get_nowait()
            if conn is not None:
                await conn.close()

    async def ping(self) -> None:
        await self._run(_ping, write=False)

    async def _connect(self) -> psycopg.AsyncConnection:
        try:
            return await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                connect_timeout=max(1, round(self.connect_timeout_s))),
                self.connect_timeout_s + 1,
            )
        except (psycopg.Error, OSError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {str(exc).strip() or type(exc).__name__}") from exc

    async def _run(self, script: Callable[[], sql.Script[T]], write: bool) -> T:
        slots = self._slots
        if slots is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        try:
            conn = await asyncio.wait_for(slots.get(), self.acquire_timeout_s)
        except asyncio.TimeoutError:
            raise StoreUnavailable("no PostgreSQL connection free in time") from None
        keep = None
        try:
            reused = conn is not None and not conn.closed
            if not reused:
                conn = await self._connect()
            try:
                result = await self._transaction(conn, script, write)
            except _Uncommitted as failure:
                await _discard(conn)
                conn = None
                if not reused:
                    raise StoreUnavailable(f"PostgreSQL: {failure}") from failure.cause
                conn = await self._connect()
                try:
                    result = await self._transaction(conn, script, write)
                except _Uncommitted as again:
                    raise StoreUnavailable(f"PostgreSQL: {again}") from again.cause
            keep = conn
            return result
        except StoreError:
            # The script refused (NotFound, StaleEpoch, ...) and its transaction was rolled back: the
            # connection is as good as before.
            if conn is not None and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                keep = conn
            raise
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip() or type(exc).__name__}") from exc
        finally:
            if keep is None and conn is not None:
                await _discard(conn)
            slots.put_nowait(keep)

    async def _transaction(self, conn: psycopg.AsyncConnection, script_factory: Callable[[], sql.Script[T]],
                           write: bool) -> T:
        script = script_factory()
        committing = False
        try:
            if not write:  # reads are one statement each: autocommit, one round trip instead of three
                return await _drive(conn, script)
            async with conn.transaction():
                result = await _drive(conn, script)
                committing = True
            return result
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if committing:
                raise  # COMMIT was sent: it may have been applied; the caller must not retry blindly
            raise _Uncommitted(exc) from exc


def _ping() -> sql.Script[None]:
    yield sql.Stmt("SELECT 1")


async def _drive(conn: psycopg.AsyncConnection, script: sql.Script[T]) -> T:
    try:
        stmt = next(script)
        while True:
            cursor = await conn.execute(stmt.sql, stmt.params)
            rows = await cursor.fetchall() if cursor.description is not None else []
            stmt = script.send(sql.Result(rows, cursor.rowcount))
    except StopIteration as done:
        return done.value


async def _discard(conn: psycopg.AsyncConnection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 1.0)
    except Exception:  # already broken: nothing more to do
        pass
