"""The store interface csserver serves from: contexts, their key/values, fencing epochs, idempotent writes,
and who shares the store.

Every write takes the epoch the serving node holds and is applied only if the context still has that
epoch and owner (SPEC section 6); otherwise `StaleEpoch`, and nothing changed. `adopt` makes the caller
the owner with epoch + 1, and only if the context still has the owner and epoch the caller saw (compare
and swap). A write given an `Idem` (the client's Idempotency-Key and a fingerprint of the request) is
recorded with its outcome in the same transaction, so a retry with the same key (which carries the same
request, as the fingerprint proves) gets the first outcome and never applies twice. A method returns only
after its commit.

The store has an identity (`store_id`, made when it was first opened) and a list of the nodes that joined
it, each with a heartbeat (`heartbeat`): that is how two nodes show each other they share one store.
Context ids are random 63-bit integers (`random_id`), unique by the primary key: no two stores, restores
or split brains hand out one HAID twice.
"""

from __future__ import annotations

import abc
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from csserver.haid import MAX_ID


class StoreError(Exception):
    """Base of everything a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database did not answer, or failed: the request may be retried (HTTP 503)."""


class NotFound(StoreError):
    """No such context (or key)."""


class StaleEpoch(StoreError):
    """The context's epoch or owner is no longer the one the writer holds; nothing was written (HTTP 409)."""

    def __init__(self, held_epoch: int, current_epoch: int, owner: str):
        super().__init__(f"held epoch {held_epoch}, but the context is at epoch {current_epoch} owned by {owner}")
        self.held_epoch, self.current_epoch, self.owner = held_epoch, current_epoch, owner


class BadInput(StoreError):
    """Text the store cannot hold (a NUL, a lone surrogate): the request is malformed (HTTP 400)."""


class IdempotencyKeyReused(StoreError):
    """An Idempotency-Key already recorded for a different request."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer csserver than this one."""


@dataclass(frozen=True)
class Context:
    id: int
    primary: str
    backup: str
    owner: str
    epoch: int  # fencing epoch: 1 at creation, + 1 at each adoption
    labels: dict[str, Any]
    created: datetime  # UTC
    updated: datetime  # UTC


@dataclass(frozen=True)
class Value:
    key: str
    value_json: str  # the JSON text as stored (the node's canonical dump): served as it is
    version: int  # 1 at the first write of the key, + 1 at each write after

    @property
    def value(self) -> Any:
        return json.loads(self.value_json)


@dataclass(frozen=True)
class Node:
    """A node that has joined the store: its alias, the process that last beat, when it joined and last beat."""

    alias: str
    instance: str
    joined: datetime
    seen: datetime


@dataclass(frozen=True)
class Idem:
    """A client's Idempotency-Key and a digest of the request it came with."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class Fence:
    """What a write is conditional on: the context, the owner writing, and the epoch that owner holds."""

    context_id: int
    owner: str
    epoch: int


def random_id() -> int:
    """A context id: uniform in 1..2**63-1, so still a Linkis numeric id (digits, no leading zero)."""
    return secrets.randbelow(MAX_ID) + 1


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored (PostgreSQL's text holds no NUL; UTF-8 has no lone surrogates), or None."""
    if text.isascii():
        return "it contains a NUL character" if "\x00" in text else None
    if "\x00" in text:
        return "it contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it contains a lone surrogate (not Unicode text)"
    return None


def check_text(**fields: str | None) -> None:
    """BadInput naming the first field whose text cannot be stored."""
    for name, text in fields.items():
        if text is not None:
            problem = text_problem(text)
            if problem:
                raise BadInput(f"{name}: {problem}")


class Store(abc.ABC):
    """Async store API; `open()` applies pending schema migrations and learns the store's identity before
    anything else. `new_id` makes context ids (replaceable in tests)."""

    new_id = staticmethod(random_id)
    store_id: str | None = None  # known once open

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the database answers; StoreUnavailable otherwise."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def heartbeat(self, alias: str, instance: str, now: datetime) -> list[Node]:
        """Record that node `alias` (process `instance`) is alive; every node that has joined the store."""

    @abc.abstractmethod
    async def create_context(self, primary: str, backup: str, owner: str, labels: dict[str, Any],
                             now: datetime, idem: Idem | None = None) -> Context:
        """A new context with epoch 1 and a random id (another one when the first is taken)."""

    @abc.abstractmethod
    async def get_context(self, context_id: int) -> Context | None: ...

    @abc.abstractmethod
    async def adopt(self, context_id: int, owner: str, seen_owner: str, seen_epoch: int,
                    now: datetime) -> Context | None:
        """Make `owner` the owner with epoch + 1 if the context still has `seen_owner` and `seen_epoch`.

        Returns the context as it is afterwards: adopted, or unchanged when another node got there first
        (the caller compares the owner); None if there is no such context."""

    @abc.abstractmethod
    async def delete_context(self, fence: Fence, now: datetime, idem: Idem | None = None) -> None:
        """Delete the context and its values; NotFound, StaleEpoch."""

    @abc.abstractmethod
    async def put_value(self, fence: Fence, key: str, value_json: str, now: datetime,
                        idem: Idem | None = None) -> Value:
        """Set `key` to the JSON text `value_json` (stored as given); NotFound, StaleEpoch. A replay returns
        the recorded version with the value given, which the fingerprint proves is the one first sent."""

    @abc.abstractmethod
    async def get_value(self, context_id: int, key: str) -> Value | None: ...

    @abc.abstractmethod
    async def delete_value(self, fence: Fence, key: str, now: datetime, idem: Idem | None = None) -> None:
        """Delete `key`; NotFound (context or key), StaleEpoch."""

    @abc.abstractmethod
    async def list_values(self, context_id: int, prefix: str = "", after: str | None = None,
                          limit: int | None = None) -> list[Value]:
        """Up to `limit` values whose key starts with `prefix` and sorts after `after`, in code point order
        of their keys: a range of the primary key's index."""

    @abc.abstractmethod
    async def expire_idempotency(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` of the oldest idempotency records made before `before`; how many."""

    @abc.abstractmethod
    async def trim_idempotency(self, keep: int, limit: int) -> int:
        """Forget up to `limit` of the oldest idempotency records beyond the newest `keep`; how many."""

    @abc.abstractmethod
    async def idempotency_records(self) -> int:
        """How many idempotency records the store holds."""
