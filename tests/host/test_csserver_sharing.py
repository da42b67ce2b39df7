"""A store that is really shared (SPEC 6, issue 12): nodes show each other they use one store, in the store
or over HTTP; a node on a store not shown shared never acts as its partner's backup, and one shown not
shared fails /healthz with the reason. Also `csserver check`'s warning for SQLite under a two-node cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest
import requests
from structlog.testing import capture_logs

from csserver import cli
from csserver.config import load, parse
from csserver.localaddrs import StaticAddresses
from csserver.server import serve
from csserver.service import ContextService, ServiceError
from csserver.store.sqlite import SqliteStore
from labkit.csserver_node import csserver_toml
from tests.support import run

VIP_A, VIP_B = "192.0.2.100", "192.0.2.101"
BACKUP = {"cs-a": "cs-b", "cs-b": "cs-a"}


def config_text(alias: str, db, vips=(VIP_A, VIP_B), listen: str = "127.0.0.1:9100") -> str:
    return csserver_toml(alias, {"cs-a": vips[0], "cs-b": vips[1]}, BACKUP, f"sqlite://{db}", listen)


def config_on(path: Path, alias: str, vips):
    return parse(config_text(alias, path)), StaticAddresses(vips)


async def started(path: Path, alias: str, vips) -> ContextService:
    config, local = config_on(path, alias, vips)
    store = SqliteStore(str(path))
    await store.open()
    service = ContextService(config, store, local)
    await service.beat(f"test-{alias}")
    return service


def test_on_a_store_of_its_own_a_node_serves_its_contexts_but_never_acts_as_backup(tmp_path):
    """The shipped two-host samples did this: each node on its own host-local SQLite file. B, holding VIP-A
    while A is down, used to answer 404 for A's contexts and to create cs-a contexts with ids A had issued."""
    async def body():
        a = await started(tmp_path / "a.db", "cs-a", [VIP_A])
        a_haid, _ = await a.create({}, ip_address(VIP_A), None)
        with capture_logs() as logs:
            b = await started(tmp_path / "b.db", "cs-b", [VIP_A, VIP_B])  # A is down; B holds both VIPs
        assert [e["partner"] for e in logs if e["event"] == "store_sharing_unproven"] == ["cs-a"]
        own, _ = await b.create({}, ip_address(VIP_B), None)
        assert (await b.put_value(own, "k", "1", None)).version == 1  # its own contexts: served
        for attempt in (lambda: b.get(a_haid), lambda: b.put_value(a_haid, "k", "1", None),
                        lambda: b.create({}, ip_address(VIP_A), None)):
            with pytest.raises(ServiceError) as refused:
                await attempt()
            assert (refused.value.status, refused.value.code) == (503, "store_not_shared")
            assert "cs-a has never been seen in this store" in refused.value.detail
        assert await b.healthy() is None  # unproven is no failure: B still serves its own contexts
        # A comes back and, asked over HTTP, names its store: shown not shared. /healthz says why, once.
        with capture_logs() as logs:
            for _ in range(3):
                b.sharing.heard("cs-a", a.store.store_id)
        assert [e["event"] for e in logs] == ["store_not_shared"]
        problem = await b.healthy()
        assert a.store.store_id in problem and b.store.store_id in problem and "PostgreSQL" in problem
        assert b.metrics.unshared_refusals == 3
        for service in (a, b):
            await service.store.close()

    run(body())


def test_on_one_shared_file_the_partner_is_seen_in_the_store(tmp_path):
    async def body():
        a = await started(tmp_path / "one.db", "cs-a", [VIP_A])
        haid, _ = await a.create({}, ip_address(VIP_A), None)
        with capture_logs() as logs:
            b = await started(tmp_path / "one.db", "cs-b", [VIP_A, VIP_B])
        assert [(e["event"], e.get("how")) for e in logs if e["event"].startswith("store_")] == [
            ("store_shared", "seen in the store")]
        ctx = (await b.get(haid))[1]
        assert (ctx.owner, ctx.epoch) == ("cs-b", 2)  # adopted: the store is shared
        assert b.sharing.state() == {"cs-a": 1}
        for service in (a, b):
            await service.store.close()

    run(body())


