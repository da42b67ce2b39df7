"""The context service behind the HTTP API: who serves (routing), adoption, and fenced reads and writes.

The node remembers, per context it serves, the fencing epoch it holds as owner. A request for a context it
has no epoch for loads the context from the store and adopts it when the store names another owner (SPEC 6
step 4); every write is conditional on the held epoch, and a refused one (another node adopted meanwhile)
forgets it, so the next request reloads. Any change of the host's addresses (a VIP arriving or leaving)
forgets every held epoch: whatever happened while the VIP was elsewhere, the next request starts afresh
from the store.

Errors are `ServiceError`s carrying the HTTP status, a short code and a detail; the HTTP layer only renders
them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TypeVar

import structlog

from csserver import routing
from csserver.config import Config
from csserver.haid import Haid, encode
from csserver.localaddrs import StaticAddresses
from csserver.metrics import Metrics
from csserver.store.base import (
    Context, Fence, Idem, IdempotencyKeyReused, NotFound, StaleEpoch, Store, StoreUnavailable, Value,
)

T = TypeVar("T")
Address = IPv4Address | IPv6Address
MAX_HELD = 100_000  # epochs remembered; the oldest is forgotten first (it is reloaded when needed)
HEALTH_TIMEOUT_S = 2.0

log = structlog.get_logger("csserver")


@dataclass
class ServiceError(Exception):
    status: int
    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ContextService:
    def __init__(self, config: Config, store: Store, local: StaticAddresses, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.me = config.node.alias
        self.store = store
        self.local = local
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._held: dict[Haid, int] = {}
        self._loading: dict[Haid, asyncio.Task] = {}
        self._generation = 0
        local.add_listener(self._addresses_changed)

    # ---- who serves, and with which epoch ---------------------------------------------------------

    def _addresses_changed(self, added: frozenset, removed: frozenset) -> None:
        self._held.clear()
        self._generation += 1

    def held_epoch(self, haid: Haid) -> int | None:
        return self._held.get(haid)

    def route(self, text: str) -> Haid:
        """SPEC 6 steps 1-3 for HAID `text`; ServiceError 400 or 421 when this node does not serve it."""
        decision = routing.route(text, self.me, self.config.cluster, self.local)
        if isinstance(decision, routing.Malformed):
            raise ServiceError(400, "malformed_haid", decision.detail)
        if isinstance(decision, routing.Misdirected):
            self.metrics.misdirected += 1
            raise ServiceError(421, "misdirected", decision.detail,
                               {"primary": decision.haid.primary, "vip": str(decision.vip) if decision.vip else None})
        return decision.haid

    async def _hold(self, haid: Haid) -> tuple[int, Context | None]:
        """The epoch this node holds for `haid` (adopting first if the store names another owner), and the
        context as just loaded (None when the epoch was already held)."""
        epoch = self._held.get(haid)
        if epoch is not None:
            return epoch, None
        task = self._loading.get(haid)
        if task is None:  # one load per context at a time: concurrent requests share it
            task = asyncio.ensure_future(self._load(haid, self._generation))
            self._loading[haid] = task
            task.add_done_callback(lambda done, h=haid: self._loaded(h, done))
        return await asyncio.shield(task)

    def _loaded(self, haid: Haid, task: asyncio.Task) -> None:
        self._loading.pop(haid, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every awaiter may have gone (client disconnects)

    async def _load(self, haid: Haid, generation: int) -> tuple[int, Context]:
        ctx = await self._call("get_context", self.store.get_context(haid.id))
        if ctx is None or (ctx.primary, ctx.backup) != (haid.primary, haid.backup):
            raise ServiceError(404, "not_found", f"no context {haid}")
        adopt = routing.ownership(self.me, ctx.owner)
        if adopt is not None:
            adopted = await self._call("adopt", self.store.adopt(haid.id, self.me, self.clock()))
            if adopted is None:
                raise ServiceError(404, "not_found", f"no context {haid}")
            self.metrics.adoptions += 1
            log.info("context_adopted", haid=str(haid), old_owner=adopt.previous_owner, epoch=adopted.epoch)
            ctx = adopted
        if generation == self._generation:  # not when the addresses changed while loading
            if len(self._held) >= MAX_HELD:
                self._held.pop(next(iter(self._held)))
            self._held[haid] = ctx.epoch
        return ctx.epoch, ctx

    def _forget(self, haid: Haid) -> None:
        self._held.pop(haid, None)

    async def _call(self, operation: str, awaitable: Awaitable[T]) -> T:
        """A store call, timed for /metrics, its unavailability turned into a 503."""
        started = time.perf_counter()
        failed = False
        try:
            return await awaitable
        except StoreUnavailable as exc:
            failed = True
            log.warning("store_unavailable", op=operation, error=str(exc))
            raise ServiceError(503, "store_unavailable", str(exc)) from None
        except IdempotencyKeyReused as exc:
            raise ServiceError(400, "idempotency_key_reused", str(exc)) from None
        finally:
            self.metrics.store_call(operation, time.perf_counter() - started, failed)

    async def _write(self, haid: Haid, operation: str, write: Callable[[Fence], Awaitable[T]]) -> T:
        """Run a fenced write with the held epoch; 409 (and the epoch forgotten) when it is stale."""
        epoch, _ = await self._hold(haid)
        try:
            return await self._call(operation, write(Fence(haid.id, self.me, epoch)))
        except StaleEpoch as exc:
            self._forget(haid)
            self.metrics.stale_epoch_refusals += 1
            log.warning("stale_epoch_refused", haid=str(haid), op=operation, held_epoch=exc.held_epoch,
                        epoch=exc.current_epoch, owner=exc.owner)
            raise ServiceError(409, "stale_epoch", f"this node held epoch {exc.held_epoch} but {exc.owner} "
                                                   f"adopted the context (epoch {exc.current_epoch}); not applied",
                               {"epoch": exc.current_epoch, "owner": exc.owner}) from None
        except NotFound as exc:
            self._forget(haid)
            raise ServiceError(404, "not_found", f"{exc}: {haid}") from None

    # ---- the operations of the HTTP API -----------------------------------------------------------

    async def create(self, labels: dict[str, Any], arrived_on: Address | None, idem: Idem | None) -> tuple[str, Context]:
        cluster = self.config.cluster
        primary = routing.creation_primary(self.me, cluster, arrived_on)
        backup = cluster.backup_of(primary)
        if backup is None or not cluster.known(backup):
            # The Linkis design names the configured partner; never a random or unknown node.
            raise ServiceError(409, "no_backup", f"[cluster] backup names no known backup for {primary}")
        ctx = await self._call("create_context",
                               self.store.create_context(primary, backup, self.me, labels, self.clock(), idem))
        haid = Haid(ctx.primary, ctx.backup, ctx.id)
        if ctx.owner == self.me:
            self._held.setdefault(haid, ctx.epoch)
        return encode(ctx.primary, ctx.backup, ctx.id), ctx

    async def get(self, text: str) -> tuple[str, Context]:
        haid = self.route(text)
        _, ctx = await self._hold(haid)
        if ctx is None:
            ctx = await self._call("get_context", self.store.get_context(haid.id))
            if ctx is not None and ctx.owner != self.me:  # adopted elsewhere since: step 4 again
                self._forget(haid)
                _, ctx = await self._hold(haid)
        if ctx is None or (ctx.primary, ctx.backup) != (haid.primary, haid.backup):
            self._forget(haid)
            raise ServiceError(404, "not_found", f"no context {haid}")
        return str(haid), ctx

    async def delete(self, text: str, idem: Idem | None) -> None:
        haid = self.route(text)
        try:
            await self._write(haid, "delete_context", lambda f: self.store.delete_context(f, self.clock(), idem))
        except ServiceError as exc:
            if exc.status != 404 or idem is None:
                raise
            # Deleted already, perhaps by this very request before a failover: the retry gets the first
            # answer. Epoch 0 is never held, so this can only replay, never delete.
            try:
                await self._call("delete_context",
                                 self.store.delete_context(Fence(haid.id, self.me, 0), self.clock(), idem))
            except (NotFound, StaleEpoch):
                raise exc from None
        self._forget(haid)

    async def put_value(self, text: str, key: str, value_json: str, idem: Idem | None) -> Value:
        haid = self.route(text)
        return await self._write(haid, "put_value",
                                 lambda f: self.store.put_value(f, key, value_json, self.clock(), idem))

    async def get_value(self, text: str, key: str) -> Value:
        haid = self.route(text)
        await self._hold(haid)
        value = await self._call("get_value", self.store.get_value(haid.id, key))
        if value is None:
            raise ServiceError(404, "not_found", f"no key {key!r} in {haid}")
        return value

    async def delete_value(self, text: str, key: str, idem: Idem | None) -> None:
        haid = self.route(text)
        await self._write(haid, "delete_value", lambda f: self.store.delete_value(f, key, self.clock(), idem))

    async def list_values(self, text: str, prefix: str) -> list[Value]:
        haid = self.route(text)
        await self._hold(haid)
        return await self._call("list_values", self.store.list_values(haid.id, prefix))

    async def healthy(self) -> str | None:
        """None when the store answers within HEALTH_TIMEOUT_S, else why not."""
        try:
            await asyncio.wait_for(self.store.ping(), HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            return f"the store did not answer within {HEALTH_TIMEOUT_S:g} s"
        except StoreUnavailable as exc:
            return str(exc)
        return None
