"""vrrpd at the sizes large sites run: 500 instances under systemd's notify protocol, 1000 instances and 4000
virtual addresses on one pair of hosts, failing over and back. VRIDs are 8 bits, so one interface carries at
most 255 instances per family: the thousand live on four links of the same hosts."""

from __future__ import annotations

import socket
import time

import pytest

from labkit.netns import wait_until
from labkit.vrrpd_node import VrrpdNode

pytestmark = pytest.mark.lab

NOTIFY_LIMIT = 1024  # bytes: a STATUS line stays far below systemd's 4096 (PIPE_BUF) datagram limit


def v4_instances(count: int, priority: int) -> list[dict]:
    return [{"name": f"instance-with-a-descriptive-name-{i:03d}", "interface": "eth0", "vrid": i,
             "priority": priority, "advert_interval": 1.0, "virtual_ipaddress": [f"198.51.100.{i}/24"],
             "garp_repeat": 1} for i in range(1, count + 1)]


def v6_instances(links: int, per_link: int, vips: int, priority: int) -> list[dict]:
    return [{"name": f"vi{k}-{i}", "interface": f"eth{k}", "vrid": i, "priority": priority, "advert_interval": 1.0,
             "virtual_ipaddress": [f"2001:db8:ff{k}::{i:x}:{j:x}/64" for j in range(1, vips + 1)], "garp_repeat": 1}
            for k in range(links) for i in range(1, per_link + 1)]


def vip_count(host, prefix: str = "") -> int:
    out = host.run(["ip", "-o", "address", "show"], timeout=30).stdout
    return sum(1 for line in out.splitlines() if prefix in line and ("198.51.100." in line or "2001:db8:ff" in line))


def states(node: VrrpdNode) -> dict[str, int]:
    status = node.status() or {"instances": []}
    counts: dict[str, int] = {}
    for inst in status["instances"]:
        counts[inst["state"]] = counts.get(inst["state"], 0) + 1
    return counts


def pull_cables(net, host, state: str) -> None:
    """Every link of `host` loses (or regains) carrier at the bridge, as pulled cables would."""
    ports = [host.peer] + [f"{host.peer}-{k}" for k in range(1, net.links)]
    net.hosts[0].run(["ip", "-n", net.switch_ns, "-batch", "-"], input="".join(
        f"link set {port} {state}\n" for port in ports))


def test_500_instances_ready_is_a_datagram_of_its_own_and_status_stays_short(lab, tmp_path):
    net = lab(1)
    host = net.hosts[0]
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(0.2)
    instances = v4_instances(250, 150) + [
        {**inst, "name": f"instance-with-a-descriptive-name-v6-{n:03d}", "virtual_ipaddress": [f"2001:db8:ff0::{n:x}/64"]}
        for n, inst in enumerate(v4_instances(250, 150), 1)]
    node = VrrpdNode(host, tmp_path, instances).start(env={"NOTIFY_SOCKET": str(path)})
    datagrams: list[bytes] = []

    def ready() -> bool:
        try:
            datagrams.append(receiver.recv(65536))
        except TimeoutError:
            pass
        return b"READY=1" in datagrams

    try:
        wait_until(ready, 60, interval=0, message=f"no READY=1 in {datagrams[:3]}\n{node.log_text()[-2000:]}")
        wait_until(lambda: states(node).get("MASTER") == 500, 60, message=f"{states(node)}")
        wait_until(lambda: ready() and datagrams[-1] == b"STATUS=500 instances: 500 MASTER", 10,
                   message=f"last STATUS: {datagrams[-1:]}")
    finally:
        receiver.close()
    assert b"READY=1" in datagrams  # alone: systemd drops a datagram over 4 KiB, READY=1 with it
    assert max(map(len, datagrams)) <= NOTIFY_LIMIT, max(datagrams, key=len)[:200]
    assert vip_count(host) == 500


def test_1000_instances_and_4000_vips_fail_over_and_back(lab, tmp_path):
    net = lab(2, links=4)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, v6_instances(4, 250, 4, 150)).start()
    started = time.monotonic()
    wait_until(lambda: vip_count(a) == 4000, 90, interval=0.5,
               message=f"a holds {vip_count(a)} VIPs, {states(node_a)}\n{node_a.log_text()[-2000:]}")
    held_after = time.monotonic() - started
    node_b = VrrpdNode(b, tmp_path, v6_instances(4, 250, 4, 100)).start()
    wait_until(lambda: states(node_b).get("BACKUP") == 1000, 60, interval=0.5, message=f"b: {states(node_b)}")
    assert vip_count(b) == 0 and states(node_a) == {"MASTER": 1000}
    pull_cables(net, a, "down")  # a's instances go FAULT, b takes everything over
    wait_until(lambda: vip_count(b) == 4000 and vip_count(a) == 0, 60, interval=0.5,
               message=f"b holds {vip_count(b)}, a {vip_count(a)}: {states(node_a)} {states(node_b)}")
    pull_cables(net, a, "up")
    wait_until(lambda: vip_count(a) == 4000 and vip_count(b) == 0, 60, interval=0.5,
               message=f"no failback: a {vip_count(a)}, b {vip_count(b)}: {states(node_a)} {states(node_b)}")
    assert states(node_b) == {"BACKUP": 1000}
    print(f"1000 instances, 4000 VIPs held {held_after:.1f} s after start")
