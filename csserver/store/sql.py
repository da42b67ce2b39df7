"""The store's transactions, written once for SQLite and PostgreSQL as sans-I/O scripts.

A script is a generator that yields `Stmt`s (SQL with `%s` placeholders) and is sent back each one's
`Result`; what it returns is the transaction's result, and what it raises aborts the transaction. A driver
(`sqlite.py`, `postgres.py`) runs a script inside BEGIN ... COMMIT: SQLite in its one database thread,
PostgreSQL on an async connection. So the fencing and idempotency logic has exactly one definition, and the
two backends differ only in DDL types and how they execute a statement.

Fencing (SPEC section 6): a write first runs `UPDATE contexts ... WHERE id = $id AND epoch = $held AND
owner = $me`. In PostgreSQL that row lock orders the write against a concurrent adoption (which updates the
same row), so a write either commits before the adoption or finds the new epoch and is refused; SQLite has
one writer at a time (BEGIN IMMEDIATE). Idempotency: a write with a key first claims it (`INSERT ... ON
CONFLICT DO NOTHING`); a concurrent duplicate waits on that unique key until the first commits, then finds
it taken and returns the recorded result instead of applying again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from csserver.store.base import (
    Context, Fence, Idem, IdempotencyKeyReused, NotFound, SchemaTooNew, StaleEpoch, Store, StoreUnavailable, Value,
)

T = TypeVar("T")


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
class Dialect:
    name: str
    types: dict[str, str]  # what {id}, {int} and {ts} stand for in the DDL
    migration_lock: str | None  # run first in the migration transaction, so two nodes never migrate at once


SQLITE = Dialect("sqlite", {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "int": "INTEGER", "ts": "TEXT"}, None)
POSTGRES = Dialect(
    "postgresql",
    {"id": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "int": "bigint", "ts": "timestamptz"},
    "SELECT pg_advisory_xact_lock(726376)",  # any constant; csserver's migrations take this one
)

# Versioned schema: append, never edit a migration that has shipped. JSON (labels, values) is kept as the
# text the client sent: opaque to the store, returned as written. AUTOINCREMENT / IDENTITY never reuse the
# id of a deleted context, so an old HAID can never name a new context.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "contexts, values, idempotency", (
        """CREATE TABLE contexts (
            id {id},
            primary_alias TEXT NOT NULL,
            backup_alias TEXT NOT NULL,
            owner TEXT NOT NULL,
            epoch {int} NOT NULL CHECK (epoch >= 1),
            labels TEXT NOT NULL,
            created {ts} NOT NULL,
            updated {ts} NOT NULL)""",
        """CREATE TABLE context_values (
            context_id {int} NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            version {int} NOT NULL CHECK (version >= 1),
            updated {ts} NOT NULL,
            PRIMARY KEY (context_id, key))""",
        """CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            result TEXT,
            created {ts} NOT NULL)""",
        "CREATE INDEX idempotency_created ON idempotency (created)",
    )),
)
LATEST_VERSION = MIGRATIONS[-1][0]

_CONTEXT_COLUMNS = "id, primary_alias, backup_alias, owner, epoch, labels, created, updated"


def as_utc(value: datetime | str) -> datetime:
    """A timestamp column as an aware UTC datetime (SQLite keeps ISO text, PostgreSQL timestamptz)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc)


def _context(row: tuple) -> Context:
    id_, primary, backup, owner, epoch, labels, created, updated = row
    return Context(int(id_), primary, backup, owner, int(epoch), json.loads(labels), as_utc(created), as_utc(updated))


def _context_record(ctx: Context) -> dict:
    return {"id": ctx.id, "primary": ctx.primary, "backup": ctx.backup, "owner": ctx.owner, "epoch": ctx.epoch,
            "labels": ctx.labels, "created": ctx.created.isoformat(), "updated": ctx.updated.isoformat()}


def _context_from_record(rec: dict) -> Context:
    return Context(rec["id"], rec["primary"], rec["backup"], rec["owner"], rec["epoch"], rec["labels"],
                   as_utc(rec["created"]), as_utc(rec["updated"]))


# ---- scripts ------------------------------------------------------------------------------------------

