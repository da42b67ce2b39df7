"""What the vrrpd lab tests share: the instance they run, the RFC timers at the lab's interval, and waits."""

from __future__ import annotations

from labkit.netns import wait_until
from labkit.vrrpd_node import VrrpdNode
from vrrpd.core.fsm import master_down_interval_cs, skew_time_cs

VIP4 = "192.0.2.100"
VIP6 = "2001:db8::100"
INTERVAL = 0.2  # seconds: fast enough for a quick suite, slow enough for a loaded 2-core CI machine
MARGIN = 0.100  # the allowance on top of the RFC timers


def instance(priority: int, vip=f"{VIP4}/24", **kw) -> dict:
    return {"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": priority, "advert_interval": INTERVAL,
            "virtual_ipaddress": [vip], "garp_repeat": 2, **kw}


def master_down_interval(priority: int) -> float:
    """Master_Down_Interval in seconds at the lab's advert interval."""
    return master_down_interval_cs(priority, round(INTERVAL * 100)) / 100


def skew_time(priority: int) -> float:
    """Skew_Time in seconds at the lab's advert interval."""
    return skew_time_cs(priority, round(INTERVAL * 100)) / 100


def start_pair(lab, tmp_path, prio_a=150, prio_b=100, a_first=False, **kw):
    """Two nodes; with a_first, b starts only once a is MASTER (a non-preempting a would otherwise lose
    the election for good to a b that happened to come up first)."""
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(prio_a, **kw.get("a", {}))]).start()
    if a_first:
        wait_master(node_a)
    node_b = VrrpdNode(b, tmp_path, [instance(prio_b, **kw.get("b", {}))]).start()
    return net, node_a, node_b


def holder(hosts, vip=VIP4):
    found = [h.name for h in hosts if h.has_address(vip)]
    return found[0] if len(found) == 1 else None


def wait_master(node: VrrpdNode, timeout=10.0):
    wait_until(lambda: node.state("VI_1") == "MASTER", timeout, message=f"{node.host.name} never MASTER\n{node.log_text()[-3000:]}")
