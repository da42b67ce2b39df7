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

Reads (and /healthz) use a second connection: WAL lets it read the last commit while the writer works,
so a GET never queues behind an fsync. A read is one indexed lookup in pages the cache holds, tens of
microseconds, so it runs in the event loop itself: handing it to a thread and back costs more (about
70 us of GIL hand-offs per request on the 2-core bench machine, the most of a GET's cost). Its busy
timeout is short, so a locked WAL index cannot hold the loop for long.

The writer's statements run in the event loop too: they change pages in memory, and in a thread each
would pay a GIL hand-off (on a busy loop up to the 5 ms switch interval). What can wait runs in the
writer's own thread (a single-thread executor), one hop per group: the COMMIT, whose fsync is the group's
one wait for the disk, and a BEGIN when another process on the same file (two csservers on one host)
holds the write lock, retried for up to `busy_timeout_s`. While a COMMIT is under way the writes that
arrive meanwhile wait for the next group; nothing interleaves on the connection.

Checkpoints (copying the WAL back into the database file, with an fsync of its own) would otherwise run
inside a commit now and then (SQLite's auto-checkpoint), and that write would wait for them: a third
connection in a thread of its own runs a PASSIVE checkpoint every CHECKPOINT_INTERVAL_S instead, which
never blocks the writer or the readers.
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
GATHER_TURNS = 4  # turns of the event loop a group waits for more writes, at most
WRITER_STUCK_S = 5.0  # /healthz fails when a commit has taken longer than this (a hung disk)
READER_BUSY_TIMEOUT_S = 0.2  # the reader runs in the event loop: never wait long for a lock
CHECKPOINT_INTERVAL_S = 1.0  # the WAL is copied into the database by a connection of its own this often


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
        self._checkpointer: Connection | None = None
        self._checkpoints: asyncio.Task | None = None
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
            self._reader = await Connection.open(self.path, READER_BUSY_TIMEOUT_S, "csserver-sqlite-reader",
                                                 writer=False)
            self._checkpointer = await Connection.open(self.path, 0.0, "csserver-sqlite-checkpoint", writer=False)
            self._checkpoints = asyncio.create_task(self._checkpoint_now_and_then())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for name in ("_checkpointer", "_reader", "_writer"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                await conn.close()

    async def ping(self) -> None:
        started = self._commit_started
        if started is not None and time.monotonic() - started > WRITER_STUCK_S:
            raise StoreUnavailable(f"SQLite {self.path}: a commit has been under way for "
                                   f"{time.monotonic() - started:.1f} s")
        self._connection(self._reader).here(lambda conn: conn.execute("SELECT 1").fetchone())

    async def _checkpoint_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await self._connection(self._checkpointer).call(
                    lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            except StoreError:  # busy or failing: the next round tries again; writes are not affected
                pass

    def _connection(self, conn: Connection | None) -> Connection:
        if conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return conn

    async def _run(self, script: Callable[[], sql.Script[T]], mode: str) -> T:
        if mode == sql.READ and self._reader is not None:
            return self._reader.here(lambda conn: _drive(conn, script()))
        self._connection(self._writer)
        done = asyncio.get_running_loop().create_future()
        self._pending.append((script, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Commit what is pending, a group at a time, until nothing is; answer each write after its commit."""
        writer = self._connection(self._writer)
        try:
            while self._pending:
                await self._gather()
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                outcomes = await self._commit_group(writer, [script for script, _ in batch])
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

    async def _gather(self) -> None:
        """Let the requests the event loop has already read reach the queue before a group starts: a few
        turns of the loop (microseconds each) while the queue still grows, so a group commits what came
        together rather than the first write alone."""
        for _ in range(GATHER_TURNS):
            before = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == before or len(self._pending) >= self.max_batch:
                return

    async def _commit_group(self, writer: Connection, scripts: list) -> list[tuple[bool, Any]]:
        """BEGIN, every script in a savepoint of its own, COMMIT; (True, result) or (False, error) each.

        The statements run here, in the event loop: they touch pages in memory, and a thread would pay a
        GIL hand-off per statement (on a busy loop up to the 5 ms switch interval each). The two calls
        that can wait run in the writer's thread: BEGIN when another process holds the write lock, and
        COMMIT, whose fsync is the group's one wait for the disk."""
        self._commit_started = time.monotonic()
        try:
            try:
                writer.here(_begin)
            except StoreUnavailable:  # another process writes: wait for the lock, off the event loop
                await writer.call(lambda conn: _begin_patiently(conn, self.busy_timeout_s))
            outcomes = writer.here(lambda conn: _apply(conn, scripts))
            await writer.call(_commit)
            return outcomes
        except StoreError as exc:  # nothing of the group was applied
            return [(False, exc)] * len(scripts)
        except Exception as exc:  # never leave a writer waiting for ever
            return [(False, StoreUnavailable(f"SQLite {self.path}: {exc!r}"))] * len(scripts)
        finally:
            self._commit_started = None


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
                mode = _wal(conn, busy_timeout_s)
                if mode.lower() != "wal":
                    raise StoreUnavailable(f"{self.path}: cannot use WAL journaling (journal_mode is {mode})")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run beside it, never in a commit
                # Set up (above) waiting like any client; from now on BEGIN is tried in the event loop
                # first and must fail at once rather than block it (see _commit_group).
                conn.execute("PRAGMA busy_timeout=0")
            else:
                conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(connection) in the connection's thread."""
        return await self._call(lambda: fn(self._require()))

    def here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(connection) in the calling thread (the event loop's): for the reader's short lookups."""
        return _mapped(lambda: fn(self._require()), self.path)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._conn

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, _mapped, fn, self.path)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)


def _wal(conn: sqlite3.Connection, timeout_s: float) -> str:
    """PRAGMA journal_mode=WAL, retried while another process holds a lock: SQLite answers "locked" at once
    there, without waiting, as when two csservers of one host open a new file together."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")  # the writer's busy timeout is 0: busy fails at once, never blocks


def _begin_patiently(conn: sqlite3.Connection, timeout_s: float) -> None:
    """In the writer thread: BEGIN IMMEDIATE, retried while another process holds the write lock."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def _apply(conn: sqlite3.Connection, scripts: list[Callable[[], sql.Script[Any]]]) -> list[tuple[bool, Any]]:
    """Inside the open transaction: each script in a savepoint of its own; a refused (or failed) one is
    rolled back to it and fails alone. A failure of the transaction itself rolls everything back."""
    outcomes: list[tuple[bool, Any]] = []
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
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _commit(conn: sqlite3.Connection) -> None:
    """In the writer thread: COMMIT (the fsync); rolled back if it fails, so nothing is half applied."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _mapped(fn: Callable[[], T], path: str) -> T:
    """fn(), with what the database raises as the store's errors."""
    try:
        return fn()
    except (sqlite3.Error, UnicodeEncodeError) as exc:
        raise _as_store_error(exc, path) from exc


def _as_store_error(exc: BaseException, path: str = "") -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"SQLite {path}: {exc}" if path else f"SQLite: {exc}")
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