def migrate(dialect: Dialect, now: datetime) -> Script[int]:
    """Apply every migration newer than the database's version; the version it is at afterwards."""
    if dialect.migration_lock:
        yield Stmt(dialect.migration_lock)
    yield Stmt("CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, name TEXT NOT NULL, "
               "applied {ts} NOT NULL)".format(**dialect.types))
    current = (yield Stmt("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).rows[0][0]
    if current > LATEST_VERSION:
        raise SchemaTooNew(f"the database schema is at version {current}; this csserver knows up to "
                           f"{LATEST_VERSION}: upgrade csserver")
    for version, name, statements in MIGRATIONS:
        if version <= current:
            continue
        for ddl in statements:
            yield Stmt(ddl.format(**dialect.types))
        yield Stmt("INSERT INTO schema_migrations (version, name, applied) VALUES (%s, %s, %s)", (version, name, now))
    return LATEST_VERSION


def schema_version() -> Script[int]:
    return (yield Stmt("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).rows[0][0]


def _claim(idem: Idem, now: datetime) -> Script[dict | None]:
    """Claim the idempotency key for this transaction (None), or the result recorded by its first use."""
    claimed = yield Stmt("INSERT INTO idempotency (key, fingerprint, result, created) VALUES (%s, %s, NULL, %s) "
                         "ON CONFLICT (key) DO NOTHING RETURNING key", (idem.key, idem.fingerprint, now))
    if claimed.rows:
        return None
    rows = (yield Stmt("SELECT fingerprint, result FROM idempotency WHERE key = %s", (idem.key,))).rows
    if not rows:  # expired between the two statements: extraordinarily unlikely; let the client retry
        raise StoreUnavailable("idempotency record vanished; retry")
    fingerprint, result = rows[0]
    if fingerprint != idem.fingerprint:
        raise IdempotencyKeyReused(f"Idempotency-Key {idem.key!r} was used for a different request")
    if result is None:
        raise StoreUnavailable("the first request with this Idempotency-Key is still in progress; retry")
    return json.loads(result)


def _record(idem: Idem, result: dict) -> Script[None]:
    yield Stmt("UPDATE idempotency SET result = %s WHERE key = %s", (json.dumps(result), idem.key))


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


def create_context(primary: str, backup: str, owner: str, labels: dict, now: datetime,
                   idem: Idem | None) -> Script[Context]:
    if idem is not None:
        replay = yield from _claim(idem, now)
        if replay is not None:
            return _context_from_record(replay)
    rows = (yield Stmt("INSERT INTO contexts (primary_alias, backup_alias, owner, epoch, labels, created, updated) "
                       "VALUES (%s, %s, %s, 1, %s, %s, %s) RETURNING id",
                       (primary, backup, owner, json.dumps(labels), now, now))).rows
    ctx = Context(int(rows[0][0]), primary, backup, owner, 1, labels, as_utc(now), as_utc(now))
    if idem is not None:
        yield from _record(idem, _context_record(ctx))
    return ctx


def get_context(context_id: int) -> Script[Context | None]:
    rows = (yield Stmt(f"SELECT {_CONTEXT_COLUMNS} FROM contexts WHERE id = %s", (context_id,))).rows
    return _context(rows[0]) if rows else None


def adopt(context_id: int, owner: str, now: datetime) -> Script[Context | None]:
    """owner = me, epoch + 1, in this one transaction; unchanged if `owner` already owns it (so two requests
    that both saw the old owner bump the epoch once, not twice)."""
    rows = (yield Stmt(f"UPDATE contexts SET owner = %s, epoch = epoch + 1, updated = %s "
                       f"WHERE id = %s AND owner <> %s RETURNING {_CONTEXT_COLUMNS}",
                       (owner, now, context_id, owner))).rows
    if rows:
        return _context(rows[0])
    return (yield from get_context(context_id))


def delete_context(fence: Fence, now: datetime, idem: Idem | None) -> Script[None]:
    if idem is not None and (yield from _claim(idem, now)) is not None:
        return None
    yield from _fence(fence, now)
    yield Stmt("DELETE FROM context_values WHERE context_id = %s", (fence.context_id,))
    yield Stmt("DELETE FROM contexts WHERE id = %s", (fence.context_id,))
    if idem is not None:
        yield from _record(idem, {})
    return None


def put_value(fence: Fence, key: str, value_json: str, now: datetime, idem: Idem | None) -> Script[Value]:
    if idem is not None:
        replay = yield from _claim(idem, now)
        if replay is not None:
            return Value(replay["key"], replay["value"], replay["version"])
    yield from _fence(fence, now)
    rows = (yield Stmt("INSERT INTO context_values (context_id, key, value, version, updated) "
                       "VALUES (%s, %s, %s, 1, %s) ON CONFLICT (context_id, key) DO UPDATE SET "
                       "value = excluded.value, version = context_values.version + 1, updated = excluded.updated "
                       "RETURNING version", (fence.context_id, key, value_json, now))).rows
    value = Value(key, json.loads(value_json), int(rows[0][0]))
    if idem is not None:
        yield from _record(idem, {"key": key, "value": value.value, "version": value.version})
    return value


def get_value(context_id: int, key: str) -> Script[Value | None]:
    rows = (yield Stmt("SELECT value, version FROM context_values WHERE context_id = %s AND key = %s",
                       (context_id, key))).rows
    return Value(key, json.loads(rows[0][0]), int(rows[0][1])) if rows else None


def delete_value(fence: Fence, key: str, now: datetime, idem: Idem | None) -> Script[None]:
    if idem is not None and (yield from _claim(idem, now)) is not None:
        return None
    yield from _fence(fence, now)
    gone = yield Stmt("DELETE FROM context_values WHERE context_id = %s AND key = %s", (fence.context_id, key))
    if gone.rowcount != 1:
        raise NotFound("no such key")
    if idem is not None:
        yield from _record(idem, {})
    return None


def list_values(context_id: int, prefix: str) -> Script[list[Value]]:
    # substr counts characters in both databases, as len() does; ordering is done here, by code point,
    # because PostgreSQL's ORDER BY follows the database's locale.
    rows = (yield Stmt("SELECT key, value, version FROM context_values WHERE context_id = %s "
                       "AND substr(key, 1, %s) = %s", (context_id, len(prefix), prefix))).rows
    return sorted((Value(key, json.loads(value), int(version)) for key, value, version in rows), key=lambda v: v.key)


def expire_idempotency(before: datetime) -> Script[int]:
    return (yield Stmt("DELETE FROM idempotency WHERE created < %s", (before,))).rowcount


# ---- the Store API on top of a driver -----------------------------------------------------------------

class SqlStore(Store):
    """Implements `Store` with the scripts above; a subclass supplies `_run` (and open/close/ping)."""

    async def _run(self, script: Callable[[], Script[T]], write: bool) -> T:
        """Run script() and return its result; StoreUnavailable on any database failure.

        `write=True`: in one transaction, committed before this returns. `write=False`: a read script of a
        single statement, run without BEGIN/COMMIT (saves two round trips to PostgreSQL per read)."""
        raise NotImplementedError

    async def schema_version(self) -> int:
        return await self._run(schema_version, write=False)

    async def create_context(self, primary: str, backup: str, owner: str, labels: dict[str, Any],
                             now: datetime, idem: Idem | None = None) -> Context:
        return await self._run(lambda: create_context(primary, backup, owner, labels, now, idem), write=True)

    async def get_context(self, context_id: int) -> Context | None:
        return await self._run(lambda: get_context(context_id), write=False)

    async def adopt(self, context_id: int, owner: str, now: datetime) -> Context | None:
        return await self._run(lambda: adopt(context_id, owner, now), write=True)

    async def delete_context(self, fence: Fence, now: datetime, idem: Idem | None = None) -> None:
        await self._run(lambda: delete_context(fence, now, idem), write=True)

    async def put_value(self, fence: Fence, key: str, value_json: str, now: datetime,
                        idem: Idem | None = None) -> Value:
        return await self._run(lambda: put_value(fence, key, value_json, now, idem), write=True)

    async def get_value(self, context_id: int, key: str) -> Value | None:
        return await self._run(lambda: get_value(context_id, key), write=False)

    async def delete_value(self, fence: Fence, key: str, now: datetime, idem: Idem | None = None) -> None:
        await self._run(lambda: delete_value(fence, key, now, idem), write=True)

    async def list_values(self, context_id: int, prefix: str = "") -> list[Value]:
        return await self._run(lambda: list_values(context_id, prefix), write=False)

    async def expire_idempotency(self, before: datetime) -> int:
        return await self._run(lambda: expire_idempotency(before), write=True)
