"""The context service behind the HTTP API: who serves (routing), adoption, and fenced reads and writes.

The node remembers, per context it serves, the fencing epoch it holds as owner. A request for a context it
has no epoch for loads the context from the store and adopts it when the store names another owner (SPEC 6
step 4): only while the route still says this node serves it (checked again just before adopting: the VIP
may have left during the awaits), only on a store shown to be shared with the primary when this node
adopts as its backup (`sharing.py`), and as a compare and swap on the owner and epoch it just read, so two
nodes never both adopt on one reading and a node never takes a context back from one that adopted it
meanwhile. Every write is conditional on the held epoch, and a refused one (another node adopted
meanwhile) forgets it, so the next request reloads. A read served with a held epoch reads, and never
adopts. Any change of the host's addresses (a VIP arriving or leaving) forgets every held epoch: whatever
happened while the VIP was elsewhere, the next request starts afresh from the store.

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
from csserver.sharing import Sharing
from csserver.store.base import (
    BadInput, Context, Fence, Idem, IdempotencyKeyReused, NotFound, StaleEpoch, Store, StoreUnavailable, Value,
)

T = TypeVar("T")
Address = IPv4Address | IPv6Address
MAX_HELD = 100_000  # epochs remembered; the oldest is forgotten first (it is reloaded when needed)
HEALTH_TIMEOUT_S = 2.0
MAX_LIST_LIMIT = 1000  # values per page of a listing (and the default)

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
        self.sharing = Sharing(self.me, config.cluster.partners(self.me), store.store_id)
        self.metrics.sharing = self.sharing.state
        self._held: dict[Haid, int] = {}
        self._vips = frozenset(config.cluster.aliases.values())
        self._loading: dict[Haid, asyncio.Task] = {}
        self._generation = 0
        local.add_listener(self._addresses_changed)

    # ---- who serves, and with which epoch ---------------------------------------------------------

    def _addresses_changed(self, added: frozenset, removed: frozenset) -> None:
        """A VIP came or went: forget every held epoch. Other addresses (DHCP, IPv6 temporary addresses,
        containers) change nothing about who serves."""
        if (added | removed) & self._vips:
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
            if self.me != haid.primary:  # not in this store: but is it the primary's store at all?
                self._refuse_unshared(haid.primary, f"answer for {haid}")
            raise ServiceError(404, "not_found", f"no context {haid}")
        if routing.ownership(self.me, ctx.owner) is not None:
            ctx = await self._adopt(haid, ctx)
        if generation == self._generation:  # not when the addresses changed while loading
            self._remember(haid, ctx.epoch)
        return ctx.epoch, ctx

    async def _adopt(self, haid: Haid, seen: Context) -> Context:
        """SPEC 6 step 4, as a compare and swap on `seen`, the context as just read."""
        if self.me != haid.primary:  # taking over as the primary's backup: only on a store shown shared
            self._refuse_unshared(haid.primary, f"adopt {haid}")
        self.route(str(haid))  # the VIP may have left while the store answered: then 421, no adoption
        adopted = await self._call("adopt", self.store.adopt(haid.id, self.me, seen.owner, seen.epoch, self.clock()))
        if adopted is None:
            raise ServiceError(404, "not_found", f"no context {haid}")
        if adopted.owner != self.me:  # another node adopted it since we read it: it serves, not we
            raise ServiceError(409, "stale_epoch", f"{adopted.owner} adopted the context meanwhile (epoch "
                                                   f"{adopted.epoch}); not applied",
                               {"epoch": adopted.epoch, "owner": adopted.owner})
        self.metrics.adoptions += 1
        log.info("context_adopted", haid=str(haid), old_owner=seen.owner, epoch=adopted.epoch)
        return adopted

    def _refuse_unshared(self, partner: str, action: str) -> None:
        reason = self.sharing.refusal(partner)
        if reason is not None:
            self.metrics.unshared_refusals += 1
            raise ServiceError(503, "store_not_shared", f"will not {action}: {reason}", {"partner": partner})

    def _remember(self, haid: Haid, epoch: int) -> None:
        if haid not in self._held and len(self._held) >= MAX_HELD:
            self._held.pop(next(iter(self._held)))
        self._held[haid] = epoch

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
        except BadInput as exc:
            raise ServiceError(400, "malformed_text", str(exc)) from None
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
            # The configured backup (Linkis picks one at random among the other instances; a pair has one).
            raise ServiceError(409, "no_backup", f"[cluster] backup names no known backup for {primary}")
        if primary != self.me:  # on the partner's VIP, as its backup: only on a store shown shared
            self._refuse_unshared(primary, f"create a context of {primary}")
        generation = self._generation
        ctx = await self._call("create_context",
                               self.store.create_context(primary, backup, self.me, labels, self.clock(), idem))
        haid = Haid(ctx.primary, ctx.backup, ctx.id)
        if ctx.owner == self.me and generation == self._generation:
            self._remember(haid, ctx.epoch)
        return encode(ctx.primary, ctx.backup, ctx.id), ctx

    async def get(self, text: str) -> tuple[str, Context]:
        haid = self.route(text)
        _, ctx = await self._hold(haid)
        if ctx is None:  # the epoch was held: read, never adopt (the next write finds out if it is stale)
            ctx = await self._call("get_context", self.store.get_context(haid.id))
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

    async def list_values(self, text: str, prefix: str, after: str | None = None,
                          limit: int = MAX_LIST_LIMIT) -> list[Value]:
        haid = self.route(text)
        await self._hold(haid)
        return await self._call("list_values", self.store.list_values(haid.id, prefix, after, limit))

    # ---- the store's members --------------------------------------------------------------------------

    async def beat(self, instance: str) -> None:
        """This node's heartbeat in the store, and what it shows about the partners."""
        nodes = await self._call("heartbeat", self.store.heartbeat(self.me, instance, self.clock()))
        self.sharing.store_id = self.store.store_id
        self.sharing.saw_nodes(nodes)

    async def healthy(self) -> str | None:
        """None when the store answers within HEALTH_TIMEOUT_S and no partner has shown it is not shared,
        else why not."""
        try:
            await asyncio.wait_for(self.store.ping(), HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            return f"the store did not answer within {HEALTH_TIMEOUT_S:g} s"
        except StoreUnavailable as exc:
            return str(exc)
        return self.sharing.problem()
