"""`csserver run`: open the store (migrating it), join it, watch local addresses, serve HTTP until
SIGTERM/SIGINT; meanwhile beat in the store, ask the partners which store they use, expire idempotency."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import uuid
from datetime import timedelta

import aiohttp
import structlog
from aiohttp import web

from csserver.app import create_app
from csserver.config import Config
from csserver.localaddrs import LocalAddresses, StaticAddresses
from csserver.metrics import Metrics
from csserver.service import ContextService, utcnow
from csserver.store import make_store
from csserver.store.base import StoreError
from daemonkit.systemd import Notifier

# A client retries a write for seconds (csserver.client: 10 s by default); ten minutes cover any sane
# deadline, and the count bound keeps the table small whatever the write rate.
IDEMPOTENCY_TTL = timedelta(minutes=10)
IDEMPOTENCY_MAX_RECORDS = 1_000_000
EXPIRY_BATCH = 1000  # rows per DELETE: a few milliseconds, so writes and /healthz never wait long behind it
EXPIRY_MAX_BATCHES = 50  # per pass: 10,000 rows/s at most, above any write rate this node can take
EXPIRY_INTERVAL_S = 5.0
HEARTBEAT_S = 2.0  # this node's row in the store's `nodes`, and a look at who else is there
PARTNER_ASK_S = 2.0  # how often each partner is asked which store it uses
PARTNER_TIMEOUT_S = 1.0
SHUTDOWN_GRACE_S = 5.0  # requests in flight get this long to finish at SIGTERM
# aiohttp 3.9 takes the grace on the runner; Debian 12's 3.8, which the package runs on, on the site (there a
# runner passes unknown keywords to every connection's handler, which then fails).
_GRACE_ON_RUNNER = "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters
# A key is up to 1024 characters, percent-encoded up to 12 bytes each in a URL, and a listing names two
# (prefix, after): aiohttp's default request line of 8 KiB would refuse keys csserver accepts.
MAX_REQUEST_LINE = 32 * 1024

log = structlog.get_logger("csserver")


async def serve(config: Config, token: str | None = None, local: StaticAddresses | None = None,
                stop: asyncio.Event | None = None, ask_partners: bool = True) -> int:
    """Run until `stop` is set (by SIGTERM/SIGINT when not given); the process exit status.

    `ask_partners=False` keeps the node from asking its partners at their VIPs over HTTP (for a test in
    the machine's own network namespace, where those VIPs are not lab addresses)."""
    stop = stop or _stop_on_signals()
    store = make_store(config.store)
    try:
        await store.open()
    except StoreError as exc:
        log.error("store_open_failed", store=config.store.kind, error=str(exc))
        await store.close()
        return 1
    local = local or LocalAddresses()
    runner = None
    notifier = Notifier()
    try:
        await local.start()
        service = ContextService(config, store, local, Metrics())
        instance = uuid.uuid4().hex
        _say_how_the_store_is_shared(config, store)
        try:
            await service.beat(instance)  # joined before the first request: a partner can see this node
        except Exception as exc:  # ServiceError (store unavailable): the heartbeat task tries again
            log.warning("store_heartbeat_failed", error=str(exc))
        grace = {"shutdown_timeout": SHUTDOWN_GRACE_S}
        runner = web.AppRunner(create_app(service, token), access_log=None, handle_signals=False,
                               logger=http_logger(), max_line_size=MAX_REQUEST_LINE,
                               **(grace if _GRACE_ON_RUNNER else {}))
        await runner.setup()
        site = web.TCPSite(runner, config.node.listen_host, config.node.listen_port, reuse_address=True,
                           **({} if _GRACE_ON_RUNNER else grace))
        await site.start()
        log.info("csserver_started", alias=config.node.alias, listen=f"{config.node.listen_host}:{config.node.listen_port}",
                 store=config.store.kind, standalone=config.standalone, auth=bool(token),
                 vip=str(config.cluster.vip(config.node.alias) or ""))
        notifier.ready(f"serving {config.node.alias}")
        background = [asyncio.create_task(_expire_idempotency(service)),
                      asyncio.create_task(_heartbeat(service, instance))]
        if ask_partners:
            background.append(asyncio.create_task(_ask_partners(service, token)))
        await stop.wait()
        notifier.stopping()
        log.info("csserver_stopping")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        return 0
    except OSError as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    finally:
        if runner is not None:
            await runner.cleanup()
        await local.stop()
        await store.close()
        notifier.close()


class _ToStructlog(logging.Handler):
    """aiohttp's own reports, mostly requests it could not parse (answered 400 by aiohttp itself): one
    structlog line each instead of a multi-line traceback on stderr, so garbage cannot flood the journal."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        log.warning("http_protocol_error", message=record.getMessage(),
                    error=" ".join(str(error).split()) if error else None)


def http_logger() -> logging.Logger:
    logger = logging.getLogger("csserver.http")
    if not logger.handlers:
        logger.addHandler(_ToStructlog(logging.INFO))  # aiohttp logs non-HTTP noise at debug: dropped
        logger.propagate = False
    return logger


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _say_how_the_store_is_shared(config: Config, store) -> None:
    partners = sorted(config.cluster.partners(config.node.alias))
    if config.store.kind == "sqlite" and partners:
        # Deliberate on one host (the demo, or nodes in containers of one machine): say so, once.
        log.warning("store_single_host", path=config.store.sqlite_path, partners=partners,
                    detail="a SQLite file is shared only by nodes on this host, which must open this very file; "
                           "nodes on two hosts need one PostgreSQL")
    log.info("store_identity", store_id=store.store_id, partners=partners,
             **getattr(store, "replication", {}))


async def _heartbeat(service: ContextService, instance: str) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await service.beat(instance)
        except Exception as exc:  # the store is away: try again next time
            log.warning("store_heartbeat_failed", error=str(exc))


async def _ask_partners(service: ContextService, token: str | None) -> None:
    """Ask each partner, at its VIP while that VIP is not here, which store it uses."""
    cluster, port = service.config.cluster, service.config.node.listen_port
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=PARTNER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        while True:
            for partner in service.sharing.partners:
                vip = cluster.vip(partner)
                if vip is None or vip in service.local:  # standalone, or its VIP is here: it is down
                    continue
                host = f"[{vip}]" if vip.version == 6 else str(vip)
                try:
                    async with session.get(f"http://{host}:{port}/v1/store") as response:
                        answer = await response.json() if response.status == 200 else {}
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    continue  # not up, or not answering: nothing learnt
                if answer.get("alias") == partner and isinstance(answer.get("store_id"), str):
                    service.sharing.heard(partner, answer["store_id"])
            await asyncio.sleep(PARTNER_ASK_S)


async def _expire_idempotency(service: ContextService) -> None:
    while True:
        try:
            await expire_idempotency_once(service)
        except StoreError as exc:
            log.warning("idempotency_expiry_failed", error=str(exc))
        await asyncio.sleep(EXPIRY_INTERVAL_S)


async def expire_idempotency_once(service: ContextService) -> int:
    """One pass, every EXPIRY_INTERVAL_S: forget records older than the TTL, then those beyond the count
    bound, each in small batches (one short transaction each), and count what is left for /metrics."""
    store = service.store
    forgotten = await _in_batches(lambda: store.expire_idempotency(utcnow() - IDEMPOTENCY_TTL, EXPIRY_BATCH))
    forgotten += await _in_batches(lambda: store.trim_idempotency(IDEMPOTENCY_MAX_RECORDS, EXPIRY_BATCH))
    service.metrics.idempotency_records = await store.idempotency_records()
    if forgotten:
        log.debug("idempotency_expired", records=forgotten, left=service.metrics.idempotency_records)
    return forgotten


async def _in_batches(batch) -> int:
    total = 0
    for _ in range(EXPIRY_MAX_BATCHES):
        done = await batch()
        total += done
        if done < EXPIRY_BATCH:
            break
        await asyncio.sleep(0)  # let the requests waiting meanwhile go first
    return total
