"""`csserver run`: open the store (migrating it), watch local addresses, serve HTTP until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from datetime import timedelta

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

IDEMPOTENCY_TTL = timedelta(hours=24)  # a client retries for seconds; a day covers any sane deadline
EXPIRY_INTERVAL_S = 3600.0
SHUTDOWN_GRACE_S = 5.0  # requests in flight get this long to finish at SIGTERM
# aiohttp 3.9 takes the grace on the runner; Debian 12's 3.8, which the package runs on, on the site (there a
# runner passes unknown keywords to every connection's handler, which then fails).
_GRACE_ON_RUNNER = "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters

log = structlog.get_logger("csserver")


async def serve(config: Config, token: str | None = None, local: StaticAddresses | None = None,
                stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (by SIGTERM/SIGINT when not given); the process exit status."""
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
        grace = {"shutdown_timeout": SHUTDOWN_GRACE_S}
        runner = web.AppRunner(create_app(service, token), access_log=None, handle_signals=False,
                               logger=http_logger(), **(grace if _GRACE_ON_RUNNER else {}))
        await runner.setup()
        site = web.TCPSite(runner, config.node.listen_host, config.node.listen_port, reuse_address=True,
                           **({} if _GRACE_ON_RUNNER else grace))
        await site.start()
        log.info("csserver_started", alias=config.node.alias, listen=f"{config.node.listen_host}:{config.node.listen_port}",
                 store=config.store.kind, standalone=config.standalone, auth=bool(token),
                 vip=str(config.cluster.vip(config.node.alias) or ""))
        notifier.ready(f"serving {config.node.alias}")
        expiry = asyncio.create_task(_expire_idempotency(service))
        await stop.wait()
        notifier.stopping()
        log.info("csserver_stopping")
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
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


async def _expire_idempotency(service: ContextService) -> None:
    while True:
        try:
            forgotten = await service.store.expire_idempotency(utcnow() - IDEMPOTENCY_TTL)
            if forgotten:
                log.info("idempotency_expired", records=forgotten)
        except StoreError as exc:
            log.warning("idempotency_expiry_failed", error=str(exc))
        await asyncio.sleep(EXPIRY_INTERVAL_S)
