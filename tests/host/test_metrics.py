"""The Prometheus endpoint: render() gives valid text format 0.0.4 with the status's states, priorities and
counters, parsed back here line by line; the server answers GET /metrics on a loopback port and 404 elsewhere."""

from __future__ import annotations

import asyncio
import re
import socket

import aiohttp
import pytest

from vrrpd.io.metrics_http import CONTENT_TYPE, COUNTER_HELP, STATES, MetricsServer, parse_listen, render
from vrrpd.core.router import STAT_NAMES, Stats


def sample_status() -> dict:
    stats_a = Stats(master_transitions=1, adverts_tx=12, checksum_errors=3).as_dict()
    stats_b = Stats(adverts_rx=40, priority_zero_rx=1, ttl_errors=2).as_dict()
    return {
        "router_id": "node-a", "pid": 4242, "version": "0.1.0",
        "instances": [
            {"name": "VI_A", "interface": "eth0", "vrid": 51, "family": "ipv4", "version": 3, "state": "MASTER",
             "priority": 150, "effective_priority": 90, "master_address": "192.0.2.1", "advert_interval": 1.0,
             "master_adver_interval": 1.0, "virtual_ipaddress": ["192.0.2.100/24"],
             "since": "2026-11-22T10:00:00.000Z", "stats": stats_a},
            {"name": "VI_B6", "interface": "eth1", "vrid": 52, "family": "ipv6", "version": 3, "state": "BACKUP",
             "priority": 100, "effective_priority": 100, "master_address": "fe80::1", "advert_interval": 0.5,
             "master_adver_interval": 0.25, "virtual_ipaddress": ["2001:db8::100/64"],
             "since": "2026-11-22T10:00:01.000Z", "stats": stats_b},
        ],
        "stats": Stats(vrid_errors=7, version_errors=2).as_dict(),
        "notify": {"completed": 5, "failed": 2},
    }


# ---- a strict little parser for text format 0.0.4 -------------------------------------------------------

SAMPLE_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text: str) -> dict[str, str]:
    labels, i = {}, 0
    while i < len(text):
        name = LABEL_NAME.match(text, i)
        assert name and text.startswith('="', name.end()), text
        i, value = name.end() + 2, []
        while text[i] != '"':
            if text[i] == "\\":
                value.append(ESCAPES[text[i + 1]])
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        assert name.group() not in labels
        labels[name.group()] = "".join(value)
        i += 1
        if i < len(text):
            assert text[i] == ",", text
            i += 1
    return labels


