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


def _routes(host, *args: str) -> str:
    return host.run(["ip", *args]).stdout


def test_virtual_routes_rules_and_excluded_addresses_come_and_go_with_the_vips(lab, tmp_path):
    net = lab(2)
    a, b = net.hosts
    routes = [{"to": "198.51.100.0/24", "via": "192.0.2.254"},
              {"to": "203.0.113.0/24", "src": VIP, "table": 100},
              {"to": "198.51.100.128/25", "type": "blackhole", "table": 100},
              {"to": "203.0.113.128/25", "via": ["192.0.2.252", "192.0.2.253"]}]  # multipath
    rules = [{"from": f"{VIP}/32", "table": 100, "priority": 1000}]
    node = lone_master(a, tmp_path, virtual_routes=routes, virtual_rules=rules,
                       virtual_ipaddress_excluded=["192.0.2.200/24", "2001:db8::200/64"])

    def installed() -> bool:
        main = _routes(a, "route", "show")
        return ("198.51.100.0/24 via 192.0.2.254" in main
                and "nexthop via 192.0.2.252" in main and "nexthop via 192.0.2.253" in main
                and "203.0.113.0/24 dev eth0" in _routes(a, "route", "show", "table", "100")
                and "blackhole 198.51.100.128/25" in _routes(a, "route", "show", "table", "100")
                and f"1000:\tfrom {VIP} lookup 100" in _routes(a, "rule", "show"))

    wait_until(installed, 10, message=node.log_text()[-2000:])
    assert "src 192.0.2.100" in _routes(a, "route", "show", "table", "100")
    assert a.has_address("192.0.2.200") and a.has_address("2001:db8::200")
    # Leaving MASTER (its link lost) takes all of it away, and the routes go before the addresses they use.
    a.set_link(False)  # carrier lost: the kernel keeps the routes (linkdown); vrrpd must take them away
    wait_until(lambda: node.state("VI_1") == "FAULT", 5)
    def removed() -> bool:
        routes = _routes(a, "route", "show") + _routes(a, "route", "show", "table", "100")
        return "198.51.100." not in routes and "203.0.113." not in routes and "lookup 100" not in _routes(a, "rule", "show")

    wait_until(removed, 5, message=node.log_text()[-2000:])
    assert not a.has_address("192.0.2.200") and not a.has_address("2001:db8::200")
    stats = node.instance("VI_1")["stats"]
    assert stats["route_add_errors"] == stats["route_remove_errors"] == 0


def test_unicast_ttl_goes_on_the_wire_and_mcast_src_ip_is_the_source(lab, tmp_path):
    net = lab(3)
    a, b, c = net.hosts

    def inst(me, peer, priority, **kw):
        return {"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": priority, "advert_interval": 0.1,
                "virtual_ipaddress": [f"{VIP}/24"], **kw}

    unicast = {"unicast_ttl": 64}
    capture = net.capture(b, "ip proto 112")
    try:
        master = VrrpdNode(a, tmp_path, [inst(a, b, 200, unicast_src=str(a.ipv4), unicast_peers=[str(b.ipv4)],
                                              **unicast)]).start()
        backup = VrrpdNode(b, tmp_path, [inst(b, a, 100, unicast_src=str(b.ipv4), unicast_peers=[str(a.ipv4)],
                                              **unicast)]).start()
        wait_until(lambda: (backup.instance("VI_1") or {}).get("stats", {}).get("adverts_rx", 0) >= 3, 10,
                   message=master.log_text()[-1500:] + backup.log_text()[-1500:])
        assert backup.state("VI_1") == "BACKUP"
        # What b's socket heard, dumpcap may not have handed to the file yet: wait for it there too.
        wait_until(lambda: capture.decode(["ip.ttl"], f"ip.src == {a.ipv4}"), 5, 0.05,
                   message="the capture on b never saw a's adverts")
    finally:
        capture.stop()
    ttls = {row["ip.ttl"] for row in capture.decode(["ip.ttl"], f"ip.src == {a.ipv4}")}
    assert ttls == {"64"}
    # mcast_src_ip: multicast adverts from a second address of the interface, not the primary
    c.run(["ip", "address", "add", "192.0.2.50/24", "dev", "eth0"])
    other = VrrpdNode(c, tmp_path, [{**inst(c, a, 100, mcast_src_ip="192.0.2.50"), "vrid": 52,
                                     "virtual_ipaddress": ["192.0.2.102/24"]}]).start()
    wait_until(lambda: other.state("VI_1") == "MASTER", 10, message=other.log_text()[-1500:])
    capture = net.capture(a, "ip proto 112 and ip dst 224.0.0.18")
    try:
        wait_until(lambda: capture.decode(["ip.src"], "vrrp.virt_rtr_id == 52"), 5)
    finally:
        capture.stop()
    assert {row["ip.src"] for row in capture.decode(["ip.src"], "vrrp.virt_rtr_id == 52")} == {"192.0.2.50"}


def _fifo_reader(path):
    """Make the FIFO and hold it open, as a reader that was there first; returns a function giving the lines."""
    import os

    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    got: list[str] = []
    buffer = bytearray()

    def read() -> list[str]:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            buffer.extend(chunk)
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            got.append(line.decode())
        return list(got)

    read.close = lambda: os.close(fd)  # type: ignore[attr-defined]
    return read


