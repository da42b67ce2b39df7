"""The store interface csserver serves from: contexts, their key/values, fencing epochs, idempotent writes.

Every write takes the epoch the serving node holds and is applied only if the context still has that
epoch and owner (SPEC section 6); otherwise `StaleEpoch`, and nothing changed. `adopt` makes the caller
the owner with epoch + 1 in one transaction. A write given an `Idem` (the client's Idempotency-Key and a
fingerprint of the request) is recorded with its result in the same transaction, so a retry with the same
key returns that first result and never applies twice. A method returns only after its commit.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
    value: Any  # any JSON value, as decoded
    version: int  # 1 at the first write of the key, + 1 at each write after


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


class Store(abc.ABC):
    """Async store API; `open()` applies pending schema migrations before anything else."""

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
    async def create_context(self, primary: str, backup: str, owner: str, labels: dict[str, Any],
                             now: datetime, idem: Idem | None = None) -> Context:
        """A new context with epoch 1 and a fresh id that no context ever had."""

    @abc.abstractmethod
    async def get_context(self, context_id: int) -> Context | None: ...

    @abc.abstractmethod
    async def adopt(self, context_id: int, owner: str, now: datetime) -> Context | None:
        """Make `owner` the owner with epoch + 1 (nothing changes if it already is); None if no such context."""

    @abc.abstractmethod
    async def delete_context(self, fence: Fence, now: datetime, idem: Idem | None = None) -> None:
        """Delete the context and its values; NotFound, StaleEpoch."""

    @abc.abstractmethod
    async def put_value(self, fence: Fence, key: str, value_json: str, now: datetime,
                        idem: Idem | None = None) -> Value:
        """Set `key` to the JSON text `value_json` (stored as given); NotFound, StaleEpoch."""

    @abc.abstractmethod
    async def get_value(self, context_id: int, key: str) -> Value | None: ...

    @abc.abstractmethod
    async def delete_value(self, fence: Fence, key: str, now: datetime, idem: Idem | None = None) -> None:
        """Delete `key`; NotFound (context or key), StaleEpoch."""

    @abc.abstractmethod
    async def list_values(self, context_id: int, prefix: str = "") -> list[Value]:
        """The values whose key starts with `prefix`, in code point order of their keys."""

    @abc.abstractmethod
    async def expire_idempotency(self, before: datetime) -> int:
        """Forget idempotency records made before `before`; how many were forgotten."""
