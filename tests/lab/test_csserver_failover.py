"""Contexts follow their primary's VIP: the real vrrpd pair and the real csserver on each node, a client in a
third namespace (SPEC section 6, issue 3's lab scenarios).

The pair runs from the conf/ samples (tests/lab/pair.py) with advert_interval 0.1 s so failovers are quick;
the client is csserver's own Python client, run inside the client namespace.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest

from csserver.client import Client
from labkit.csserver_node import http
from labkit.netns import in_netns, wait_until
from labkit.pg import pg_schema
from labkit.pair import NODES, Pair, lab_pg_url
from labkit.vrrpd_node import REPO
from tests.support import require_pg

pytestmark = pytest.mark.lab

NAMES = ["node-a", "node-b", "client"]
DEADLINE = 10.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request):
    """The store both nodes share: one SQLite file, or a schema of its own on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield None  # Pair's default: one SQLite file in the lab's directory
        return
    with pg_schema(require_pg()) as url:
        yield lab_pg_url(url)


def start(lab, store_url=None) -> Pair:
    return Pair.start(lab(3, NAMES), advert_interval=0.1, preempt_delay=0.5, store_url=store_url)


def on_client(pair: Pair, work):
    """Run `await work(client)` with csserver's client inside the client namespace."""
    async def go():
        async with Client(cluster=pair.cluster, port=pair.port, deadline_s=DEADLINE) as cs:
            return await work(cs)

    return in_netns(pair.client, lambda: asyncio.run(go()))


def server_errors(pair: Pair) -> dict[str, list[str]]:
    """csserver_requests_total lines with a 5xx status, per node (read over HTTP from the client)."""
    found = {}
    for node in NODES:
        status, text = http(pair.client, "GET", f"http://{pair.host(node).ipv4}:{pair.port}/metrics")
        assert status == 200
        found[node] = [line for line in text.splitlines()
                       if line.startswith("csserver_requests_total") and re.search(r'status="5\d\d"', line)]
    return found


def test_contexts_are_adopted_by_the_backup_and_taken_back(lab):
    pair = start(lab)
    vip_a = pair.vip("a")

    async def create_and_write(cs):
        made = {alias: [(await cs.create(via=alias))["haid"] for _ in range(2)] for alias in ("cs-a", "cs-b")}
        for haids in made.values():
            for haid in haids:
                await cs.put(haid, "k", {"written": "before"})
        return made

    made = on_client(pair, create_and_write)
    a_ctx, b_ctx = made["cs-a"], made["cs-b"]

    pair.crash("a")
    wait_until(lambda: pair.holders(vip_a) == ["b"], 5, 0.01, message=f"VIP-A never moved\n{pair.describe()}")

    async def read_and_write_on_b(cs):
        seen = {}
        for haid in a_ctx + b_ctx:
            seen[haid] = (await cs.get(haid), (await cs.get_value(haid, "k"))["value"])
            await cs.put(haid, "k", {"written": "on b"})
        return seen

    seen = on_client(pair, read_and_write_on_b)
    for haid in a_ctx:  # adopted by B with a new epoch, holding what A last acknowledged
        ctx, value = seen[haid]
        assert (ctx["owner"], ctx["epoch"], value) == ("cs-b", 2, {"written": "before"}), haid
    for haid in b_ctx:  # B's own contexts are untouched by the failover
        ctx, value = seen[haid]
        assert (ctx["owner"], ctx["epoch"], value) == ("cs-b", 1, {"written": "before"}), haid

    pair.recover("a")
    pair.wait_steady(30)

    async def read_after_failback(cs):
        return {haid: (await cs.get(haid), await cs.get_value(haid, "k")) for haid in a_ctx}

    for haid, (ctx, value) in on_client(pair, read_after_failback).items():
        assert (ctx["owner"], ctx["epoch"]) == ("cs-a", 3), haid  # A took its context back
        assert (value["value"], value["version"]) == ({"written": "on b"}, 2), haid  # with B's write

    # Bad ids through the VIPs: 400 for a malformed HAID, 421 for a context of a node nobody knows.
    for url, expected in ((f"http://{vip_a}:{pair.port}/v1/contexts/8--cs_1_dev84835", 400),
                          (f"http://{vip_a}:{pair.port}/v1/contexts/8-8--cs_1_devcs_2_dev", 400),
                          (f"http://{vip_a}:{pair.port}/v1/contexts/4-4--cs-xcs-y7", 421),
                          (f"http://{pair.vip('b')}:{pair.port}/v1/contexts/4-4--cs-zcs-a7/values/k", 421)):
        status, answer = http(pair.client, "GET", url)
        assert status == expected and answer["detail"], (url, status, answer)
    assert server_errors(pair) == {"a": [], "b": []}


def test_a_writer_through_failover_and_failback_loses_nothing(lab, store_url):
    pair = start(lab, store_url)
    started = [e for e in pair.cs["a"].events() if e.get("event") == "csserver_started"]
    assert started[0]["store"] == ("postgresql" if store_url else "sqlite")
    out = pair.lab.tmpdir / "writer.jsonl"
    with open(out, "w") as sink:  # a file, never a pipe nobody reads
        writer = pair.client.popen(
            [sys.executable, "-m", "labkit.writer", "--cluster", json.dumps(pair.cluster), "--port",
             str(pair.port), "--contexts", "2", "--pace", "0.01", "--deadline", str(DEADLINE)],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)

    def acks() -> int:
        return out.read_text().count('"event": "ack"')

    wait_until(lambda: acks() >= 100, 20, 0.05, message=f"the writer never got going:\n{out.read_text()[-2000:]}")
    pair.crash("a")
    wait_until(lambda: pair.holders(pair.vip("a")) == ["b"], 5, 0.01, message="VIP-A never moved to node-b")
    before = acks()
    wait_until(lambda: acks() >= before + 200, 20, 0.05, message="writes stopped after the failover")
    pair.recover("a")
    pair.wait_steady(30)
    before = acks()
    wait_until(lambda: acks() >= before + 200, 20, 0.05, message="writes stopped after the failback")
    writer.terminate()
    assert writer.wait(DEADLINE + 30) == 0, out.read_text()[-3000:]

    records = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    summary = records[-1]
    assert summary["event"] == "summary"
    assert summary["lost"] == 0, summary["lost_keys"]  # every acknowledged write is readable at the end
    assert summary["errors"] == 0  # and no call gave up: each rode the failover out within its deadline
    assert summary["max_call"] < DEADLINE
    for haid, tally in summary["contexts"].items():
        # Nothing is stored that was not acknowledged: no write slipped in under a stale epoch and got lost
        # to its client, and no retried write was applied twice (keys are unique per write).
        assert tally["stored"] == tally["acked"] > 0, (haid, tally)
    adopted = {n: [e for e in pair.cs[n].events() if e.get("event") == "context_adopted"] for n in NODES}
    a_contexts = {r["haid"] for r in records if r["event"] == "created" and r["via"] == "cs-a"}
    assert {e["haid"] for e in adopted["b"]} == a_contexts  # B adopted exactly A's contexts
    assert {e["haid"] for e in adopted["a"]} == a_contexts  # and A took them back after the failback
    assert server_errors(pair) == {"a": [], "b": []}
    assert pair.cs["b"].proc.poll() is None and pair.vrrpd["b"].alive()
