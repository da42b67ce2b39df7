"""SQLite backend (the embedded default): a writer connection that commits writes in groups, a reader
connection beside it, WAL with synchronous=FULL.

Durability: SPEC 6 says a 2xx means the write is durable. In WAL mode `synchronous=NORMAL` fsyncs only at
checkpoints, so a committed transaction survives a crash of the process but not of the machine (power
loss); `FULL` fsyncs the WAL at every commit, so a commit that returned is on disk.

Group commit: that fsync is most of a write's cost, so the writes that arrive while one commit is under
way are committed together by the next one: one BEGIN IMMEDIATE, each write in a SAVEPOINT of its own (a
write refused, stale epoch, not found, is rolled back to its savepoint and does not fail the others), one
COMMIT, one fsync; only then is any of them answered. If the COMMIT fails, none of them was applied and
all get StoreUnavailable (the client retries with its Idempotency-Key).

Reads (and /healthz) use a second connection in a thread of their own: WAL lets it read the last commit
while the writer works, so a GET never queues behind an fsync.

sqlite3 calls block, so each connection is driven from one thread (a single-thread executor): the event
loop never blocks and nothing interleaves on a connection. Other processes on the same file (two
csservers on one host) wait up to `busy_timeout_s` for the write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

from csserver.store import sql
from csserver.store.base import BadInput, StoreError, StoreUnavailable

T = TypeVar("T")
MAX_BATCH = 64  # writes committed together at most
WRITER_STUCK_S = 5.0  # /healthz fails when a commit has taken longer than this (a hung disk)


def _param(value):
    # SQLite has no timestamp type: ISO 8601 text in UTC sorts and compares like the instants.
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return value


class SqliteStore(sql.SqlStore):
    dialect = sql.SQLITE

    def __init__(self, path: str, busy_timeout_s: float = 5.0, max_batch: int = MAX_BATCH):
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.max_batch = max_batch
        self._writer: Connection | None = None
        self._reader: Connection | None = None
        self._pending: list[tuple[Callable[[], sql.Script[Any]], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._commit_started: float | None = None  # monotonic, while a commit is under way
        self.batches = 0  # commits made (group commit's effect: fewer than the writes)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def open(self) -> None:
        try:
            self._writer = await Connection.open(self.path, self.busy_timeout_s, "csserver-sqlite-writer", writer=True)
            await self._open_schema(str(uuid.uuid4()))
            self._reader = await Connection.open(self.path, self.busy_timeout_s, "csserver-sqlite-reader", writer=False)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for name in ("_reader", "_writer"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                await conn.close()

    async def ping(self) -> None:
        started = self._commit_started
        if started is not None and time.monotonic() - started > WRITER_STUCK_S:
            raise StoreUnavailable(f"SQLite {self.path}: a commit has been under way for "
                                   f"{time.monotonic() - started:.1f} s")
        await self._connection(self._reader).call(lambda conn: conn.execute("SELECT 1").fetchone())

    def _connection(self, conn: Connection | None) -> Connection:
        if conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return conn

    async def _run(self, script: Callable[[], sql.Script[T]], mode: str) -> T:
        if mode == sql.READ and self._reader is not None:
            return await self._reader.call(lambda conn: _drive(conn, script()))
        self._connection(self._writer)
        done = asyncio.get_running_loop().create_future()
        self._pending.append((script, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Commit what is pending, a group at a time, until nothing is; answer each write after its commit."""
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                self._commit_started = time.monotonic()
                try:
                    outcomes = await self._connection(self._writer).call(
                        lambda conn: _commit_group(conn, [script for script, _ in batch]))
                except StoreError as exc:  # BEGIN or COMMIT failed: nothing of the group was applied
                    outcomes = [(False, exc)] * len(batch)
                except Exception as exc:  # never leave a writer waiting for ever
                    outcomes = [(False, StoreUnavailable(f"SQLite {self.path}: {exc!r}"))] * len(batch)
                finally:
                    self._commit_started = None
                self.batches += 1
                for (_, done), (ok, outcome) in zip(batch, outcomes):
                    if done.done():
                        continue
                    if ok:
                        done.set_result(outcome)
                    else:
                        done.set_exception(outcome)
        finally:
            self._flusher = None


class Connection:
    """One sqlite3 connection and the one thread that drives it."""

    def __init__(self, path: str, executor: ThreadPoolExecutor):
        self.path = path
        self._executor = executor
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str, busy_timeout_s: float, thread_name: str, writer: bool) -> Connection:
        conn = cls(path, ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name))
        try:
            await conn._call(lambda: conn._connect(busy_timeout_s, writer))
        except BaseException:
            await conn.close()
            raise
        return conn

    def _connect(self, busy_timeout_s: float, writer: bool) -> None:
        conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            if writer:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreUnavailable(f"{self.path}: cannot use WAL journaling (journal_mode is {mode})")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            else:
                conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(lambda: fn(self._require()))

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._conn

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc
        except UnicodeEncodeError as exc:
            raise BadInput(f"not storable as UTF-8: {exc.reason}") from exc

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)


def _commit_group(conn: sqlite3.Connection, scripts: list[Callable[[], sql.Script[Any]]]) -> list[tuple[bool, Any]]:
    """In the writer thread: every script in a savepoint of its own inside one transaction, then COMMIT.

    Returns (True, result) or (False, exception) per script; raises (nothing committed) when the
    transaction itself fails."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for script in scripts:
            conn.execute("SAVEPOINT write")
            try:
                result = _drive(conn, script())
            except BaseException as exc:
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                outcomes.append((False, _as_store_error(exc)))
            else:
                conn.execute("RELEASE write")
                outcomes.append((True, result))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _as_store_error(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"SQLite: {exc}")
    if isinstance(exc, UnicodeEncodeError):
        return BadInput(f"not storable as UTF-8: {exc.reason}")
    return exc


def _drive(conn: sqlite3.Connection, script: sql.Script[T]) -> T:
    try:
        stmt = next(script)
        while True:
            cursor = conn.execute(stmt.sql.replace("%s", "?"), tuple(_param(p) for p in stmt.params))
            rows = cursor.fetchall()
            stmt = script.send(sql.Result(rows, cursor.rowcount))
    except StopIteration as done:
        return done.value
