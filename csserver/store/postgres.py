"""PostgreSQL backend (psycopg 3, async) for nodes that share one database, which may fail over: a small
reconnecting pool, one round trip per write, and every wait bounded below a client's deadline.

Writes: each hot write is one call of a server function (`schema.py`), run without BEGIN/COMMIT: one
round trip, atomic, and a refusal (stale epoch, not found) raises inside it, so nothing of it is applied.
Migrations and the store's housekeeping run as transactions of `sql.py` scripts; reads are one statement.

Sessions: isolation is pinned to READ COMMITTED (the fencing's reasoning assumes it) and
synchronous_commit to at least `on` (a 2xx means durable, on the standby too when one is synchronous);
`lock_timeout`, `statement_timeout` and `idle_in_transaction_session_timeout` stay below the client's
deadline. They are SET after connecting, not sent as startup options, which poolers such as PgBouncer
refuse.

Failures: a lock timeout, deadlock or serialization failure is retried on the same, healthy connection.
A connection that fails is closed and its slot left empty, so the next user reconnects; a read, a write
that had not reached COMMIT, or an idempotent write is retried once at once on a fresh connection. A
server that stops answering (a frozen or dead host: no RST, the socket just waits) is given
`operation_timeout_s`, then its connection is severed (shut down, not cancelled: a cancel request would
wait on the same dead host) and the host goes to the back of the line.

Several hosts (`postgresql://pg1,pg2/db?target_session_attrs=read-write`): each gets its own connect
budget, tried in order, the host of the last good connection first and a host that just failed last,
so after a failover new connections go straight to the new primary.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from csserver.store import sql
from csserver.store.base import (
    BadInput, Context, Fence, Idem, NotFound, StaleEpoch, StoreError, StoreUnavailable, Value, check_text,
)
from csserver.store.schema import NO_FREE_ID_SQLSTATE, REFUSED_SQLSTATE

T = TypeVar("T")

# Below csserver.client's default deadline (10 s) and attempt timeout (1 s x retries): a request that waits
# on a lock or a slow statement gets an answer (503, retried) in time.
SESSION_SETTINGS = {
    "lock_timeout": "1000",
    "statement_timeout": "1500",
    "idle_in_transaction_session_timeout": "2000",
    "default_transaction_isolation": "'read committed'",
}
WEAK_COMMIT = ("off", "local")  # synchronous_commit values that would make a 2xx less than durable
TRANSIENT = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected, pg_errors.SerializationFailure,
             pg_errors.QueryCanceled)
TRANSIENT_RETRIES = 3
NOT_APPLIED_SQLSTATES = ("57P01", "57P02", "57P03")  # the server ended the session before running anything


class _Failed(Exception):
    """The connection failed under a script. `ambiguous`: COMMIT (or the one autocommit statement) had been
    sent, so it may have been applied; otherwise nothing of it was."""

    def __init__(self, cause: BaseException, ambiguous: bool):
        super().__init__(" ".join(str(cause).split()) or type(cause).__name__)
        self.cause, self.ambiguous = cause, ambiguous


class _Refused(StoreError):
    """A write function refused (REFUSED_SQLSTATE); `detail` is its JSON."""

    def __init__(self, detail: dict):
        super().__init__(json.dumps(detail))
        self.detail = detail


class PostgresStore(sql.SqlStore):
    dialect = sql.POSTGRES

    def __init__(self, url: str, pool_size: int = 16, connect_timeout_s: float = 2.0, acquire_timeout_s: float = 3.0,
                 operation_timeout_s: float = 2.0):
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout_s = max(2.0, connect_timeout_s)  # libpq's and psycopg's floor
        self.acquire_timeout_s = acquire_timeout_s
        self.operation_timeout_s = operation_timeout_s
        self._params = conninfo_to_dict(url)
        self._hosts = _hosts(self._params)
        self._preferred: tuple | None = None
        self._avoided: set[tuple] = set()
        self._slots: asyncio.Queue[psycopg.AsyncConnection | None] | None = None
        self.replication: dict[str, Any] = {}

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # the URL may carry a password

    # ---- life ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._slots = asyncio.Queue()
        for _ in range(self.pool_size):
            self._slots.put_nowait(None)
        try:
            await self._open_schema(str(uuid.uuid4()))
            rows = await self._run(_replication, sql.READ)
            self.replication = {"synchronous_standby_names": rows[0], "synchronous_commit": rows[1]}
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._slots is None:
            return
        slots, self._slots = self._slots, None
        while not slots.empty():
            conn = slots.get_nowait()
            if conn is not None:
                await _discard(conn)

    async def ping(self) -> None:
        await self._run(_ping, sql.READ)

    async def _migrate(self, script: Callable[[], sql.Script[int]]) -> int:
        return await self._run(script, sql.WRITE, timeout=None)  # an index rebuild may take long

    # ---- connections ----------------------------------------------------------------------------------

    def _conninfo(self) -> str:
        """The URL's conninfo with its hosts in the order to try now."""
        if len(self._hosts) < 2:
            return make_conninfo("", **self._params)
        order = sorted(range(len(self._hosts)), key=lambda i: (self._hosts[i] in self._avoided,
                                                               self._hosts[i] != self._preferred, i))
        hosts = [self._hosts[i] for i in order]
        fields = {name: ",".join(h[k] for h in hosts) for k, name in enumerate(("host", "port", "hostaddr"))
                  if any(h[k] for h in hosts)}
        return make_conninfo("", **{**self._params, **fields})

    async def _connect(self) -> psycopg.AsyncConnection:
        budget = self.connect_timeout_s * max(1, len(self._hosts)) + 1.0  # psycopg tries each host in turn
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._conninfo(), autocommit=True,
                                                connect_timeout=round(self.connect_timeout_s)), budget)
        except (psycopg.Error, OSError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
        try:
            await asyncio.wait_for(self._configure(conn), self.operation_timeout_s)
        except BaseException as exc:
            await _discard(conn)
            if isinstance(exc, (psycopg.Error, OSError, asyncio.TimeoutError)):
                raise StoreUnavailable(f"PostgreSQL: setting up the session failed: {exc or type(exc).__name__}") from exc
            raise
        host = self._host_of(conn)
        self._preferred = host
        self._avoided.discard(host)
        return conn

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        commit = (await (await conn.execute("SHOW synchronous_commit")).fetchone())[0]
        settings = dict(SESSION_SETTINGS)
        if commit in WEAK_COMMIT:
            settings["synchronous_commit"] = "on"
        await conn.execute("; ".join(f"SET {name} = {value}" for name, value in settings.items()))

    def _host_of(self, conn: psycopg.AsyncConnection) -> tuple | None:
        info = conn.info
        for host in self._hosts:
            if host[0] == info.host and (not host[1] or host[1] == str(info.port)):
                return host
        return None

    def _on_avoided_host(self, conn: psycopg.AsyncConnection) -> bool:
        """A pooled connection to a host that has since failed: dropped rather than waited on."""
        return bool(self._avoided) and self._host_of(conn) in self._avoided

    def _distrust(self, conn: psycopg.AsyncConnection | None) -> None:
        """The host behind `conn` failed: try the others first from now on."""
        if conn is None or len(self._hosts) < 2:
            return
        try:
            host = self._host_of(conn)
        except Exception:  # the connection is already torn down
            return
        if host is not None:
            self._avoided.add(host)
            if self._preferred == host:
                self._preferred = None

    # ---- running scripts ------------------------------------------------------------------------------

    async def _run(self, script: Callable[[], sql.Script[T]], mode: str, retry_safe: bool | None = None,
                   timeout: float | None = -1.0) -> T:
        """Run `script` in `mode`; `retry_safe`: may it run again after an ambiguous connection failure
        (default: reads only); `timeout`: seconds the server may take (None: no bound, for migrations)."""
        slots = self._slots
        if slots is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        timeout = self.operation_timeout_s if timeout == -1.0 else timeout
        retry_safe = mode == sql.READ if retry_safe is None else retry_safe
        try:
            conn = slots.get_nowait() if not slots.empty() else await asyncio.wait_for(slots.get(),
                                                                                        self.acquire_timeout_s)
        except asyncio.TimeoutError:
            raise StoreUnavailable("no PostgreSQL connection free in time") from None
        keep = None
        try:
            reused = conn is not None and _alive(conn) and not self._on_avoided_host(conn)
            if not reused:
                if conn is not None:
                    await _discard(conn)
                conn = await self._connect()
            try:
                result = await self._transient_retries(conn, script, mode, timeout)
            except _Failed as failure:
                self._distrust(conn)
                await _discard(conn)
                conn = None
                if not (reused and (retry_safe or not failure.ambiguous)):
                    raise StoreUnavailable(f"PostgreSQL: {failure}") from failure.cause
                conn = await self._connect()
                try:
                    result = await self._transient_retries(conn, script, mode, timeout)
                except _Failed as again:
                    self._distrust(conn)
                    raise StoreUnavailable(f"PostgreSQL: {again}") from again.cause
            keep = conn
            return result
        except StoreError:
            # The script refused (NotFound, StaleEpoch, ...) or a transient error persisted, and its
            # transaction was rolled back: the connection is as good as before.
            if conn is not None and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                keep = conn
            raise
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
        finally:
            if keep is None and conn is not None:
                await _discard(conn)
            slots.put_nowait(keep)

    async def _transient_retries(self, conn: psycopg.AsyncConnection, script_factory: Callable[[], sql.Script[T]],
                                 mode: str, timeout: float | None) -> T:
        delay = 0.005
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                return await self._bounded(conn, script_factory, mode, timeout)
            except TRANSIENT as exc:
                if attempt == TRANSIENT_RETRIES:
                    raise StoreUnavailable(f"PostgreSQL: {' '.join(str(exc).split())} (tried "
                                           f"{TRANSIENT_RETRIES + 1} times)") from exc
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _bounded(self, conn: psycopg.AsyncConnection, script_factory: Callable[[], sql.Script[T]], mode: str,
                       timeout: float | None) -> T:
        """One attempt; when the server does not answer within `timeout`, the connection is severed (a timer,
        not a task per statement: this is on every request's path)."""
        if timeout is None:
            return await self._transaction(conn, script_factory, mode)
        severed: list[bool] = []

        def sever() -> None:
            severed.append(True)
            _sever(conn)

        timer = asyncio.get_running_loop().call_later(timeout, sever)
        try:
            return await self._transaction(conn, script_factory, mode)
        except _Failed as failure:
            if severed:
                raise _Failed(TimeoutError(f"the server did not answer within {timeout:g} s"),
                              ambiguous=True) from failure.cause
            raise
        finally:
            timer.cancel()

    async def _transaction(self, conn: psycopg.AsyncConnection, script_factory: Callable[[], sql.Script[T]],
                           mode: str) -> T:
        script = script_factory()
        committing = False
        try:
            if mode != sql.WRITE:  # one statement each, autocommit: one round trip instead of three
                committing = mode == sql.SINGLE
                return await _drive(conn, script)
            async with conn.transaction():
                result = await _drive(conn, script)
                committing = True
            return result
        except TRANSIENT:
            raise  # the server refused this once (a lock, a deadlock...); the connection is fine
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _Failed(exc, ambiguous=committing and not _not_applied(exc)) from exc
        except psycopg.DataError as exc:  # text PostgreSQL cannot hold, however it got past the checks
            raise BadInput(f"PostgreSQL refused the data: {' '.join(str(exc).split())}") from exc
        except psycopg.Error as exc:
            if exc.sqlstate == REFUSED_SQLSTATE:
                raise _Refused(json.loads(exc.diag.message_primary or "{}")) from None
            if exc.sqlstate == NO_FREE_ID_SQLSTATE:
                raise StoreUnavailable("every random context id tried was taken; retry") from None
            raise

    # ---- writes as one server-function call ---------------------------------------------------------

    async def _write_function(self, name: str, fence: Fence | None, params: tuple, idem: Idem | None) -> dict:
        """SELECT name(params...) as one autocommit statement; the refusals it raises as StaleEpoch or
        NotFound; its JSON answer."""
        placeholders = ", ".join(["%s"] * len(params))
        try:
            return await self._run(lambda: _one(f"SELECT {name}({placeholders})", params), sql.SINGLE,
                                   retry_safe=idem is not None)
        except _Refused as refused:
            if "stale" in refused.detail and fence is not None:
                stale = refused.detail["stale"]
                raise StaleEpoch(fence.epoch, int(stale["epoch"]), stale["owner"]) from None
            raise NotFound(refused.detail.get("not_found", "not found")) from None

    @staticmethod
    def _replay(answer: dict, idem: Idem | None) -> sql.Replay | None:
        if "claim" not in answer or idem is None:
            return None
        recorded = answer["claim"]
        if recorded is None:
            raise StoreUnavailable("idempotency record vanished; retry")
        return sql.replay_of(idem, recorded["fingerprint"], recorded["status"], recorded["version"],
                             recorded["context_id"], recorded["result"])

    async def create_context(self, primary: str, backup: str, owner: str, labels: dict[str, Any],
                             now: datetime, idem: Idem | None = None) -> Context:
        labels_json = json.dumps(labels)
        check_text(primary=primary, backup=backup, owner=owner, labels=json.dumps(labels, ensure_ascii=False))
        candidates = [self.new_id() for _ in range(sql.ID_ATTEMPTS)]
        answer = await self._write_function("csserver_create_context", None,
                                            (candidates, primary, backup, owner, labels_json, now, *_idem(idem)), idem)
        replay = self._replay(answer, idem)
        if replay is not None:
            return await self._run(lambda: sql.created_replay(replay, primary, backup, owner, labels, now), sql.READ)
        return Context(int(answer["id"]), primary, backup, owner, 1, labels, sql.as_utc(now), sql.as_utc(now))

    async def put_value(self, fence: Fence, key: str, value_json: str, now: datetime,
                        idem: Idem | None = None) -> Value:
        check_text(key=key, value=value_json)
        answer = await self._write_function(
            "csserver_put_value", fence,
            (fence.context_id, fence.owner, fence.epoch, key, value_json, now, *_idem(idem)), idem)
        replay = self._replay(answer, idem)
        return Value(key, value_json, int(replay.version if replay is not None else answer["version"]))

    async def delete_value(self, fence: Fence, key: str, now: datetime, idem: Idem | None = None) -> None:
        check_text(key=key)
        answer = await self._write_function("csserver_delete_value", fence,
                                            (fence.context_id, fence.owner, fence.epoch, key, now, *_idem(idem)), idem)
        self._replay(answer, idem)

    async def delete_context(self, fence: Fence, now: datetime, idem: Idem | None = None) -> None:
        answer = await self._write_function("csserver_delete_context", fence,
                                            (fence.context_id, fence.owner, fence.epoch, now, *_idem(idem)), idem)
        self._replay(answer, idem)

    async def adopt(self, context_id: int, owner: str, seen_owner: str, seen_epoch: int,
                    now: datetime) -> Context | None:
        # A compare and swap: running it again after an ambiguous failure is harmless.
        return await self._run(lambda: sql.adopt(context_id, owner, seen_owner, seen_epoch, now), sql.SINGLE,
                               retry_safe=True)


def _idem(idem: Idem | None) -> tuple:
    return (idem.key, idem.fingerprint) if idem is not None else (None, None)


def _hosts(params: dict) -> list[tuple[str, str, str]]:
    """(host, port, hostaddr) per host of a conninfo, as libpq pairs them (one port may serve them all)."""
    def split(name: str) -> list[str]:
        return str(params.get(name) or "").split(",")

    hosts, ports, addrs = split("host"), split("port"), split("hostaddr")
    count = max(len(hosts), len(addrs))
    if count < 2:
        return [(hosts[0], ports[0], addrs[0])]

    def nth(values: list[str], i: int) -> str:
        return values[i] if len(values) == count else values[0] if len(values) == 1 else ""

    return [(nth(hosts, i), nth(ports, i), nth(addrs, i)) for i in range(count)]


def _alive(conn: psycopg.AsyncConnection) -> bool:
    """Whether an idle pooled connection still looks usable: not closed, and nothing unsolicited waiting on
    its socket (a server that ended the session has sent its FATAL and closed: readable at once)."""
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def _not_applied(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.Error) and exc.sqlstate in NOT_APPLIED_SQLSTATES


def _sever(conn: psycopg.AsyncConnection) -> None:
    """Shut the connection's socket down under psycopg, which then fails at once instead of waiting."""
    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


def _ping() -> sql.Script[None]:
    yield sql.Stmt("SELECT 1")


def _replication() -> sql.Script[tuple]:
    rows = (yield sql.Stmt("SELECT current_setting('synchronous_standby_names'), "
                           "current_setting('synchronous_commit')")).rows
    return rows[0]


def _one(statement: str, params: tuple) -> sql.Script[Any]:
    return (yield sql.Stmt(statement, params)).rows[0][0]


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
