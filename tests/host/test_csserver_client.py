"""The client and `csserver ctx`: through the primary's "VIP", following 421s, riding out a failover with
idempotent retries, and giving up at its deadline.

Loopback stands in for the VIPs: VIP-A is 127.0.0.1 and VIP-B 127.0.0.2, on one port. "Moving VIP-A to B"
means closing A's listener on 127.0.0.1 and opening one of B's there, as a real failover looks to a client:
refused connections for a moment, then another node answering at the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from csserver.app import create_app
from csserver.client import Client, CsError, Unavailable
from csserver.config import parse
from csserver.localaddrs import StaticAddresses
from csserver.service import ContextService
from csserver.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
VIP_A, VIP_B = "127.0.0.1", "127.0.0.2"
CONFIG = """\
[node]
alias = "{alias}"
listen = "127.0.0.1:{port}"
log_format = "json"
[cluster]
aliases = {{ "cs-a" = "127.0.0.1", "cs-b" = "127.0.0.2" }}
backup  = {{ "cs-a" = "cs-b", "cs-b" = "cs-a" }}
[store]
url = "sqlite:{db}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One csserver in this process: its service, and listeners that can be opened and closed per address."""

    def __init__(self, alias: str, store, port: int, vips):
        self.local = StaticAddresses(vips)
        self.service = ContextService(parse(CONFIG.format(alias=alias, port=port, db="unused")), store, self.local)
        self.app = create_app(self.service)
        self.port = port
        self.runner = None
        self.sites: dict[str, web.TCPSite] = {}

    async def listen(self, address: str) -> None:
        if self.runner is None:
            self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
            await self.runner.setup()
        site = web.TCPSite(self.runner, address, self.port, reuse_address=True)
        await site.start()
        self.sites[address] = site

    async def unlisten(self, address: str) -> None:
        await self.sites.pop(address).stop()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def pair(tmp_path, a_middleware=None):
    """Nodes A and B on one SQLite file, A listening on VIP-A and B on VIP-B."""
    port = free_port()
    stores = [SqliteStore(str(tmp_path / "cs.db")) for _ in range(2)]
    for store in stores:
        await store.open()
    a = Node("cs-a", stores[0], port, [VIP_A])
    b = Node("cs-b", stores[1], port, [VIP_B])
    for each in (a, b, a):  # both have joined the store, and each has seen the other there
        await each.service.beat(f"test-{each.service.me}")
    if a_middleware is not None:
        a.app.middlewares.append(a_middleware)
    await a.listen(VIP_A)
    await b.listen(VIP_B)
    try:
        yield a, b, port
    finally:
        for each in (a, b):
            await each.close()
        for store in stores:
            await store.close()


def run(coro):
    return asyncio.run(coro)


def test_the_client_api_round_trip(tmp_path):
    async def body():
        async with pair(tmp_path) as (a, b, port):
            async with Client(cluster={"cs-a": VIP_A, "cs-b": VIP_B}, port=port) as cs:
                created = await cs.create({"team": "etl"}, via="cs-a")
                haid = created["haid"]
                assert (created["primary"], created["epoch"]) == ("cs-a", 1)
                assert (await cs.create(via="cs-b"))["primary"] == "cs-b"
                assert (await cs.put(haid, "a/b", None))["version"] == 1
                assert (await cs.put(haid, "a/b", {"x": 1}))["version"] == 2
                assert (await cs.get_value(haid, "a/b"))["value"] == {"x": 1}
                assert [v["key"] for v in await cs.list_values(haid, prefix="a/")] == ["a/b"]
                assert (await cs.get(haid))["labels"] == {"team": "etl"}
                await cs.delete_value(haid, "a/b")
                with pytest.raises(CsError) as missing:
                    await cs.get_value(haid, "a/b")
                assert (missing.value.status, missing.value.code) == (404, "not_found")
                await cs.delete(haid)
                with pytest.raises(CsError):
                    await cs.get(haid)
                with pytest.raises(CsError) as malformed:
                    await cs.get("nonsense")
                assert malformed.value.status == 400

    run(body())


def test_a_421_is_followed_to_the_vip_it_names(tmp_path):
    async def body():
        async with pair(tmp_path) as (a, b, port):
            async with Client(base_url=f"http://{VIP_A}:{port}") as at_a:
                haid = (await at_a.create())["haid"]
            async with Client(base_url=f"http://{VIP_B}:{port}") as at_b:  # the wrong node
                started = time.monotonic()
                assert (await at_b.put(haid, "k", 1))["version"] == 1
                assert time.monotonic() - started < 0.5  # followed at once, no back-off
                assert b.service.metrics.misdirected == 1
                with pytest.raises(CsError) as stranger:  # a 421 naming no VIP is final
                    await at_b.get("4-4--cs-xcs-y1")
                assert stranger.value.status == 421

    run(body())


