"""What operators who leave keepalived bring with them, on real hosts: GARP timing, virtual routes and rules,
notify FIFO, track_file, track_process, accept_mode, unicast TTL. (Authentication with keepalived is in
test_keepalived_interop.py, VMAC with keepalived and FRR in test_vmac.py.)"""

from __future__ import annotations

import pytest

from labkit.netns import wait_until
from labkit.vrrpd_node import VrrpdNode

pytestmark = pytest.mark.lab

VIP = "192.0.2.100"


def lone_master(host, workdir, **kw) -> VrrpdNode:
    inst = {"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 200, "advert_interval": 0.1,
            "virtual_ipaddress": [f"{VIP}/24"], **kw}
    node = VrrpdNode(host, workdir, [inst]).start()
    return node


def test_garp_rounds_are_spaced_by_garp_interval_and_repeated_after_garp_master_delay(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    capture = net.capture(b, "arp")
    try:
        node = lone_master(a, tmp_path, garp_repeat=3, garp_interval=0.2, garp_master_delay=1.5)
        wait_until(lambda: (node.instance("VI_1") or {}).get("stats", {}).get("garp_delays") == 1, 10,
                   message=node.log_text()[-2000:])
        wait_until(lambda: len(capture.decode(["frame.time_epoch"], f"arp.dst.proto_ipv4 == {VIP}")) >= 6, 5)
    finally:
        capture.stop()
    times = [float(row["frame.time_epoch"]) for row in capture.decode(["frame.time_epoch"],
                                                                      f"arp.dst.proto_ipv4 == {VIP}")]
    assert len(times) == 6, times
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(0.18 <= gap <= 0.5 for gap in gaps[:2] + gaps[3:]), gaps  # within a round: garp_interval apart
    assert 1.5 - 0.45 <= times[3] - times[0] <= 1.5 + 0.5, gaps  # the second round: garp_master_delay later
