"""vrrpd through a host's life: interfaces re-created, late or renamed; addresses removed, late, changed; rolling
VIP changes; address owners; equal priorities; preempt_delay; a new MAC. Both roles, real daemons, namespaces.

The rule every scenario holds: once Master_Down_Interval has passed after the change, each VIP is on exactly
one host, and it is the host the election says.
"""

from __future__ import annotations

import signal
import time

import pytest

from labkit.netns import AddressWatcher, wait_until
from labkit.vrrpd_node import VrrpdNode
from tests.lab.scenarios import INTERVAL, instance, master_down_interval

pytestmark = pytest.mark.lab

VIP = "198.51.100.100"
SETTLE = master_down_interval(100) + 1.0  # after a change: MDI, plus time for a loaded 2-core machine


def on(ifname: str, priority: int, vip: str = f"{VIP}/24", **kw) -> dict:
    return instance(priority, vip=vip, interface=ifname, **kw)


def holders(hosts, vip: str = VIP) -> list[str]:
    """The hosts that have `vip` on any interface (interfaces come and go in these scenarios)."""
    return [h.name for h in hosts if h.run(["ip", "-o", "address", "show", "to", vip]).stdout.strip()]


def assert_one_holder(hosts, expected: str, vip: str = VIP, hold: float = 2.0) -> None:
    """Within SETTLE, `expected` alone holds `vip`; and it stays so for `hold` seconds (several intervals)."""
    wait_until(lambda: holders(hosts, vip) == [expected], SETTLE + 3,
               message=f"{vip} not on {expected} alone: {holders(hosts, vip)}")
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        assert holders(hosts, vip) == [expected], f"{vip} on {holders(hosts, vip)}"
        time.sleep(INTERVAL / 4)


def wait_state(node: VrrpdNode, state: str, name: str = "VI_1", timeout: float = 10.0) -> dict:
    return wait_until(lambda: (i := node.instance(name)) and i["state"] == state and i, timeout,
                      message=f"{node.host.name} {name} never {state}: {node.instance(name)}\n{node.log_text()[-2000:]}")


def macvlan_pair(lab, tmp_path, prio_a=150, prio_b=100, **kw):
    net = lab(2)
    a, b = net.hosts
    for i, host in enumerate((a, b), 1):
        host.add_macvlan("mv0", f"198.51.100.{i}/24")
    node_a = VrrpdNode(a, tmp_path, [on("mv0", prio_a, **kw)]).start()
    wait_state(node_a, "MASTER")
    node_b = VrrpdNode(b, tmp_path, [on("mv0", prio_b, **kw)]).start()
    wait_state(node_b, "BACKUP")
    return net, node_a, node_b


# ---- interfaces --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["backup", "master"])
def test_a_recreated_macvlan_is_fault_then_takes_part_again_with_new_sockets(lab, tmp_path, victim):
    net, node_a, node_b = macvlan_pair(lab, tmp_path)
    a, b = net.hosts
    host, node = (b, node_b) if victim == "backup" else (a, node_a)
    index = host.run(["cat", "/sys/class/net/mv0/ifindex"]).stdout.strip()
    host.delete_link("mv0")
    assert wait_state(node, "FAULT")["faults"] == ["no_interface"]
    assert node.alive()
    if victim == "master":
        assert_one_holder(net.hosts, "b", hold=0.5)
    host.add_macvlan("mv0", f"198.51.100.{1 if host is a else 2}/24")
    assert host.run(["cat", "/sys/class/net/mv0/ifindex"]).stdout.strip() != index
    # Back in the election with working sockets: a deaf backup would take over, a mute master be doubled.
    assert_one_holder(net.hosts, "a", hold=3.0)
    assert (node_a.state("VI_1"), node_b.state("VI_1")) == ("MASTER", "BACKUP")
    assert node.instance("VI_1")["stats"]["adverts_rx" if node is node_b else "adverts_tx"] > 0


@pytest.mark.parametrize("victim", ["backup", "master"])
def test_a_recreated_veth_is_followed_too(lab, tmp_path, victim):
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(150)]).start()
    wait_state(node_a, "MASTER")
    node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_state(node_b, "BACKUP")
    host, node = (b, node_b) if victim == "backup" else (a, node_a)
    host.recreate_veth()
    assert_one_holder(net.hosts, "a", vip="192.0.2.100", hold=3.0)
    assert (node_a.state("VI_1"), node_b.state("VI_1")) == ("MASTER", "BACKUP")
    assert node.alive()


