"""The store's transactions, written once for SQLite and PostgreSQL as sans-I/O scripts.

A script is a generator that yields `Stmt`s (SQL with `%s` placeholders) and is sent back each one's
`Result`; what it returns is the transaction's result, and what it raises aborts the transaction. A driver
(`sqlite.py`, `postgres.py`) runs a script in one of three modes: `READ` (single statements, no
transaction), `WRITE` (BEGIN ... COMMIT around the whole script) and `SINGLE` (a script whose only write
is its first statement: PostgreSQL runs it without BEGIN/COMMIT, SQLite like WRITE). So the fencing and
idempotency logic has one definition; PostgreSQL runs its hot writes as one call of a server function
instead (`schema.py`), with the same outcomes, which the conformance suite holds both to.

Fencing (SPEC section 6): a write first runs `UPDATE contexts ... WHERE id = $id AND epoch = $held AND
owner = $me`. In PostgreSQL that row lock orders the write against a concurrent adoption (which updates the
same row), so a write either commits before the adoption or finds the new epoch and is refused; SQLite has
one writer at a time. Idempotency: a write with a key first claims it (`INSERT ... ON CONFLICT DO
NOTHING`); a concurrent duplicate waits on that unique key until the first commits, then finds it taken
and replays the recorded outcome (status, version, context id) instead of applying again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from csserver.store.base import (
    Context, Fence, Idem, IdempotencyKeyReused, Node, NotFound, SchemaTooNew, StaleEpoch, Store, StoreUnavailable,
    Value, check_text,
)
from csserver.store.schema import LATEST_VERSION, MIGRATIONS, POSTGRES, SQLITE, Dialect, statements

T = TypeVar("T")
READ, WRITE, SINGLE = "read", "write", "single"
ID_ATTEMPTS = 4  # random ids tried per create; a collision among 2**63 ids is already a freak
__all__ = ["READ", "WRITE", "SINGLE", "SQLITE", "POSTGRES", "LATEST_VERSION", "Stmt", "Result", "Script", "SqlStore"]


@dataclass(frozen=True)
class Stmt:
    sql: str  # placeholders are %s
    params: tuple = ()


@dataclass(frozen=True)
class Result:
    rows: list[tuple]
    rowcount: int


Script = Generator[Stmt, Result, T]


@dataclass(frozen=True)
class Replay:
    """What an Idempotency-Key's first use recorded: enough to answer its retry."""

    status: int | None
    version: int | None = None
    context_id: int | None = None


_CONTEXT_COLUMNS = "id, primary_alias, backup_alias, owner, epoch, labels, created, updated"