def test_a_writer_rides_out_failover_and_failback_without_losing_or_doubling_writes(tmp_path):
    async def body():
        async with pair(tmp_path) as (a, b, port):
            cs = Client(cluster={"cs-a": VIP_A, "cs-b": VIP_B}, port=port, deadline_s=5, attempt_timeout_s=0.5)
            haid = (await cs.create(via="cs-a"))["haid"]
            acked: list[int] = []
            stop = asyncio.Event()

            async def writer():
                n = 0
                while not stop.is_set():
                    n += 1
                    stored = await cs.put(haid, "counter", n)  # raises if the deadline passes: the test fails
                    assert stored["value"] == n
                    acked.append(stored["version"])

            task = asyncio.create_task(writer())
            await _until(lambda: len(acked) >= 20)
            # Failover: A goes silent, VRRP moves VIP-A to B.
            await a.unlisten(VIP_A)
            a.local.set([])
            b.local.set([VIP_A, VIP_B])
            await b.listen(VIP_A)
            mark = len(acked)
            await _until(lambda: len(acked) >= mark + 20)
            assert b.service.metrics.adoptions == 1
            # Failback: A returns and preempts.
            await b.unlisten(VIP_A)
            b.local.set([VIP_B])
            a.local.set([VIP_A])
            await a.listen(VIP_A)
            mark = len(acked)
            await _until(lambda: len(acked) >= mark + 20)
            stop.set()
            await task
            # Every acknowledged write applied exactly once, in order: versions 1..n with no gap or repeat.
            assert acked == list(range(1, len(acked) + 1))
            final = await cs.get_value(haid, "counter")
            assert final["version"] == acked[-1]
            assert (await cs.get(haid))["owner"] == "cs-a" and (await cs.get(haid))["epoch"] == 3
            await cs.close()

    run(body())


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_a_write_whose_answer_is_lost_is_retried_and_applied_once(tmp_path):
    dropped = []

    @web.middleware
    async def lose_first_answer(request, handler):
        response = await handler(request)  # the write is committed here
        if request.method == "PUT" and not dropped:
            dropped.append(request.headers["Idempotency-Key"])
            request.transport.close()  # ...and the answer never reaches the client
        return response

    async def body():
        async with pair(tmp_path, lose_first_answer) as (a, b, port):
            async with Client(cluster={"cs-a": VIP_A, "cs-b": VIP_B}, port=port) as cs:
                haid = (await cs.create(via="cs-a"))["haid"]
                stored = await cs.put(haid, "k", "once")
                assert dropped and stored["version"] == 1
                assert (await cs.get_value(haid, "k"))["version"] == 1

    run(body())


def test_the_client_gives_up_at_its_deadline():
    async def body():
        port = free_port()  # nobody listens there
        async with Client(base_url=f"http://127.0.0.1:{port}", deadline_s=0.3) as cs:
            started = time.monotonic()
            with pytest.raises(Unavailable) as gave_up:
                await cs.get("4-4--cs-acs-b1")
            assert 0.3 <= time.monotonic() - started < 0.6
            assert "ClientConnectorError" in gave_up.value.detail or "Connect" in gave_up.value.detail

    run(body())


def test_the_client_needs_to_know_where_to_go():
    with pytest.raises(ValueError):
        Client()

    async def body():
        async with Client(cluster={"cs-a": VIP_A}) as cs:
            with pytest.raises(ValueError):
                await cs.create()  # no base_url and no via
            with pytest.raises(CsError) as unknown:
                await cs.get("4-4--cs-bcs-a1")  # the map names no VIP for cs-b
            assert unknown.value.status == 421

    run(body())


# ---- the real processes: `csserver run` and `csserver ctx` --------------------------------------------

def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "csserver", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture
def server(tmp_path):
    """`csserver run` as its own process (standalone: its alias has no VIP), stopped by SIGTERM."""
    port = free_port()
    config = tmp_path / "cs.toml"
    config.write_text(CONFIG.format(alias="cs-solo", port=port, db=tmp_path / "cs.db")
                      .replace('"cs-a" = "cs-b", "cs-b" = "cs-a"', '"cs-solo" = "cs-b", "cs-b" = "cs-solo"'))
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "csserver", "run", "-c", str(config)], stderr=log, cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while b'"csserver_started"' not in (tmp_path / "server.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "csserver did not start"
            time.sleep(0.02)
        yield port, config, proc, tmp_path / "server.log"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_csserver_ctx_against_csserver_run(server):
    port, config, proc, log = server
    url = f"http://127.0.0.1:{port}"
    created = cli("ctx", "--url", url, "create", "--label", "team=etl")
    assert created.returncode == 0, created.stderr
    haid = __import__("json").loads(created.stdout)["haid"]
    assert haid.startswith("7-4--cs-solocs-b")
    put = cli("ctx", "--url", url, "put", haid, "job/step", '{"n": 1}')
    assert put.returncode == 0 and '"version": 1' in put.stdout
    assert cli("ctx", "--url", url, "put", haid, "note", "plain text", "--string").returncode == 0
    assert '"plain text"' in cli("ctx", "--url", url, "get", haid, "note").stdout
    assert '"job/step"' in cli("ctx", "--url", url, "ls", haid, "--prefix", "job/").stdout
    assert '"owner": "cs-solo"' in cli("ctx", "--url", url, "get", haid).stdout
    bad_json = cli("ctx", "--url", url, "put", haid, "k", "{nope")
    assert bad_json.returncode == 2 and "--string" in bad_json.stderr
    missing = cli("ctx", "--url", url, "get", haid, "nokey")
    assert missing.returncode == 1 and "404 not_found" in missing.stderr
    assert cli("ctx", "--url", url, "del", haid, "note").returncode == 0
    assert cli("ctx", "--url", url, "del", haid).returncode == 0
    assert cli("ctx", "--url", url, "get", haid).returncode == 1
    # SIGTERM: a clean stop, exit 0.
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 0
    assert '"csserver_stopping"' in log.read_text()


def test_csserver_ctx_with_a_cluster_file_and_no_answer(tmp_path):
    config = tmp_path / "cs.toml"
    config.write_text(CONFIG.format(alias="cs-a", port=free_port(), db=tmp_path / "cs.db"))
    gone = cli("ctx", "--cluster", str(config), "--deadline", "0.3", "get", "4-4--cs-acs-b1")
    assert gone.returncode == 3 and "no answer within 0.3 s" in gone.stderr
    assert cli("ctx", "--cluster", str(config), "create").returncode == 2  # which VIP? (--via)
