"""The daemon's edges on real (namespaced) hosts: raw VRRP sockets, netlink, GARP/NA, and the lab harness."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import time
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface

import pytest

from labkit.keepalived import check_keepalived_conf, keepalived_conf, keepalived_log, start_keepalived
from labkit.netns import AddressWatcher, Lab, pid_alive, in_netns, wait_until
from vrrpd.core import events as n
from vrrpd.core.frames import garp_frame, na_frame
from vrrpd.io.announce import Announcer
from vrrpd.io.netlink import Netlink
from vrrpd.core.packet import MCAST_V4, MCAST_V6, VRRP_PROTO
from vrrpd.io.sockets import AdvertSocket, Received

LINK_EVENT_DEADLINE = 1.0  # seconds from `ip link set` to our callback; the kernel pushes it in microseconds
# Not a valid advert on purpose: the checksum field (bytes 6-7) is wrong, so a kernel that checked or filled
# in checksums would drop or change it; the socket must hand it over byte for byte.
PAYLOAD = bytes.fromhex("3133 6401 0064 dead") + bytes(4)


def netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def run_async(host, make_coro):
    """Run `make_coro()` in its own event loop inside `host`'s namespace, as the daemon would run."""
    return in_netns(host, lambda: asyncio.run(make_coro()))


