"""What operators configure beyond elections: tracking, sync groups, notify, hot reload, systemd notify."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from labkit.netns import AddressWatcher, wait_until
from tests.lab.scenarios import VIP4, holder, instance, master_down_interval, wait_master
from labkit.vrrpd_node import VrrpdNode

pytestmark = pytest.mark.lab

VIP4_B = "192.0.2.101"


def flag_script(name: str, flag, weight: int) -> dict:
    """A health check that fails while `flag` exists."""
    return {"name": name, "command": ["/bin/sh", "-c", f"test ! -e {flag}"], "interval": 0.1, "timeout": 1.0,
            "rise": 1, "fall": 1, "weight": weight}


def add_tracked_link(host) -> None:
    """A second link to track: a veth pair inside the host (this kernel has no dummy driver)."""
    host.run(["ip", "link", "add", "dum0", "type", "veth", "peer", "name", "dum0p"])
    host.run(["ip", "link", "set", "dum0p", "up"])
    host.run(["ip", "link", "set", "dum0", "up"])


def test_track_script_moves_vip_and_recovery_moves_it_back(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    flag = tmp_path / "a-unhealthy"
    node_a = VrrpdNode(a, tmp_path, [instance(150, track_script=["chk"])], scripts=[flag_script("chk", flag, -60)]).start()
    VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_master(node_a)
    wait_until(lambda: holder(net.hosts) == "a", 3)
    flag.touch()
    wait_until(lambda: node_a.instance("VI_1")["effective_priority"] == 90, 3, message="weight not applied")
    # the status says why: the script is down
    assert node_a.instance("VI_1")["track"] == {"interfaces": {"eth0": "up"}, "scripts": {"chk": "down"},
                                                 "files": {}, "processes": {}, "weights": {"chk": -60}}
    wait_until(lambda: holder(net.hosts) == "b", master_down_interval(100) + 3, message="VIP did not move to b")
    assert node_a.state("VI_1") == "BACKUP"
    flag.unlink()
    wait_until(lambda: holder(net.hosts) == "a", master_down_interval(150) + 3, message="VIP did not come back to a")
    assert node_a.instance("VI_1")["effective_priority"] == 150


def test_tracked_link_down_means_fault(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    add_tracked_link(a)
    node_a = VrrpdNode(a, tmp_path, [instance(150, track_interface=[{"name": "dum0", "weight": 0}])]).start()
    node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_master(node_a)
    a.run(["ip", "link", "set", "dum0", "down"])
    wait_until(lambda: node_a.state("VI_1") == "FAULT", 3, message="no FAULT on tracked link down")
    # a master going FAULT sends priority 0: b takes over after Skew_Time, well before Master_Down_Interval
    wait_until(lambda: holder(net.hosts) == "b", 3)
    assert node_b.instance("VI_1")["stats"]["priority_zero_rx"] >= 1
    a.run(["ip", "link", "set", "dum0", "up"])
    wait_until(lambda: node_a.state("VI_1") == "MASTER", master_down_interval(150) + 3)


def test_sync_group_moves_together(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    flag = tmp_path / "vi2-broken"

    def pair(prio, **kw):
        return [instance(prio, **kw), {**instance(prio, vip=f"{VIP4_B}/24"), "name": "VI_2", "vrid": 52}]

    group = [{"name": "G1", "instances": ["VI_1", "VI_2"]}]
    insts_a = pair(150)
    insts_a[1]["track_script"] = ["chk"]
    node_a = VrrpdNode(a, tmp_path, insts_a, scripts=[flag_script("chk", flag, 0)], sync_groups=group).start()
    VrrpdNode(b, tmp_path, pair(100), sync_groups=group).start()
    wait_until(lambda: node_a.state("VI_1") == node_a.state("VI_2") == "MASTER", 10)
    flag.touch()  # only VI_2's check fails; the group takes VI_1 down with it
    wait_until(lambda: node_a.state("VI_1") == node_a.state("VI_2") == "FAULT", 3, message="group did not move together")
    wait_until(lambda: holder(net.hosts, VIP4) == "b" and holder(net.hosts, VIP4_B) == "b", master_down_interval(100) + 3)
    flag.unlink()
    wait_until(lambda: node_a.state("VI_1") == node_a.state("VI_2") == "MASTER", master_down_interval(150) + 3)
    wait_until(lambda: holder(net.hosts, VIP4) == "a" and holder(net.hosts, VIP4_B) == "a", 3)


def test_notify_runs_in_order_even_when_transitions_outpace_it(lab, tmp_path):
    net = lab(1)
    (a,) = net.hosts
    add_tracked_link(a)
    record = tmp_path / "notify.log"
    notify = tmp_path / "notify.sh"
    notify.write_text(f'#!/bin/sh\nsleep 0.2\necho "$1 $2 $3 $4" >> {record}\n')
    notify.chmod(0o755)
    node = VrrpdNode(a, tmp_path, [instance(255, notify=str(notify), track_interface=[{"name": "dum0", "weight": 0}])]).start()
    wait_master(node)
    for _ in range(3):  # each flip is faster than the 0.2 s command
        a.run(["ip", "link", "set", "dum0", "down"])
        wait_until(lambda: node.state("VI_1") == "FAULT", 3)
        a.run(["ip", "link", "set", "dum0", "up"])
        wait_until(lambda: node.state("VI_1") == "MASTER", 3)
    expected = ["MASTER"] + ["FAULT", "MASTER"] * 3
    wait_until(lambda: record.exists() and len(record.read_text().splitlines()) == len(expected), 10,
               message="notify commands did not all run")
    lines = record.read_text().splitlines()
    assert lines == [f"INSTANCE VI_1 {state} 255" for state in expected]
    node.stop()
    wait_until(lambda: len(record.read_text().splitlines()) == len(expected) + 1, 5)
    assert record.read_text().splitlines()[-1] == "INSTANCE VI_1 STOP 255"


def test_twenty_reloads_never_remove_the_vip(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(150)]).start()
    VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_master(node_a)
    wait_until(lambda: a.has_address(VIP4), 3)
    watcher = AddressWatcher(a)
    watcher.start()
    try:
        for i in range(20):
            before = len(node_a.log_events("reloaded"))
            node_a.instances[0]["garp_repeat"] = 1 + i % 3  # a real change each time, same router identity
            node_a.write_config()
            node_a.send_signal(signal.SIGHUP)
            wait_until(lambda: len(node_a.log_events("reloaded")) > before, 5, message=f"reload {i} not done")
        assert node_a.state("VI_1") == "MASTER"
    finally:
        watcher.stop()
    deleted = [e for e in watcher.events() if e[1] == "del" and e[2] == VIP4]
    assert deleted == [], f"VIP deleted during reloads: {deleted}"
    assert holder(net.hosts) == "a"


def test_reload_diffs_vips_and_rejects_broken_file(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(150)]).start()
    node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_master(node_a)
    extra = "192.0.2.102"
    for node in (node_a, node_b):
        node.instances[0]["virtual_ipaddress"] = [f"{VIP4}/24", f"{extra}/24"]
        node.write_config()
        node.send_signal(signal.SIGHUP)
    wait_until(lambda: a.has_address(extra), 3, message="added VIP not installed by reload")
    assert node_a.state("VI_1") == "MASTER"
    # a broken file: the daemon keeps running on the old config
    node_a.config_path.write_text(node_a.config_path.read_text() + "\n[[instance]]\nname = 42\n")
    node_a.send_signal(signal.SIGHUP)
    wait_until(lambda: node_a.log_events("reload_rejected"), 3, message="broken reload not reported")
    problems = [e["problem"] for e in node_a.log_events("reload_rejected")]
    assert all(p.startswith(f"{node_a.config_path}:") for p in problems), problems
    assert any(".name:" in p for p in problems), problems
    assert node_a.alive() and node_a.state("VI_1") == "MASTER"
    assert a.has_address(VIP4) and a.has_address(extra)


def test_systemd_notify_protocol_and_priority_zero_on_stop(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    notify_path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)
    receiver.settimeout(0.2)
    messages: list[str] = []

    def drain():
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except (TimeoutError, socket.timeout):
                return messages

    try:
        node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
        node_a = VrrpdNode(a, tmp_path, [instance(150)]).start(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"})
        wait_until(lambda: any(m.startswith("READY=1") for m in drain()), 10, message="no READY=1")
        wait_master(node_a)
        wait_until(lambda: sum(m == "WATCHDOG=1" for m in drain()) >= 2, 5, message="no watchdog pings")
        node_a.send_signal(signal.SIGHUP)
        wait_until(lambda: any(m.startswith("RELOADING=1") for m in drain()), 5, message="no RELOADING=1")
        wait_until(lambda: sum(m.startswith("READY=1") for m in drain()) >= 2, 5, message="no READY=1 after reload")
        t0 = time.monotonic()
        assert node_a.stop() == 0
        drain()
        assert "STOPPING=1" in messages
        wait_until(lambda: node_b.instance("VI_1")["stats"]["priority_zero_rx"] >= 1, 2)
        wait_until(lambda: holder(net.hosts) == "b", 2)
        assert time.monotonic() - t0 < 5
    finally:
        receiver.close()


def test_metrics_endpoint_serves_live_state_and_counters(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    node_a = VrrpdNode(a, tmp_path, [instance(150)], global_kw={"metrics_listen": "127.0.0.1:9101"}).start()
    node_b = VrrpdNode(b, tmp_path, [instance(100)]).start()
    wait_master(node_a)
    wait_until(lambda: node_b.state("VI_1") == "BACKUP", 5)

    def scrape() -> str:
        return a.run(["curl", "-fsS", "-m", "2", "http://127.0.0.1:9101/metrics"]).stdout

    # adverts_tx grows between scrapes and matches what `vrrpd status` counts
    def sent(text: str) -> int:
        line = next(l for l in text.splitlines() if l.startswith("vrrpd_adverts_tx_total{") and 'instance="VI_1"' in l)
        return int(float(line.rsplit(" ", 1)[1]))

    first = scrape()
    assert 'vrrpd_instance_state{' in first
    assert any(l.startswith("vrrpd_instance_state{") and 'state="MASTER"' in l and l.endswith(" 1")
               for l in first.splitlines()), first
    assert any(l.startswith("vrrpd_instance_priority{") and l.endswith(" 150") for l in first.splitlines())
    # the keepalived exporter's names, which keepalived dashboards query, with live values
    assert 'keepalived_vrrp_state{iname="VI_1",intf="eth0",vrid="51",ip_address="192.0.2.100"} 2' in first.splitlines()
    assert "keepalived_up 1" in first.splitlines()
    wait_until(lambda: sent(scrape()) > sent(first), 3, 0.05, message="adverts_tx did not grow between scrapes")
    assert abs(sent(scrape()) - node_a.instance("VI_1")["stats"]["adverts_tx"]) <= 2
    # only /metrics is served
    assert a.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9101/"]).stdout == "404"
    # a reload cannot move the endpoint: it says so and keeps serving where it was
    node_a.global_kw["metrics_listen"] = "127.0.0.1:9102"
    node_a.write_config()
    node_a.send_signal(signal.SIGHUP)
    wait_until(lambda: node_a.log_events("reload_needs_restart"), 5, 0.02, message="no reload_needs_restart")
    assert node_a.log_events("reload_needs_restart")[0]["keys"] == ["metrics_listen"]
    assert "vrrpd_instance_state{" in scrape()
    assert node_a.state("VI_1") == "MASTER"
