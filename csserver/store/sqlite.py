"""SQLite backend (the embedded default): one connection, driven from one thread, WAL with synchronous=FULL.

Durability: SPEC 6 says a 2xx means the write is durable. In WAL mode `synchronous=NORMAL` fsyncs only at
checkpoints, so a committed transaction survives a crash of the process but not of the machine (power
loss); `FULL` fsyncs the WAL at every commit, so a commit that returned is on disk. That costs one fsync
per write and is what the contract needs.

Concurrency: sqlite3 calls block, so every transaction runs as one call in a single-thread executor: the
event loop never blocks, and transactions never interleave on the connection. Writes start with
BEGIN IMMEDIATE, taking the write lock at once (no lock upgrade that could fail with SQLITE_BUSY); other
processes on the same file (two csservers on one host) wait up to `busy_timeout_s` for it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TypeVar

from csserver.store import sql
from csserver.store.base import StoreUnavailable

T = TypeVar("T")


def _param(value):
    # SQLite has no timestamp type: ISO 8601 text in UTC sorts and compares like the instants.
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return value


class SqliteStore(sql.SqlStore):
    def __init__(self, path: str, busy_timeout_s: float = 5.0):
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csserver-sqlite")
        try:
            await self._call(self._connect)
            await self._run(lambda: sql.migrate(sql.SQLITE, datetime.now(timezone.utc)), write=True)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def ping(self) -> None:
        await self._call(lambda: self._connection().execute("SELECT 1").fetchone())

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreUnavailable(f"{self.path}: cannot use WAL journaling (journal_mode is {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._conn

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable("the SQLite store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    async def _run(self, script: Callable[[], sql.Script[T]], write: bool) -> T:
        return await self._call(lambda: self._transaction(script(), write))

    def _transaction(self, script: sql.Script[T], write: bool) -> T:
        """In the database thread: the whole script between BEGIN and COMMIT, rolled back if anything raises."""
        conn = self._connection()
        if not write:  # reads are one statement each (see SqlStore._run): no transaction needed
            return _drive(conn, script)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = _drive(conn, script)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result


def _drive(conn: sqlite3.Connection, script: sql.Script[T]) -> T:
    try:
        stmt = next(script)
        while True:
            cursor = conn.execute(stmt.sql.replace("%s", "?"), tuple(_param(p) for p in stmt.params))
            rows = cursor.fetchall()
            stmt = script.send(sql.Result(rows, cursor.rowcount))
    except StopIteration as done:
        return done.value