def parse(text: str) -> tuple[dict[str, dict], list[tuple[str, dict, float]]]:
    """(families: name -> {"help", "type"}, samples: (name, labels, value)); asserts the format's rules."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    samples, current = [], None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, help_ = line[len("# HELP "):].split(" ", 1)
            assert name not in families, f"{name} declared twice"
            families[name], current = {"help": help_.replace("\\n", "\n").replace("\\\\", "\\")}, name
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split(" ")
            assert name == current and "type" not in families[name] and kind in ("gauge", "counter"), line
            families[name]["type"] = kind
        else:
            match = SAMPLE_LINE.fullmatch(line)
            assert match, line
            assert match[1] == current and "type" in families[current], f"{line} is outside its family"
            samples.append((match[1], parse_labels(match[2] or ""), float(match[3])))
    for name, family in families.items():
        assert family.get("type") and family["help"], name
        assert (family["type"] == "counter") == name.endswith("_total"), name
    return families, samples


def value(samples, name: str, **labels) -> float:
    found = [v for n, ls, v in samples if n == name and all(ls.get(k) == str(w) for k, w in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# ---- render ---------------------------------------------------------------------------------------------

def test_render_carries_states_priorities_and_every_counter():
    status = sample_status()
    families, samples = parse(render(status))
    a = {"instance": "VI_A", "interface": "eth0", "vrid": "51", "family": "ipv4"}
    b = {"instance": "VI_B6", "interface": "eth1", "vrid": "52", "family": "ipv6"}
    assert value(samples, "vrrpd_info", version="0.1.0", router_id="node-a") == 1
    for labels, current in ((a, "MASTER"), (b, "BACKUP")):
        states = {ls["state"]: v for n, ls, v in samples if n == "vrrpd_instance_state" and ls.items() > labels.items()}
        assert states == {s: float(s == current) for s in STATES}
    assert value(samples, "vrrpd_instance_priority", **a) == 150
    assert value(samples, "vrrpd_instance_effective_priority", **a) == 90
    assert value(samples, "vrrpd_instance_master_adver_interval_seconds", **b) == 0.25
    assert value(samples, "vrrpd_instance_advert_interval_seconds", **b) == 0.5
    for inst, labels in zip(status["instances"], (a, b)):
        for name, count in inst["stats"].items():
            assert families[f"vrrpd_{name}_total"]["type"] == "counter"
            assert value(samples, f"vrrpd_{name}_total", **labels) == count
    for name, count in status["stats"].items():
        assert [(ls, v) for n, ls, v in samples if n == f"vrrpd_router_{name}_total"] == [({}, count)]
    assert value(samples, "vrrpd_checksum_errors_total", **a) == 3
    assert value(samples, "vrrpd_router_vrid_errors_total") == 7
    assert value(samples, "vrrpd_notify_failed_total") == 2
    assert value(samples, "vrrpd_notify_completed_total") == 5


def test_every_daemon_counter_has_its_own_help():
    assert set(COUNTER_HELP) == set(STAT_NAMES)
    families, _ = parse(render(sample_status()))
    assert families["vrrpd_adverts_rx_total"]["help"] == COUNTER_HELP["adverts_rx"]


def test_label_values_are_escaped():
    status = sample_status()
    odd = 'a"b\\c\nd'
    status["router_id"] = odd
    status["instances"][0]["name"] = odd
    families, samples = parse(render(status))
    assert value(samples, "vrrpd_info", router_id=odd) == 1
    assert value(samples, "vrrpd_instance_state", instance=odd, state="MASTER") == 1


def test_no_instances_and_odd_values():
    status = {"router_id": "r", "version": "0.1.0", "instances": [], "stats": {"ttl_errors": 1, "new_thing": 2}}
    families, samples = parse(render(status))
    assert value(samples, "vrrpd_router_ttl_errors_total") == 1
    assert value(samples, "vrrpd_router_new_thing_total") == 2  # a counter this module does not know yet
    assert not [s for s in samples if s[0].startswith("vrrpd_instance_")]
    status = sample_status()
    status["instances"][0].update(state="SOMETHING", effective_priority=None, master_adver_interval=float("nan"))
    families, samples = parse(render(status))
    assert value(samples, "vrrpd_instance_state", instance="VI_A", state="SOMETHING") == 1
    assert sum(v for n, ls, v in samples if n == "vrrpd_instance_state" and ls["instance"] == "VI_A") == 1
    assert not [s for s in samples if s[0] == "vrrpd_instance_effective_priority" and s[1]["instance"] == "VI_A"]
    assert value(samples, "vrrpd_instance_master_adver_interval_seconds", instance="VI_A") != 0  # NaN


# ---- listen addresses ----------------------------------------------------------------------------------

def test_parse_listen():
    assert parse_listen("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_listen("[::1]:9101") == ("::1", 9101)
    assert parse_listen("[2001:db8::1]:0") == ("2001:db8::1", 0)
    assert parse_listen("localhost:9101") == ("localhost", 9101)
    for bad in ("9101", ":9101", "::1:9101", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:x", "[::1]"):
        with pytest.raises(ValueError):
            parse_listen(bad)


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
        server = MetricsServer("127.0.0.1:0", current)
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
        server = MetricsServer("[::1]:0", sample_status)
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
        first = MetricsServer("127.0.0.1:0", sample_status)
        await first.start()
        try:
            second = MetricsServer(f"127.0.0.1:{first.addresses[0][1]}", sample_status)
            with pytest.raises(OSError):
                await second.start()
            await second.close()  # harmless after a failed start
        finally:
            await first.close()

    run(scenario())