# ---- two real csservers that ask each other over HTTP ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def two_live_nodes(tmp_path: Path, db_a: Path, db_b: Path) -> Iterator[dict[str, str]]:
    """cs-a on 127.0.0.1 and cs-b on 127.0.0.2, one port, each "holding" its own VIP (its loopback address),
    asking the other there which store it uses; alias -> base URL."""
    port = free_port()
    stops, threads, results, urls = [], [], [], {}
    for alias, vip, db in (("cs-a", "127.0.0.1", db_a), ("cs-b", "127.0.0.2", db_b)):
        path = tmp_path / f"{alias}.toml"
        path.write_text(config_text(alias, db, ("127.0.0.1", "127.0.0.2"), f"{vip}:{port}"))
        config = load(str(path))
        loop_box: list = []
        stop = asyncio.Event()

        async def main(config=config, vip=vip, loop_box=loop_box, stop=stop):
            loop_box.append(asyncio.get_running_loop())
            return await serve(config, None, StaticAddresses([vip]), stop)

        thread = threading.Thread(target=lambda m=main: results.append(asyncio.run(m())), daemon=True)
        thread.start()
        threads.append(thread)
        stops.append((loop_box, stop))
        urls[alias] = f"http://{vip}:{port}"
    try:
        yield urls
    finally:
        deadline = time.monotonic() + 10
        while any(not box for box, _ in stops) and time.monotonic() < deadline:
            time.sleep(0.01)
        for box, stop in stops:
            box[0].call_soon_threadsafe(stop.set)
        for thread in threads:
            thread.join(15)
        assert results == [0, 0]


def health_of(urls: dict[str, str]) -> dict[str, tuple[int, str]]:
    found = {}
    for alias, url in urls.items():
        try:
            answer = requests.get(f"{url}/healthz", timeout=1)
        except requests.ConnectionError:
            found[alias] = (0, "")
            continue
        found[alias] = (answer.status_code, answer.json().get("error", ""))
    return found


def poll(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def test_two_hosts_on_their_own_sqlite_files_find_out_and_fail_their_health_checks(tmp_path):
    with two_live_nodes(tmp_path, tmp_path / "a.db", tmp_path / "b.db") as urls:
        refused = {"cs-a": (503, "store_not_shared"), "cs-b": (503, "store_not_shared")}
        poll(lambda: health_of(urls) == refused, 10)
        detail = requests.get(f"{urls['cs-a']}/healthz", timeout=1).json()["detail"]
        stores = {alias: requests.get(f"{url}/v1/store", timeout=1).json()["store_id"] for alias, url in urls.items()}
        assert stores["cs-a"] != stores["cs-b"] and all(s in detail for s in stores.values())
        metrics = requests.get(f"{urls['cs-b']}/metrics", timeout=1).text
        assert 'csserver_store_shared{partner="cs-a"} -1' in metrics


def test_two_nodes_on_one_file_show_each_other_they_share_it(tmp_path):
    db = tmp_path / "one.db"
    with two_live_nodes(tmp_path, db, db) as urls:
        poll(lambda: health_of(urls) == {"cs-a": (200, ""), "cs-b": (200, "")}, 10)
        poll(lambda: all('csserver_store_shared{partner="cs-%s"} 1' % other in requests.get(f"{url}/metrics", timeout=1).text
                         for url, other in ((urls["cs-a"], "b"), (urls["cs-b"], "a"))), 10)


# ---- csserver check ------------------------------------------------------------------------------------

def check(path: Path, capsys) -> tuple[int, str]:
    code = cli.main(["check", "-c", str(path)])
    return code, capsys.readouterr().err


def test_check_warns_when_a_two_node_cluster_sits_on_a_host_local_sqlite_file(tmp_path, capsys):
    path = tmp_path / "cs.toml"
    path.write_text(config_text("cs-a", "/var/lib/csserver/contexts.db"))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("url"))
    code, err = check(path, capsys)
    assert code == 0
    assert err.startswith(f"{path}:{line}: store.url: warning: ") and "cs-b" in err and "PostgreSQL" in err
    path.write_text(path.read_text().replace('url = "sqlite:///var/lib/csserver/contexts.db"',
                                             'url = "postgresql://csserver@db.example/csserver"'))
    assert check(path, capsys) == (0, "")


def test_a_shared_store_is_said_once_however_it_came_to_be_known(tmp_path):
    async def body():
        a = await started(tmp_path / "one.db", "cs-a", [VIP_A])
        with capture_logs() as logs:
            a.sharing.heard("cs-b", a.store.store_id)  # asked over HTTP first
            b = await started(tmp_path / "one.db", "cs-b", [VIP_B])
            await a.beat("test-cs-a")  # then seen in the store as well
        assert [(e["event"], e.get("how")) for e in logs if e["event"] == "store_shared" and e["partner"] == "cs-b"] \
            == [("store_shared", "asked over HTTP")]
        for service in (a, b):
            await service.store.close()

    run(body())