def test_an_interface_that_appears_after_start_is_waited_for_not_fatal(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    b.add_macvlan("mv0", "198.51.100.2/24")
    VrrpdNode(b, tmp_path, [on("mv0", 100)]).start()
    node_a = VrrpdNode(a, tmp_path, [on("mv0", 150), instance(150, name="VI_2", vrid=52)]).start()
    wait_state(node_a, "MASTER", "VI_2")  # the other instance is not held back
    assert node_a.instance("VI_1")["faults"] == ["no_interface"] and node_a.alive()
    assert_one_holder(net.hosts, "b", hold=0.5)
    a.add_macvlan("mv0", "198.51.100.1/24")
    assert_one_holder(net.hosts, "a")


def test_a_renamed_interface_is_gone_until_its_name_comes_back(lab, tmp_path):
    net, node_a, node_b = macvlan_pair(lab, tmp_path)
    a = net.hosts[0]
    a.run(["ip", "link", "set", "mv0", "down"])
    a.run(["ip", "link", "set", "mv0", "name", "mv1"])
    assert wait_state(node_a, "FAULT")["faults"] == ["no_interface"]
    assert_one_holder(net.hosts, "b", hold=0.5)
    a.run(["ip", "link", "set", "mv1", "name", "mv0"])
    a.run(["ip", "link", "set", "mv0", "up"])
    assert_one_holder(net.hosts, "a")


# ---- addresses ---------------------------------------------------------------------------------------------


def test_a_primary_address_removed_changed_and_added_late(lab, tmp_path):
    net, node_a, node_b = macvlan_pair(lab, tmp_path)
    a = net.hosts[0]
    a.run(["ip", "address", "del", "198.51.100.1/24", "dev", "mv0"])
    assert wait_state(node_a, "FAULT")["faults"] == ["no_address"]
    assert_one_holder(net.hosts, "b", hold=0.5)
    a.run(["ip", "address", "add", "198.51.100.11/24", "dev", "mv0"])  # a new address, as a DHCP renewal gives
    assert_one_holder(net.hosts, "a")
    assert node_b.instance("VI_1")["master_address"] == "198.51.100.11"


def test_no_address_at_start_recovers_by_itself_ipv4_and_ipv6_link_local(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    a.add_macvlan("mv0")
    a.run(["ip", "link", "set", "mv0", "down"])
    a.sysctl("net.ipv6.conf.mv0.addr_gen_mode=1")  # no link-local of its own: it comes late, by hand
    a.run(["ip", "link", "set", "mv0", "up"])
    vip6 = "2001:db8::100"
    node_a = VrrpdNode(a, tmp_path, [on("mv0", 150), on("mv0", 150, vip=f"{vip6}/64", name="VI_6", vrid=52)]).start()
    assert wait_state(node_a, "FAULT")["faults"] == ["no_address"]
    assert wait_state(node_a, "FAULT", "VI_6")["faults"] == ["no_address"]
    a.run(["ip", "address", "add", "198.51.100.1/24", "dev", "mv0"])
    wait_state(node_a, "MASTER")
    assert node_a.instance("VI_6")["state"] == "FAULT"
    a.run(["ip", "address", "add", "fe80::a/64", "dev", "mv0", "nodad"])
    wait_state(node_a, "MASTER", "VI_6")
    assert a.has_address(vip6, "mv0") and a.has_address(VIP, "mv0")


def test_a_vip_removed_by_hand_from_the_master_is_put_back_and_counted(lab, tmp_path):
    net, node_a, node_b = macvlan_pair(lab, tmp_path)
    a = net.hosts[0]
    a.run(["ip", "address", "del", f"{VIP}/24", "dev", "mv0"])
    wait_until(lambda: a.has_address(VIP, "mv0"), 2, message="the VIP was not put back")
    assert node_a.instance("VI_1")["stats"]["vips_restored"] == 1
    assert [e["address"] for e in node_a.log_events("vip_restored")] == [f"{VIP}/24"]
    assert_one_holder(net.hosts, "a", hold=1.0)


# ---- rolling changes, owners, equal priorities, preempt_delay ---------------------------------------------


def test_a_rolling_vip_change_keeps_one_holder_per_vip_and_logs_the_mismatch(lab, tmp_path):
    net, node_a, node_b = macvlan_pair(lab, tmp_path)
    second = "198.51.100.101"
    node_a.instances = [on("mv0", 150, virtual_ipaddress=[f"{VIP}/24", f"{second}/24"])]
    node_a.write_config()
    node_a.send_signal(signal.SIGHUP)
    wait_until(lambda: net.hosts[0].has_address(second, "mv0"), 5, message="a did not add the new VIP")
    for vip in (VIP, second):
        assert_one_holder(net.hosts, "a", vip=vip, hold=1.5)
    assert node_b.instance("VI_1")["state"] == "BACKUP"
    assert node_b.instance("VI_1")["stats"]["address_list_errors"] > 0
    [warning] = node_b.log_events("address_list_mismatch")  # rate-limited: once, not every interval
    assert warning["theirs"] == sorted([VIP, second])


def test_an_owners_own_address_is_never_removed_and_two_owners_settle(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    own = f"{a.ipv4}/24"  # a is the true owner: the VIP is its interface address
    node_a = VrrpdNode(a, tmp_path, [instance(255, vip=own)]).start()
    wait_state(node_a, "MASTER")
    node_b = VrrpdNode(b, tmp_path, [instance(255, vip=own)]).start()  # a second "owner": a misconfiguration
    wait_until(lambda: {node_a.state("VI_1"), node_b.state("VI_1")} == {"MASTER", "BACKUP"}, SETTLE + 3,
               message=f"owners never settled: {node_a.state('VI_1')} {node_b.state('VI_1')}")
    assert node_a.state("VI_1") == "BACKUP"  # the lower address yields (RFC 9568 6.4.3)
    assert node_a.log_events("owner_conflict") or node_b.log_events("owner_conflict")
    assert a.has_address(str(a.ipv4)), "the owner's own address was removed on yielding"
    node_a.stop()
    assert a.has_address(str(a.ipv4)), "the owner's own address was removed at stop"


def test_a_restarted_equal_priority_backup_with_the_higher_address_leaves_the_master_alone(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(100)]).start()
    wait_state(node_a, "MASTER")
    node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_state(node_b, "BACKUP")
    watcher = AddressWatcher(a).start()
    node_b.stop()
    node_b.start()
    wait_state(node_b, "BACKUP")
    time.sleep(3 * master_down_interval(100))  # absence of a takeover: nothing to poll, so wait it out
    assert node_a.state("VI_1") == "MASTER" and node_b.state("VI_1") == "BACKUP"
    assert not [e for e in watcher.events() if e.kind == "del" and e.address == "192.0.2.100"], "the VIP moved"


def test_preempt_delay_after_a_track_script_dip(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    flag = tmp_path / "down"
    script = {"name": "chk", "command": ["/bin/sh", "-c", f"test ! -e {flag}"], "interval": 0.1, "weight": -60}
    node_a = VrrpdNode(a, tmp_path, [instance(150, track_script=["chk"], preempt_delay=1.5)], scripts=[script]).start()
    wait_state(node_a, "MASTER")
    node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_state(node_b, "BACKUP")
    flag.touch()
    wait_state(node_b, "MASTER")
    watcher = AddressWatcher(a).start()
    t0 = time.monotonic()
    flag.unlink()
    wait_state(node_a, "MASTER", timeout=10)
    added = watcher.first_add("192.0.2.100", t0)
    assert added is not None
    assert 1.5 <= added - t0 <= 1.5 + master_down_interval(150) + 1.0, f"took back after {added - t0:.2f}s"


def test_a_new_mac_is_announced_at_once(lab, tmp_path):
    net = lab(3)
    a, b, client = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(150)]).start()
    wait_state(node_a, "MASTER")
    client.sysctl("net.ipv4.neigh.eth0.locktime=0")  # else a new MAC within 1 s of the last update is ignored
    client.run(["ip", "neigh", "replace", "192.0.2.100", "lladdr", a.mac, "dev", "eth0", "nud", "stale"])
    new_mac = "02:76:6c:00:0a:0a"
    a.run(["ip", "link", "set", "eth0", "address", new_mac])
    wait_until(lambda: new_mac in client.run(["ip", "neigh", "show", "192.0.2.100"]).stdout, 3,
               message=f"the client still points at the old MAC: {client.run(['ip', 'neigh']).stdout}")


def test_a_reload_naming_a_missing_interface_faults_that_instance_alone(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(150)]).start()
    wait_state(node_a, "MASTER")
    watcher = AddressWatcher(a).start()
    node_a.instances = [instance(150), on("mv9", 150, name="VI_9", vrid=59)]
    node_a.write_config()
    node_a.send_signal(signal.SIGHUP)
    assert wait_state(node_a, "FAULT", "VI_9")["faults"] == ["no_interface"]
    assert node_a.state("VI_1") == "MASTER" and node_a.alive()
    assert not [e for e in watcher.events() if e.kind == "del" and e.address == "192.0.2.100"], \
        "the reload touched VI_1's VIP"
    a.add_macvlan("mv9", "198.51.100.1/24")
    wait_state(node_a, "MASTER", "VI_9")
