"""The metrics endpoint: GET /metrics on a loopback port answers the live status, 404 elsewhere."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from daemonkit.net import HostPort
from daemonkit.promtext import CONTENT_TYPE
from tests.promtext_parse import parse, sample_status, value
from vrrpd.io.metrics_http import MetricsServer
from vrrpd.metrics import render


# ---- the server ----------------------------------------------------------------------------------------

def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _scrape(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def test_server_serves_live_status_and_404_elsewhere():
    status = sample_status()
    calls = []

    def current() -> dict:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("status broke")
        return status

    async def scenario():
        server = MetricsServer(HostPort("127.0.0.1", 0), current)
        await server.start()
        try:
            [(host, port)] = server.addresses
            assert host == "127.0.0.1" and port > 0
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                code, ctype, body = await _scrape(session, base + "/metrics")
                assert (code, ctype) == (200, CONTENT_TYPE) and body == render(status)
                status["instances"][0]["state"] = "BACKUP"
                _, _, body = await _scrape(session, base + "/metrics")
                _, samples = parse(body)
                assert value(samples, "vrrpd_instance_state", instance="VI_A", state="BACKUP") == 1
                assert (await _scrape(session, base + "/metrics"))[0] == 500  # and the server lives on
                assert (await _scrape(session, base + "/metrics"))[0] == 200
                for path in ("/", "/metricsx", "/status"):
                    assert (await _scrape(session, base + path))[0] == 404
        finally:
            await server.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(scenario())


def test_server_on_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this host")

    async def scenario():
        server = MetricsServer(HostPort("::1", 0), sample_status)
        await server.start()
        try:
            port = server.addresses[0][1]
            async with aiohttp.ClientSession() as session:
                code, _, body = await _scrape(session, f"http://[::1]:{port}/metrics")
            assert code == 200 and body == render(sample_status())
        finally:
            await server.close()

    run(scenario())


def test_server_start_fails_loudly_on_a_taken_port():
    async def scenario():
        first = MetricsServer(HostPort("127.0.0.1", 0), sample_status)
        await first.start()
        try:
            second = MetricsServer(HostPort("127.0.0.1", first.addresses[0][1]), sample_status)
            with pytest.raises(OSError):
                await second.start()
            await second.close()  # harmless after a failed start
        finally:
            await first.close()

    run(scenario())
