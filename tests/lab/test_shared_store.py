"""Two real csservers in two namespaces on one bridge, sharing one store, with VIP-A moved by hand.

One SQLite file on the shared filesystem is the shared store (both namespaces see the same files), which is
exactly the case the SPEC's "store" names. `ip addr` stands in for vrrpd: it shows what csserver does when
the VIP moves (adoption with a new epoch), moves back (the primary adopts back) and is briefly on both nodes
(the stale node's write is refused with 409 and never applied).
"""

from __future__ import annotations

import json
import sys

import pytest

from labkit.csserver_node import PORT, REPO, CsserverNode, csserver_toml, http
from labkit.netns import wait_until

pytestmark = pytest.mark.lab

VIP_A, VIP_B = "192.0.2.100", "192.0.2.101"
ALIASES = {"cs-a": VIP_A, "cs-b": VIP_B}
BACKUP = {"cs-a": "cs-b", "cs-b": "cs-a"}


def ctx_cli(client, config, *args) -> tuple[int, dict | None, str]:
    """`csserver ctx --cluster CONFIG ARGS...` run in the client's namespace."""
    proc = client.run([sys.executable, "-m", "csserver", "ctx", "--cluster", str(config), "--deadline", "5", *args],
                      check=False, timeout=30, cwd=str(REPO))
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


def move_vip(address: str, frm, to) -> None:
    if frm is not None:
        frm.run(["ip", "addr", "del", f"{address}/24", "dev", "eth0"])
    if to is not None:
        to.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])


def test_adoption_and_fencing_with_vip_moved_by_hand(lab):
    lab = lab(3, ["a", "b", "c"], prefix="vcs")
    a, b, client = lab.host("a"), lab.host("b"), lab.host("c")
    store = f"sqlite://{lab.tmpdir}/shared.db"
    move_vip(VIP_A, None, a)
    move_vip(VIP_B, None, b)
    node_a = CsserverNode.start(a, lab.tmpdir, csserver_toml("cs-a", ALIASES, BACKUP, store))
    node_b = CsserverNode.start(b, lab.tmpdir, csserver_toml("cs-b", ALIASES, BACKUP, store))
    config = node_a.config_path  # the client reads [cluster] aliases and the port from it

    # One SQLite file on one host, deliberately: each node says so at start, then shows the other that
    # they share it (each joins the store at start and beats every 2 s, and asks the other at its VIP),
    # which is what lets it act as the other's backup. Said once each.
    for node, partner in ((node_a, "cs-b"), (node_b, "cs-a")):
        assert [e["partners"] for e in node.events() if e.get("event") == "store_single_host"] == [[partner]]
        wait_until(lambda n=node, p=partner: [e for e in n.events() if e.get("event") == "store_shared"
                                              and e.get("partner") == p], 10, 0.05,
                   message=f"{node.host.name} never found it shares the store with {partner}")
    for node in (node_a, node_b):
        assert len([e for e in node.events() if e.get("event") == "store_shared"]) == 1

    # A context of A, created and written through VIP-A.
    code, created, err = ctx_cli(client, config, "create", "--via", "cs-a")
    assert code == 0, err
    haid = created["haid"]
    assert (created["primary"], created["backup"], created["epoch"]) == ("cs-a", "cs-b", 1)
    assert ctx_cli(client, config, "put", haid, "k", '"v1"')[1]["version"] == 1

    # Before any move: B refuses A's context (421, pointing at VIP-A); strangers and garbage likewise.
    status, answer = http(client, "GET", f"http://{b.ipv4}:{PORT}/v1/contexts/{haid}")
    assert (status, answer["vip"]) == (421, VIP_A)
    assert http(client, "GET", f"http://{VIP_A}:{PORT}/v1/contexts/4-4--cs-xcs-y1")[0] == 421
    assert http(client, "GET", f"http://{VIP_A}:{PORT}/v1/contexts/8--cs_1_dev84835")[0] == 400

    # Failover by hand: VIP-A leaves A for B; the client forgets A's MAC (vrrpd's gratuitous ARP would do it).
    move_vip(VIP_A, a, b)
    client.run(["ip", "neigh", "flush", "dev", "eth0"])
    node_b.wait_for_addresses({VIP_A, VIP_B})
    code, ctx, err = ctx_cli(client, config, "get", haid)
    assert code == 0, err
    assert (ctx["owner"], ctx["epoch"]) == ("cs-b", 2)
    adopted = [e for e in node_b.events() if e.get("event") == "context_adopted"]
    assert [(e["haid"], e["old_owner"], e["epoch"]) for e in adopted] == [(haid, "cs-a", 2)]
    assert ctx_cli(client, config, "get", haid, "k")[1]["value"] == "v1"  # what A acknowledged
    assert ctx_cli(client, config, "put", haid, "k", '"v2"')[1]["version"] == 2

    # A returns and takes VIP-A back, while B still holds it too (a split brain VRRP would end shortly).
    move_vip(VIP_A, None, a)
    node_a.wait_for_addresses({VIP_A})
    status, ctx = http(client, "GET", f"http://{a.ipv4}:{PORT}/v1/contexts/{haid}")
    assert (status, ctx["owner"], ctx["epoch"]) == (200, "cs-a", 3)
    status, answer = http(client, "PUT", f"http://{b.ipv4}:{PORT}/v1/contexts/{haid}/values/k", '"stale"')
    assert (status, answer["error"], answer["epoch"], answer["owner"]) == (409, "stale_epoch", 3, "cs-a")
    status, value = http(client, "GET", f"http://{a.ipv4}:{PORT}/v1/contexts/{haid}/values/k")
    assert (status, value["value"], value["version"]) == (200, "v2", 2)  # B's stale write was not applied

    # VRRP would now remove VIP-A from B: B then sends A's clients away, and A serves through VIP-A.
    move_vip(VIP_A, b, None)
    client.run(["ip", "neigh", "flush", "dev", "eth0"])
    node_b.wait_for_addresses({VIP_B}, {VIP_A})
    assert http(client, "PUT", f"http://{b.ipv4}:{PORT}/v1/contexts/{haid}/values/k", '"x"')[0] == 421
    assert ctx_cli(client, config, "put", haid, "k", '"v3"')[1]["version"] == 3
    for node in (node_a, node_b):
        assert not [e for e in node.events() if e.get("event") == "request_failed"]
        assert node.proc.poll() is None