@pytest.mark.parametrize("impl", ["vrrpd", "keepalived"])
def test_notify_fifo_lines_are_keepalived_lines_in_keepalived_order(lab, tmp_path, impl):
    # The same life (start, take over alone, stop) told by each implementation to a FIFO reader: vrrpd must
    # write what keepalived writes, so readers written for keepalived work unchanged.
    from labkit.keepalived import keepalived_conf, start_keepalived

    net = lab(1)
    [a] = net.hosts
    path = tmp_path / "notify.fifo"
    read = _fifo_reader(path)
    inst = {"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 100, "advert_interval": 0.2,
            "virtual_ipaddress": [f"{VIP}/24"]}
    try:
        if impl == "vrrpd":
            node = VrrpdNode(a, tmp_path, [inst], global_kw={"notify_fifo": str(path)}).start()
            wait_until(lambda: node.state("VI_1") == "MASTER", 10, message=node.log_text()[-2000:])
            node.stop()
        else:
            proc = start_keepalived(a, keepalived_conf([inst], global_defs={"notify_fifo": str(path)}),
                                    tmp_path / "ka")
            wait_until(lambda: a.has_address(VIP), 10)
            proc.terminate()
            proc.wait(10)
        wait_until(lambda: len(read()) >= 3, 5, message=str(read()))
        assert read() == ['INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" MASTER 100', 'INSTANCE "VI_1" STOP 100']
    finally:
        read.close()


def test_track_file_moves_the_priority_and_weight_zero_means_fault_as_it_is_written(lab, tmp_path):
    net = lab(1)
    [a] = net.hosts
    weight, fault = tmp_path / "weight", tmp_path / "fault"
    node = VrrpdNode(a, tmp_path, [{"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 100,
                                    "advert_interval": 0.1, "virtual_ipaddress": [f"{VIP}/24"],
                                    "track_file": [{"name": "w"}, {"name": "f", "weight": 0}]}],
                     tables={"track_file": [{"name": "w", "file": str(weight), "weight": 2},
                                            {"name": "f", "file": str(fault), "init_file": 0}]}).start()
    wait_until(lambda: node.state("VI_1") == "MASTER", 10, message=node.log_text()[-2000:])
    assert fault.read_text().strip() == "0"  # init_file made it
    weight.write_text("15\n")
    wait_until(lambda: node.instance("VI_1")["effective_priority"] == 130, 5)
    assert node.instance("VI_1")["track"]["files"] == {"w": 15, "f": 0}
    tmp = tmp_path / "fault.new"
    tmp.write_text("1\n")
    tmp.rename(fault)  # a careful writer's rename is seen too
    wait_until(lambda: node.state("VI_1") == "FAULT", 5)
    assert not a.has_address(VIP)
    fault.write_text("0\n")
    wait_until(lambda: node.state("VI_1") == "MASTER", 5)


def test_track_process_follows_a_process_through_the_kernels_process_events(lab, tmp_path):
    import secrets
    import shutil
    import subprocess

    net = lab(1)
    [a] = net.hosts
    name = f"trk{secrets.token_hex(4)}"  # a process name nobody else on this machine runs
    program = tmp_path / name
    shutil.copy("/bin/sleep", program)
    node = VrrpdNode(a, tmp_path, [{"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 100,
                                    "advert_interval": 0.1, "virtual_ipaddress": [f"{VIP}/24"],
                                    "track_process": [{"name": "p", "weight": 0}]}],
                     tables={"track_process": [{"name": "p", "process": name, "quorum": 2, "delay": 0.3}]}).start()
    started: list[subprocess.Popen] = []
    try:
        wait_until(lambda: node.state("VI_1") == "FAULT", 10, message=node.log_text()[-2000:])
        started.append(subprocess.Popen([str(program), "60"]))
        started.append(subprocess.Popen([str(program), "60"]))
        wait_until(lambda: node.state("VI_1") == "MASTER", 10, message=node.log_text()[-2000:])
        started[0].kill()
        started[0].wait()
        wait_until(lambda: node.state("VI_1") == "FAULT", 5, message=node.log_text()[-2000:])
        events = [e for e in node.log_events("process_status")]
        assert [e["up"] for e in events] == [False, True, False]
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _connects(client, address: str, port: int) -> bool:
    """A TCP connection from `client` (a lab host) to address:port, within a second."""
    import socket

    from labkit.netns import netns_socket

    sock = netns_socket(client, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


@pytest.mark.parametrize("accept_mode", [False, True])
def test_accept_mode_decides_whether_the_master_answers_traffic_to_the_vip(lab, tmp_path, accept_mode):
    net = lab(2)
    a, b = net.hosts
    import socket

    from labkit.netns import netns_socket

    a.run(["nft", "add", "table", "inet", "someone_else"])  # a table of another program, never to be touched
    server = netns_socket(a, socket.AF_INET, socket.SOCK_STREAM)  # a service on every address of a
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 7777))
    server.listen(16)
    node = lone_master(a, tmp_path, accept_mode=accept_mode)
    wait_until(lambda: node.state("VI_1") == "MASTER" and a.has_address(VIP), 10, message=node.log_text()[-2000:])
    tables = a.run(["nft", "list", "tables"]).stdout
    assert ("table inet vrrpd_51_ipv4_eth0" in tables) is (not accept_mode)
    try:
        if accept_mode:
            assert _connects(b, VIP, 7777)
        else:
            assert not _connects(b, VIP, 7777)  # RFC 5798 6.4.3: a non-owner master does not accept it ...
            assert _connects(b, str(a.ipv4), 7777)  # ... while its own address answers as before
            assert a.mac in b.run(["ip", "neigh", "show", VIP]).stdout  # and ARP for the VIP is still answered
    finally:
        server.close()
    node.stop()
    tables = a.run(["nft", "list", "tables"]).stdout
    assert "vrrpd_" not in tables and "table inet someone_else" in tables