def as_utc(value: datetime | str) -> datetime:
    """A timestamp column as an aware UTC datetime (SQLite keeps ISO text, PostgreSQL timestamptz)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc)


def _context(row: tuple) -> Context:
    id_, primary, backup, owner, epoch, labels, created, updated = row
    return Context(int(id_), primary, backup, owner, int(epoch), json.loads(labels), as_utc(created), as_utc(updated))


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (code point order), None if there is
    none: keys in [prefix, prefix_end) are exactly those starting with `prefix`. Surrogates are skipped,
    as no stored key holds one."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1
        if following <= 0x10FFFF:
            return "".join(chars) + chr(following)
    return None


# ---- scripts ------------------------------------------------------------------------------------------

def migrate(dialect: Dialect, now: datetime) -> Script[int]:
    """Apply every migration newer than the database's version; the version it is at afterwards."""
    if dialect.migration_lock:
        yield Stmt(dialect.migration_lock)
    if dialect is POSTGRES:  # rebuilding an index of a large table takes longer than any request may
        yield Stmt("SET LOCAL statement_timeout = 0")
    yield Stmt("CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, name TEXT NOT NULL, "
               "applied {ts} NOT NULL)".format(**dialect.types))
    current = (yield Stmt("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).rows[0][0]
    if current > LATEST_VERSION:
        raise SchemaTooNew(f"the database schema is at version {current}; this csserver knows up to "
                           f"{LATEST_VERSION}: upgrade csserver")
    for version, name, _ in MIGRATIONS:
        if version <= current:
            continue
        for ddl in statements(dialect, version):
            yield Stmt(ddl)
        yield Stmt("INSERT INTO schema_migrations (version, name, applied) VALUES (%s, %s, %s)", (version, name, now))
    return LATEST_VERSION


def schema_version() -> Script[int]:
    return (yield Stmt("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).rows[0][0]


def identify(candidate: str, now: datetime) -> Script[str]:
    """The store's id: `candidate` if the store had none yet (the first node to open it names it)."""
    yield Stmt("INSERT INTO store_identity (singleton, store_id, created) VALUES (1, %s, %s) "
               "ON CONFLICT (singleton) DO NOTHING", (candidate, now))
    return (yield Stmt("SELECT store_id FROM store_identity")).rows[0][0]


def heartbeat(alias: str, instance: str, now: datetime) -> Script[list[Node]]:
    yield Stmt("INSERT INTO nodes (alias, instance, joined, seen) VALUES (%s, %s, %s, %s) ON CONFLICT (alias) "
               "DO UPDATE SET instance = excluded.instance, seen = excluded.seen", (alias, instance, now, now))
    rows = (yield Stmt("SELECT alias, instance, joined, seen FROM nodes ORDER BY alias")).rows
    return [Node(a, i, as_utc(j), as_utc(s)) for a, i, j, s in rows]


def replay_of(idem: Idem, fingerprint: str, status: int | None, version: int | None, context_id: int | None,
              result: str | None) -> Replay:
    """The recorded outcome of `idem`'s first use, or why it cannot be replayed."""
    if fingerprint != idem.fingerprint:
        raise IdempotencyKeyReused(f"Idempotency-Key {idem.key!r} was used for a different request")
    if status is None and result is not None:  # written by csserver before schema 2: the whole answer
        legacy = json.loads(result)
        return Replay(0, legacy.get("version"), legacy.get("id"))
    if status is None:
        raise StoreUnavailable("the first request with this Idempotency-Key is still in progress; retry")
    return Replay(int(status), None if version is None else int(version), None if context_id is None else int(context_id))


def _claim(idem: Idem, now: datetime) -> Script[Replay | None]:
    """Claim the idempotency key for this transaction (None), or the outcome recorded by its first use."""
    claimed = yield Stmt("INSERT INTO idempotency (key, fingerprint, created) VALUES (%s, %s, %s) "
                         "ON CONFLICT (key) DO NOTHING RETURNING key", (idem.key, idem.fingerprint, now))
    if claimed.rows:
        return None
    rows = (yield Stmt("SELECT fingerprint, status, version, context_id, result FROM idempotency WHERE key = %s",
                       (idem.key,))).rows
    if not rows:  # expired between the two statements: extraordinarily unlikely; let the client retry
        raise StoreUnavailable("idempotency record vanished; retry")
    return replay_of(idem, *rows[0])


def _record(idem: Idem | None, status: int, version: int | None = None, context_id: int | None = None) -> Script[None]:
    if idem is not None:
        yield Stmt("UPDATE idempotency SET status = %s, version = %s, context_id = %s WHERE key = %s",
                   (status, version, context_id, idem.key))


def _fence(fence: Fence, now: datetime) -> Script[None]:
    """Lock the context row if it still has the held epoch and owner; NotFound or StaleEpoch otherwise."""
    held = yield Stmt("UPDATE contexts SET updated = %s WHERE id = %s AND epoch = %s AND owner = %s",
                      (now, fence.context_id, fence.epoch, fence.owner))
    if held.rowcount == 1:
        return
    rows = (yield Stmt("SELECT epoch, owner FROM contexts WHERE id = %s", (fence.context_id,))).rows
    if not rows:
        raise NotFound("no such context")
    raise StaleEpoch(fence.epoch, int(rows[0][0]), rows[0][1])


def created_replay(replay: Replay, primary: str, backup: str, owner: str, labels: dict, now: datetime) -> Script[Context]:
    """A create's retry: the context as the store has it now (it may have been adopted since), or as it was
    made when it has been deleted since."""
    if replay.context_id is None:
        raise StoreUnavailable("the recorded create names no context; retry")
    ctx = yield from get_context(replay.context_id)
    return ctx or Context(replay.context_id, primary, backup, owner, 1, labels, as_utc(now), as_utc(now))


def create_context(primary: str, backup: str, owner: str, labels: dict, now: datetime, idem: Idem | None,
                   new_id: Callable[[], int]) -> Script[Context]:
    if idem is not None:
        replay = yield from _claim(idem, now)
        if replay is not None:
            return (yield from created_replay(replay, primary, backup, owner, labels, now))
    for _ in range(ID_ATTEMPTS):
        candidate = new_id()
        rows = (yield Stmt("INSERT INTO contexts (id, primary_alias, backup_alias, owner, epoch, labels, created, "
                           "updated) VALUES (%s, %s, %s, %s, 1, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                           (candidate, primary, backup, owner, json.dumps(labels), now, now))).rows
        if rows:
            break
    else:
        raise StoreUnavailable(f"{ID_ATTEMPTS} random context ids in a row were taken; retry")
    yield from _record(idem, 201, context_id=candidate)
    return Context(candidate, primary, backup, owner, 1, labels, as_utc(now), as_utc(now))


def get_context(context_id: int) -> Script[Context | None]:
    rows = (yield Stmt(f"SELECT {_CONTEXT_COLUMNS} FROM contexts WHERE id = %s", (context_id,))).rows
    return _context(rows[0]) if rows else None


def adopt(context_id: int, owner: str, seen_owner: str, seen_epoch: int, now: datetime) -> Script[Context | None]:
    """owner = me, epoch + 1, only if the context still has the owner and epoch the caller saw (so two
    nodes that both saw it never both adopt, and a node never takes it from one that adopted meanwhile);
    then the context as it is."""
    rows = (yield Stmt(f"UPDATE contexts SET owner = %s, epoch = epoch + 1, updated = %s "
                       f"WHERE id = %s AND owner = %s AND epoch = %s RETURNING {_CONTEXT_COLUMNS}",
                       (owner, now, context_id, seen_owner, seen_epoch))).rows
    if rows:
        return _context(rows[0])
    return (yield from get_context(context_id))


def delete_context(fence: Fence, now: datetime, idem: Idem | None) -> Script[None]:
    if idem is not None and (yield from _claim(idem, now)) is not None:
        return None
    yield from _fence(fence, now)
    yield Stmt("DELETE FROM context_values WHERE context_id = %s", (fence.context_id,))
    yield Stmt("DELETE FROM contexts WHERE id = %s", (fence.context_id,))
    yield from _record(idem, 204)
    return None


def put_value(fence: Fence, key: str, value_json: str, now: datetime, idem: Idem | None) -> Script[Value]:
    if idem is not None:
        replay = yield from _claim(idem, now)
        if replay is not None:
            return Value(key, value_json, replay.version)
    yield from _fence(fence, now)
    rows = (yield Stmt("INSERT INTO context_values (context_id, key, value, version, updated) "
                       "VALUES (%s, %s, %s, 1, %s) ON CONFLICT (context_id, key) DO UPDATE SET "
                       "value = excluded.value, version = context_values.version + 1, updated = excluded.updated "
                       "RETURNING version", (fence.context_id, key, value_json, now))).rows
    version = int(rows[0][0])
    yield from _record(idem, 200, version)
    return Value(key, value_json, version)


def get_value(context_id: int, key: str) -> Script[Value | None]:
    rows = (yield Stmt("SELECT value, version FROM context_values WHERE context_id = %s AND key = %s",
                       (context_id, key))).rows
    return Value(key, rows[0][0], int(rows[0][1])) if rows else None


def delete_value(fence: Fence, key: str, now: datetime, idem: Idem | None) -> Script[None]:
    if idem is not None and (yield from _claim(idem, now)) is not None:
        return None
    yield from _fence(fence, now)
    gone = yield Stmt("DELETE FROM context_values WHERE context_id = %s AND key = %s", (fence.context_id, key))
    if gone.rowcount != 1:
        raise NotFound("no such key")
    yield from _record(idem, 204)
    return None


def list_values(context_id: int, prefix: str, after: str | None, limit: int | None) -> Script[list[Value]]:
    """A range of the primary key (context_id, key): both databases compare keys in code point order
    (SQLite's BINARY on UTF-8, PostgreSQL's COLLATE "C" of schema 2), so no sort and no scan."""
    where, params = ["context_id = %s"], [context_id]
    if prefix:
        where.append("key >= %s")
        params.append(prefix)
    if after is not None:
        where.append("key > %s")
        params.append(after)
    end = prefix_end(prefix) if prefix else None
    if end is not None:
        where.append("key < %s")
        params.append(end)
    query = f"SELECT key, value, version FROM context_values WHERE {' AND '.join(where)} ORDER BY key"
    if limit is not None:
        query += " LIMIT %s"
        params.append(limit)
    rows = (yield Stmt(query, tuple(params))).rows
    return [Value(key, value, int(version)) for key, value, version in rows]


def expire_idempotency(before: datetime, limit: int) -> Script[int]:
    return (yield Stmt("DELETE FROM idempotency WHERE key IN "
                       "(SELECT key FROM idempotency WHERE created < %s ORDER BY created LIMIT %s)",
                       (before, limit))).rowcount


def trim_idempotency(keep: int, limit: int) -> Script[int]:
    count = (yield from idempotency_records())
    excess = min(count - keep, limit)
    if excess <= 0:
        return 0
    return (yield Stmt("DELETE FROM idempotency WHERE key IN "
                       "(SELECT key FROM idempotency ORDER BY created LIMIT %s)", (excess,))).rowcount


def idempotency_records() -> Script[int]:
    return int((yield Stmt("SELECT count(*) FROM idempotency")).rows[0][0])


# ---- the Store API on top of a driver -----------------------------------------------------------------

class SqlStore(Store):
    """Implements `Store` with the scripts above; a subclass supplies `_run` (and open/close/ping)."""

    dialect: Dialect = SQLITE

    async def _run(self, script: Callable[[], Script[T]], mode: str) -> T:
        """Run script() in `mode` (READ, WRITE or SINGLE) and return its result, committed; StoreUnavailable
        on any database failure."""
        raise NotImplementedError

    async def _open_schema(self, candidate_id: str) -> None:
        """Migrate, then learn the store's identity (naming it `candidate_id` if it has none)."""
        now = datetime.now(timezone.utc)
        await self._migrate(lambda: migrate(self.dialect, now))
        self.store_id = await self._run(lambda: identify(candidate_id, now), WRITE)

    async def _migrate(self, script: Callable[[], Script[int]]) -> int:
        return await self._run(script, WRITE)

    async def schema_version(self) -> int:
        return await self._run(schema_version, READ)

    async def heartbeat(self, alias: str, instance: str, now: datetime) -> list[Node]:
        return await self._run(lambda: heartbeat(alias, instance, now), WRITE)

    async def create_context(self, primary: str, backup: str, owner: str, labels: dict[str, Any],
                             now: datetime, idem: Idem | None = None) -> Context:
        check_text(primary=primary, backup=backup, owner=owner, labels=json.dumps(labels, ensure_ascii=False))
        return await self._run(lambda: create_context(primary, backup, owner, labels, now, idem, self.new_id), WRITE)

    async def get_context(self, context_id: int) -> Context | None:
        return await self._run(lambda: get_context(context_id), READ)

    async def adopt(self, context_id: int, owner: str, seen_owner: str, seen_epoch: int,
                    now: datetime) -> Context | None:
        return await self._run(lambda: adopt(context_id, owner, seen_owner, seen_epoch, now), SINGLE)

    async def delete_context(self, fence: Fence, now: datetime, idem: Idem | None = None) -> None:
        await self._run(lambda: delete_context(fence, now, idem), WRITE)

    async def put_value(self, fence: Fence, key: str, value_json: str, now: datetime,
                        idem: Idem | None = None) -> Value:
        check_text(key=key, value=value_json)
        return await self._run(lambda: put_value(fence, key, value_json, now, idem), WRITE)

    async def get_value(self, context_id: int, key: str) -> Value | None:
        check_text(key=key)
        return await self._run(lambda: get_value(context_id, key), READ)

    async def delete_value(self, fence: Fence, key: str, now: datetime, idem: Idem | None = None) -> None:
        check_text(key=key)
        await self._run(lambda: delete_value(fence, key, now, idem), WRITE)

    async def list_values(self, context_id: int, prefix: str = "", after: str | None = None,
                          limit: int | None = None) -> list[Value]:
        check_text(prefix=prefix, after=after)
        return await self._run(lambda: list_values(context_id, prefix, after, limit), READ)

    async def expire_idempotency(self, before: datetime, limit: int) -> int:
        return await self._run(lambda: expire_idempotency(before, limit), WRITE)

    async def trim_idempotency(self, keep: int, limit: int) -> int:
        return await self._run(lambda: trim_idempotency(keep, limit), WRITE)

    async def idempotency_records(self) -> int:
        return await self._run(idempotency_records, READ)