async def wait_async(predicate, timeout: float = 5.0) -> None:
    """Poll `predicate` inside a running loop until it holds or `timeout` passes (AssertionError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def collect(sock: AdvertSocket, count: int, timeout: float = 2.0) -> list[Received]:
    got: list[Received] = []

    def enough():
        got.extend(sock.recv_all())
        return len(got) >= count

    wait_until(enough, timeout, message=f"received {len(got)} of {count} packets: {got}")
    return got


# ---- harness -----------------------------------------------------------------------------------------


def test_wait_until_returns_the_value_or_fails_with_the_message():
    values = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(values), 1, interval=0) == "ready"
    started = time.monotonic()
    with pytest.raises(AssertionError, match="never true"):
        wait_until(lambda: False, 0.05, message="never true")
    assert 0.05 <= time.monotonic() - started < 1


@pytest.mark.lab
def test_lab_cleanup_leaves_nothing_even_when_the_body_raises(root):
    with pytest.raises(RuntimeError, match="test body failed"):
        with Lab(2) as net:
            made = {h.ns for h in net.hosts} | {net.switch_ns}
            assert made <= netns_names()
            tracked = net.hosts[0].popen(["sleep", "60"])
            # a grandchild the lab never saw: only "whatever still runs in our namespace" can stop it
            parent = net.hosts[1].popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
            orphan = int(parent.stdout.readline())
            raise RuntimeError("test body failed")
    assert not made & netns_names(), f"namespaces left: {made & netns_names()}"
    assert tracked.poll() is not None and parent.poll() is not None
    assert not pid_alive(orphan), f"process {orphan} outlived its namespace"


@pytest.mark.lab
def test_labs_get_unique_namespaces_and_hosts_talk_only_on_their_bridge(lab):
    first, second = lab(2), lab(2)
    assert {h.ns for h in first.hosts}.isdisjoint(h.ns for h in second.hosts)
    assert all(len(h.ns) < 15 for h in first.hosts)
    a, b = first.hosts
    other = second.hosts[1]  # same address as b, on another bridge
    receivers = [in_netns(h, AdvertSocket, "eth0", "ipv4") for h in (b, other)]
    sender = in_netns(a, AdvertSocket, "eth0", "ipv4")
    sender.send(PAYLOAD, b.ipv4, a.ipv4)
    assert [r.src for r in collect(receivers[0], 1)] == [a.ipv4]
    time.sleep(0.1)  # give a wrongly bridged packet time to arrive; nothing must come
    assert receivers[1].recv_all() == []
    for sock in (sender, *receivers):
        sock.close()


@pytest.mark.lab
def test_address_watcher_stamps_adds_and_deletes_of_its_own_host(lab):
    net = lab(2)
    a, b = net.hosts
    watcher = AddressWatcher(a).start()
    before = time.monotonic()
    a.run(["ip", "address", "add", "192.0.2.77/24", "dev", "eth0"])
    b.run(["ip", "address", "add", "192.0.2.78/24", "dev", "eth0"])
    a.run(["ip", "address", "del", "192.0.2.77/24", "dev", "eth0"])
    after = time.monotonic()
    wait_until(lambda: any(e.kind == "del" for e in watcher.events()), 2, message=f"{watcher.events()}")
    watcher.stop()
    events = watcher.events()
    assert [(e.kind, e.address) for e in events] == [("add", "192.0.2.77"), ("del", "192.0.2.77")]
    assert before <= events[0].time <= events[1].time <= after + 0.5


# ---- raw VRRP sockets --------------------------------------------------------------------------------


def _cases(a, b, family):
    """(destination, source) pairs; the forced sources differ from what the kernel would pick itself."""
    if family == "ipv4":
        a.run(["ip", "address", "add", "192.0.2.50/24", "dev", "eth0"])  # a secondary: never the default
        return [(MCAST_V4, a.ipv4), (b.ipv4, ip_address("192.0.2.50"))]
    # for ff02::12 the kernel would choose the link-local; the global source proves IPV6_PKTINFO is used
    return [(MCAST_V6, a.link_local()), (b.ipv6, a.ipv6), (MCAST_V6, a.ipv6)]


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_advert_socket_delivers_payload_src_dst_and_ttl_255(lab, family):
    net = lab(3)
    a, b, c = net.hosts
    send = in_netns(a, AdvertSocket, "eth0", family)
    recv = in_netns(b, AdvertSocket, "eth0", family)
    unjoined = in_netns(c, AdvertSocket, "eth0", family, join_multicast=False)
    joined = in_netns(c, AdvertSocket, "eth0", family)  # c's interface is in the group, unjoined is not
    assert recv.recv_all() == []  # nothing waiting: returns at once instead of blocking
    cases = _cases(a, b, family)
    for dst, src in cases:
        send.send(PAYLOAD, dst, src)
    got = collect(recv, len(cases))
    assert [(r.payload, r.dst, r.src, r.ttl) for r in got] == [(PAYLOAD, dst, src, 255) for dst, src in cases]
    assert {r.ifindex for r in got} == {in_netns(b, socket.if_nametoindex, "eth0")}
    assert send.recv_all() == [], "multicast looped back to the sender"
    multicast = [(dst, src) for dst, src in cases if dst.is_multicast]
    assert [(r.dst, r.src) for r in collect(joined, len(multicast))] == multicast
    # A socket that did not join still hears unicast to its host. IPv4 also keeps it out of the group that
    # another socket joined on the same interface (IP_MULTICAST_ALL off); Linux applies no such per-socket
    # filter to IPv6 raw sockets that are not bound to an address, so there it hears the group too.
    unicast = c.ipv4 if family == "ipv4" else c.ipv6
    send.send(PAYLOAD, unicast, cases[-1][1])
    heard: list = []
    wait_until(lambda: heard.extend(r.dst for r in unjoined.recv_all()) or unicast in heard, 2, message=f"{heard}")
    if family == "ipv4":
        assert heard == [unicast]
    for sock in (send, recv, unjoined, joined):
        sock.close()


def _send_with_ttl_1(family: str, dst: str) -> None:
    af = socket.AF_INET if family == "ipv4" else socket.AF_INET6
    with socket.socket(af, socket.SOCK_RAW, VRRP_PROTO) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        if family == "ipv4":
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.sendto(PAYLOAD, (dst, 0))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.sendto(PAYLOAD, (dst, 0, 0, socket.if_nametoindex("eth0")))


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_received_ttl_is_the_packets_own_so_a_routed_advert_can_be_dropped(lab, family):
    net = lab(2)
    a, b = net.hosts
    recv = in_netns(b, AdvertSocket, "eth0", family)
    in_netns(a, _send_with_ttl_1, family, str(MCAST_V4 if family == "ipv4" else MCAST_V6))
    assert [r.ttl for r in collect(recv, 1)] == [1]
    recv.close()


@pytest.mark.lab
def test_advert_socket_send_on_a_missing_interface_is_an_oserror(lab):
    net = lab(1)
    with pytest.raises(OSError):
        in_netns(net.hosts[0], AdvertSocket, "nosuch0", "ipv4")


# ---- netlink -----------------------------------------------------------------------------------------


@pytest.mark.lab
def test_netlink_facts_and_address_changes_inside_a_running_loop(lab):
    net = lab(2)
    b = net.hosts[1]
    b.sysctl("net.ipv6.conf.eth0.accept_dad=1")  # so only IFA_F_NODAD keeps the VIP from being tentative
    vip4, vip6 = IPv4Interface("192.0.2.100/24"), IPv6Interface("2001:db8::100/64")

    async def scenario():
        events: list = []
        nl = Netlink()
        await nl.start(events.extend)
        facts = {"dumped": list(events)}
        try:
            added = []
            for v in (vip4, vip4, vip6, vip6):
                try:
                    await nl.add("eth0", v)
                    added.append(True)
                except OSError as exc:
                    added.append(exc.errno == errno.EEXIST and "exists")
            facts["added"] = added
            facts["removed"] = [await nl.remove("eth0", v) for v in (vip4, vip4, vip6, vip6)]
            facts["removed_missing_if"] = await nl.remove("nosuch0", vip4)
            await asyncio.gather(*(nl.add("eth0", ip_interface(f"192.0.2.{n}/24")) for n in range(200, 210)))
            with pytest.raises(OSError):
                await nl.add("nosuch0", vip4)
            await wait_async(lambda: sum(isinstance(e, n.AddressChanged) and e.present for e in events) >= 12)
            facts["news"] = list(events[len(facts["dumped"]):])
            return facts
        finally:
            nl.close()

    facts = run_async(b, scenario)
    links = {e.ifname: e for e in facts["dumped"] if isinstance(e, n.LinkChanged)}
    assert links["eth0"].index == in_netns(b, socket.if_nametoindex, "eth0")
    assert links["eth0"].up is True and links["eth0"].mac == b.mac and "nosuch0" not in links
    dumped = {(e.ifname, e.address) for e in facts["dumped"] if isinstance(e, n.AddressChanged) and e.present}
    assert ("eth0", IPv4Interface(f"{b.ipv4}/24")) in dumped and ("eth0", ip_interface(f"{b.link_local()}/64")) in dumped
    assert facts["added"] == [True, "exists", True, "exists"]
    assert facts["removed"] == [True, False, True, False]
    assert facts["removed_missing_if"] is False
    news = [(e.address, e.present) for e in facts["news"] if isinstance(e, n.AddressChanged)]
    assert (vip4, True) in news and (vip4, False) in news and (vip6, True) in news and (vip6, False) in news
    assert {f"192.0.2.{k}" for k in range(200, 210)} <= b.addresses()
    assert str(vip4.ip) not in b.addresses() and str(vip6.ip) not in b.addresses()


@pytest.mark.lab
def test_netlink_ipv6_vip_is_usable_at_once_even_with_dad_on(lab):
    net = lab(1)
    host = net.hosts[0]
    host.sysctl("net.ipv6.conf.eth0.accept_dad=1")

    async def add():
        nl = Netlink()
        await nl.start(lambda events: None)
        try:
            await nl.add("eth0", IPv6Interface("2001:db8::100/64"))
        finally:
            nl.close()

    run_async(host, add)
    flags = host.run(["ip", "-6", "-o", "address", "show", "dev", "eth0", "to", "2001:db8::100"]).stdout
    assert "2001:db8::100/64" in flags and "tentative" not in flags and "dadfailed" not in flags


@pytest.mark.lab
@pytest.mark.parametrize("host_side", [False, True], ids=["cable_pulled", "eth0_down"])
def test_link_news_reach_the_node_within_a_deadline(lab, host_side):
    net = lab(2)
    a = net.hosts[0]

    async def scenario():
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        nl = Netlink()
        await nl.start(lambda batch: [events.put_nowait((e, loop.time())) for e in batch
                                      if isinstance(e, n.LinkChanged) and e.ifname == "eth0"])
        while not events.empty():
            events.get_nowait()  # the dump
        seen = []
        try:
            for up in (False, True):
                started = loop.time()
                await asyncio.to_thread(a.set_link, up, host_side=host_side)
                while True:
                    event, at = await asyncio.wait_for(events.get(), LINK_EVENT_DEADLINE)
                    if event.up == up:
                        break
                seen.append((event.up, at - started))
        finally:
            nl.close()
        return seen

    seen = run_async(a, scenario)
    assert [up for up, _ in seen] == [False, True]
    assert all(delay <= LINK_EVENT_DEADLINE for _, delay in seen)
    if not host_side:
        assert {str(a.ipv4), str(a.ipv6)} <= a.addresses(), "a pulled cable must not take the addresses"


@pytest.mark.lab
def test_netlink_names_a_recreated_interface_anew(lab):
    net = lab(1)
    host = net.hosts[0]

    async def scenario():
        events: list = []
        nl = Netlink()
        await nl.start(events.extend)
        try:
            await asyncio.to_thread(host.run, ["ip", "link", "add", "mv0", "link", "eth0", "type", "macvlan"])
            await wait_async(lambda: any(isinstance(e, n.LinkChanged) and e.ifname == "mv0" and e.index for e in events))
            await asyncio.to_thread(host.run, ["ip", "link", "del", "mv0"])
            await asyncio.to_thread(host.run, ["ip", "link", "add", "mv0", "link", "eth0", "type", "macvlan"])
            await wait_async(lambda: len([e for e in events if isinstance(e, n.LinkChanged) and e.ifname == "mv0"
                                          and e.index]) >= 2 and any(isinstance(e, n.LinkChanged) and e.ifname == "mv0"
                                                                     and e.index is None for e in events))
            return [e for e in events if isinstance(e, n.LinkChanged) and e.ifname == "mv0"]
        finally:
            nl.close()

    mv0 = run_async(host, scenario)
    indexes = [e.index for e in mv0]
    assert None in indexes
    first, last = indexes[0], indexes[-1]
    assert first is not None and last is not None and first != last


# ---- gratuitous ARP / unsolicited NA -----------------------------------------------------------------


@pytest.mark.lab
def test_announce_sends_garp_and_override_na_that_repoint_the_neighbours(lab):
    net = lab(2)
    a, b = net.hosts
    vip4, vip6 = "192.0.2.100", "2001:db8::100"
    stale_mac = "02:00:00:00:00:99"  # b still believes the VIPs live at the old master's MAC
    for vip in (vip4, vip6):
        b.run(["ip", "neigh", "replace", vip, "lladdr", stale_mac, "dev", "eth0", "nud", "stale"])
    capture = net.capture(b, "arp or icmp6")
    announcer = Announcer()
    frames = (garp_frame(ip_address(vip4), a.mac), na_frame(IPv6Address(vip6), a.mac, a.link_local()))
    try:
        assert in_netns(a, announcer.send, "eth0", frames, 1) == (0, None)
        wait_until(lambda: _neighbour_macs(b, (vip4, vip6)) == {a.mac}, 2,
                   message=f"neighbours not re-pointed: {b.run(['ip', 'neigh']).stdout}")
        arp_fields = ["arp.opcode", "arp.isgratuitous", "arp.src.hw_mac", "arp.src.proto_ipv4", "eth.dst"]
        na_fields = ["icmpv6.nd.na.target_address", "icmpv6.nd.na.flag.o", "icmpv6.nd.na.flag.s",
                     "icmpv6.opt.linkaddr", "ipv6.hlim", "ipv6.src", "ipv6.dst", "icmpv6.checksum.status"]
        garps = wait_until(lambda: capture.decode(arp_fields, "arp"), 3, message="no ARP captured")
        nas = wait_until(lambda: capture.decode(na_fields, "icmpv6.type == 136"), 3, message="no NA captured")
        failed, error = in_netns(a, announcer.send, "nosuch0", frames, 2)
        assert failed == 4 and error
    finally:
        capture.stop()
        announcer.close()
    assert garps == [{"arp.opcode": "1", "arp.isgratuitous": "1", "arp.src.hw_mac": a.mac,
                      "arp.src.proto_ipv4": vip4, "eth.dst": "ff:ff:ff:ff:ff:ff"}]
    assert nas == [{"icmpv6.nd.na.target_address": vip6, "icmpv6.nd.na.flag.o": "1", "icmpv6.nd.na.flag.s": "0",
                    "icmpv6.opt.linkaddr": a.mac, "ipv6.hlim": "255", "ipv6.src": str(a.link_local()),
                    "ipv6.dst": "ff02::1", "icmpv6.checksum.status": "1"}]


def _neighbour_macs(host, addresses) -> set[str]:
    out = host.run(["ip", "-j", "neigh", "show", "dev", "eth0"]).stdout
    return {n.get("lladdr") for n in json.loads(out or "[]") if n["dst"] in addresses}


# ---- keepalived as a lab peer ------------------------------------------------------------------------


@pytest.mark.lab
def test_keepalived_pair_elects_the_higher_priority_and_fails_over(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    vip = "192.0.2.100"
    instance = {"vrid": 51, "advert_interval": 0.1, "virtual_ipaddress": [f"{vip}/24"]}
    master = start_keepalived(a, keepalived_conf([{**instance, "priority": 150}], router_id="a"), tmp_path)
    backup = start_keepalived(b, keepalived_conf([{**instance, "priority": 100}], router_id="b"), tmp_path)
    logs = lambda: f"a:\n{keepalived_log(master)[-2000:]}\nb:\n{keepalived_log(backup)[-2000:]}"  # noqa: E731
    wait_until(lambda: a.has_address(vip), 5, message=f"keepalived on a never took the VIP\n{logs()}")
    deadline = time.monotonic() + 0.5  # several advert intervals of steady state
    while time.monotonic() < deadline:
        assert not b.has_address(vip), f"VIP on both hosts\n{logs()}"
    master.send_signal(signal.SIGTERM)
    wait_until(lambda: b.has_address(vip), 3, message=f"keepalived on b never took over\n{logs()}")
    assert master.wait(5) == 0
    assert not a.has_address(vip), "keepalived on a kept the VIP after SIGTERM"


@pytest.mark.lab
@pytest.mark.parametrize("variant", [
    {},
    {"unicast_src": "192.0.2.1", "unicast_peers": ["192.0.2.2"]},
    {"version": 2, "advert_interval": 1},
    {"virtual_ipaddress": ["2001:db8::100/64"]},
    {"preempt": False, "preempt_delay": 0},
], ids=["v3", "unicast", "v2", "ipv6", "nopreempt"])
def test_keepalived_accepts_every_interop_variant(lab, tmp_path, variant):
    net = lab(1)
    instance = {"vrid": 51, "priority": 100, "advert_interval": 0.1, "virtual_ipaddress": ["192.0.2.100/24"]}
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived_conf([{**instance, **variant}]))
    check_keepalived_conf(net.hosts[0], conf)


def test_keepalived_conf_speaks_keepalived_for_vrrpd_style_keys():
    text = keepalived_conf([{"name": "VI_A", "vrid": 51, "priority": 150, "advert_interval": 0.5, "preempt": False,
                             "unicast_src": "192.0.2.1", "unicast_peers": ["192.0.2.2", "192.0.2.3"],
                             "virtual_ipaddress": ["192.0.2.100/24"]}], router_id="a", vrrp_version=2)
    assert "vrrp_instance VI_A {" in text
    for line in ("router_id a", "vrrp_version 2", "virtual_router_id 51", "advert_int 0.5", "nopreempt",
                 "unicast_src_ip 192.0.2.1", "unicast_peer {", "192.0.2.3", "interface eth0", "state BACKUP"):
        assert f"    {line}" in text, line
    assert "preempt False" not in text and "vrid" not in text
