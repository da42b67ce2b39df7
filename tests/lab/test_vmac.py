"""use_vmac on real hosts, beside keepalived (use_vmac) and FRRouting's vrrpd (its macvlan made outside it), each
in both roles: a client keeps the virtual MAC for the VIP through a failover and a failback (no ARP update)
and its connections reach whichever node is master."""

from __future__ import annotations

import socket

import pytest

from labkit.frr import FRR_BIN, Frr, vrrpd_conf
from labkit.keepalived import keepalived_conf, keepalived_log, start_keepalived
from labkit.netns import netns_socket, wait_until
from labkit.vrrpd_node import VrrpdNode
from tests.support import require_program

pytestmark = pytest.mark.lab

VIP, VRID, PORT = "192.0.2.100", 51, 7777
VMAC = f"00:00:5e:00:01:{VRID:02x}"
INTERVAL = 0.2
TAKEOVER_S = 3 * INTERVAL + 3.0  # Master_Down_Interval, and time for the daemons and the lab


def listener(host) -> socket.socket:
    sock = netns_socket(host, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", PORT))
    sock.listen(64)
    sock.settimeout(0.2)
    return sock


def served_by(client, servers: dict) -> str | None:
    """Connect from `client` to VIP:PORT; the name of the host whose listener took it, or None."""
    conn = netns_socket(client, socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(0.5)
    try:
        conn.connect((VIP, PORT))
    except OSError:
        return None
    finally:
        conn.close()
    for name, server in servers.items():
        try:
            accepted, _ = server.accept()
            accepted.close()
            return name
        except OSError:
            continue
    return None


def neighbour_mac(client) -> str | None:
    out = client.run(["ip", "neigh", "show", VIP]).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


def start_peer(kind: str, host, priority: int, workdir):
    inst = {"name": "VI_1", "interface": "eth0", "vrid": VRID, "priority": priority, "advert_interval": INTERVAL,
            "virtual_ipaddress": [f"{VIP}/24"]}
    # A reply from the VIP leaves by the base, and the ARP request it takes must not name the VIP as its
    # sender (hosts would learn the base's MAC for it): vrrpd sets arp_announce=2 itself, keepalived does not.
    host.sysctl("net.ipv4.conf.eth0.arp_announce=2")
    if kind == "keepalived":
        return start_keepalived(host, keepalived_conf([{**inst, "use_vmac": True}], router_id=host.name),
                                workdir / "ka")
    require_program(str(FRR_BIN / "vrrpd"))
    # FRR's manual: the macvlan in bridge mode with the virtual MAC and the VIP, made outside FRR; the
    # base must not answer ARP for the VIP with its own MAC (what keepalived and vrrpd set themselves).
    host.add_macvlan("vrrp4-51", address=f"{VIP}/24", mac=VMAC)
    host.sysctl("net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.conf.eth0.arp_filter=1")
    return Frr(host, workdir / f"frr-{host.name}").start(
        vrrpd_conf("eth0", VRID, priority, round(INTERVAL * 1000), [VIP]))


def peer_is_master(kind: str, peer) -> bool:
    if kind == "frr":
        return peer.status(VRID) == "Master"
    return "Entering MASTER STATE" in keepalived_log(peer).split("Entering BACKUP STATE")[-1]


def peer_text(kind: str, peer) -> str:
    return (peer.log_text() if kind == "frr" else keepalived_log(peer))[-2000:]


@pytest.mark.parametrize("master", ["vrrpd", "peer"])
@pytest.mark.parametrize("kind", ["keepalived", "frr"])
def test_vmac_failover_and_failback_with_peer_needs_no_arp_update(lab, tmp_path, kind, master):
    net = lab(3)
    a, b, c = net.hosts  # a: vrrpd, b: the peer, c: a client
    vrrpd_priority, peer_priority = (150, 100) if master == "vrrpd" else (100, 150)
    peer = start_peer(kind, b, peer_priority, tmp_path)
    node = VrrpdNode(a, tmp_path, [{"name": "VI_1", "interface": "eth0", "vrid": VRID, "priority": vrrpd_priority,
                                    "advert_interval": INTERVAL, "virtual_ipaddress": [f"{VIP}/24"],
                                    "use_vmac": True}]).start()
    servers = {"a": listener(a), "b": listener(b)}
    first, second = ("a", "b") if master == "vrrpd" else ("b", "a")
    hosts = {"a": a, "b": b}

    def diagnostics() -> str:
        return node.log_text()[-2000:] + "\n----\n" + peer_text(kind, peer)

    try:
        wait_until(lambda: node.state("VI_1") == ("MASTER" if master == "vrrpd" else "BACKUP")
                   and (peer_is_master(kind, peer) is (master == "peer")), 15, message=diagnostics())
        wait_until(lambda: served_by(c, servers) == first, 10, 0.05, message=diagnostics())
        assert neighbour_mac(c) == VMAC  # the client knows the VIP by the virtual MAC
        assert a.run(["ip", "-br", "link", "show", "vrrp.51"]).stdout.split()[2] == VMAC
        # failover: the master's link goes; the other node takes the VIP, the client's entry stays
        hosts[first].set_link(False)
        wait_until(lambda: served_by(c, servers) == second, TAKEOVER_S + 5, 0.05, message=diagnostics())
        assert neighbour_mac(c) == VMAC
        # failback: the higher priority preempts
        hosts[first].set_link(True)
        wait_until(lambda: served_by(c, servers) == first, TAKEOVER_S + 8, 0.05, message=diagnostics())
        assert neighbour_mac(c) == VMAC
        stats = node.instance("VI_1")["stats"]
        assert stats["adverts_rx"] > 0 and stats["checksum_errors"] == 0
    finally:
        for server in servers.values():
            server.close()
        if kind == "frr":
            peer.stop()


def test_ipv6_vmac_pair_keeps_the_clients_neighbour_entry_through_a_failover(lab, tmp_path):
    net = lab(3)
    a, b, c = net.hosts
    vip6, vmac6 = "2001:db8::100", f"00:00:5e:00:02:{VRID:02x}"

    def inst(priority):
        return {"name": "VI_6", "interface": "eth0", "vrid": VRID, "priority": priority, "advert_interval": INTERVAL,
                "virtual_ipaddress": [f"{vip6}/64"], "use_vmac": True}

    na, nb = VrrpdNode(a, tmp_path, [inst(150)]).start(), VrrpdNode(b, tmp_path, [inst(100)]).start()

    def reached() -> bool:  # refused or accepted: the VIP's host answered
        conn = netns_socket(c, socket.AF_INET6, socket.SOCK_STREAM)
        conn.settimeout(0.5)
        try:
            return conn.connect_ex((vip6, 9)) in (0, 111)
        finally:
            conn.close()

    def neighbour() -> str | None:
        out = c.run(["ip", "-6", "neigh", "show", vip6]).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    wait_until(lambda: na.state("VI_6") == "MASTER" and nb.state("VI_6") == "BACKUP", 15,
               message=na.log_text()[-1500:])
    wait_until(reached, 5)
    assert neighbour() == vmac6
    # the advert's source is the base's link-local, on the macvlan too (keepalived's way)
    assert str(a.link_local()) in a.run(["ip", "-6", "addr", "show", "vrrp6.51"]).stdout
    a.set_link(False)
    wait_until(lambda: nb.state("VI_6") == "MASTER", TAKEOVER_S + 3, message=nb.log_text()[-1500:])
    wait_until(reached, 5)
    assert neighbour() == vmac6 and b.has_address(vip6, "vrrp6.51")
