"""The metrics edge: GET /metrics on `metrics_listen` answers `vrrpd.metrics.render` of the live status.

aiohttp is imported only by this module, and this module only when metrics_listen is set: it costs about
15 MB of resident memory that a daemon without metrics never pays.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from daemonkit import log as logging
from daemonkit.net import HostPort
from daemonkit.promtext import CONTENT_TYPE
from vrrpd.metrics import render


class MetricsServer:
    """Serves GET /metrics (render of `status()` at each scrape) on `listen`; anything else is 404."""

    def __init__(self, listen: HostPort, status: Callable[[], dict]):
        self.host, self.port = listen.host, listen.port
        self.status = status
        self._runner: web.AppRunner | None = None
        self._log = logging.get("vrrpd.metrics")

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._log.info("metrics_listening", addresses=[f"{a[0]}:{a[1]}" for a in self.addresses])

    @property
    def addresses(self) -> list[tuple]:
        """The socket addresses actually bound (with the real port when 0 was asked for)."""
        return list(self._runner.addresses) if self._runner else []

    async def close(self) -> None:
        if self._runner:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            body = render(self.status())
        except Exception as exc:  # a scrape must never take the daemon down
            self._log.error("metrics_render_failed", error=f"{type(exc).__name__}: {exc}")
            return web.Response(status=500, text="status unavailable\n")
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
