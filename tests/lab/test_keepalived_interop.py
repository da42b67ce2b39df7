"""vrrpd and keepalived 2.2 (Debian) on one link, each in both roles: election, failover, failback."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from labkit.keepalived import keepalived_conf, keepalived_log, start_keepalived
from labkit.netns import wait_until
from labkit.vrrpd_node import VrrpdNode
from vrrpd.core.fsm import master_down_interval_cs

pytestmark = pytest.mark.lab


@dataclass(frozen=True)
class Mode:
    name: str
    version: int
    interval: float
    vip: str
    unicast: bool = False
    auth: tuple[str, str] | None = None  # VRRPv2 (auth_type, auth_pass), RFC 2338

    @property
    def vip_addr(self) -> str:
        return self.vip.split("/")[0]

    @property
    def mdi(self) -> float:
        return master_down_interval_cs(100, round(self.interval * 100), self.version) / 100


MODES = [
    Mode("v3-ipv4", 3, 0.2, "192.0.2.100/24"),
    Mode("v3-unicast", 3, 0.2, "192.0.2.100/24", unicast=True),
    Mode("v2-ipv4", 2, 1.0, "192.0.2.100/24"),
    Mode("v3-ipv6", 3, 0.2, "2001:db8::100/64"),
    Mode("v2-pass", 2, 1.0, "192.0.2.100/24", auth=("PASS", "s3cret")),
    Mode("v2-ah", 2, 1.0, "192.0.2.100/24", auth=("AH", "s3cret")),
]


def spec(mode: Mode, priority: int, me, peer) -> dict:
    inst = {"name": "VI_1", "interface": "eth0", "vrid": 51, "priority": priority, "version": mode.version,
            "advert_interval": mode.interval, "virtual_ipaddress": [mode.vip]}
    if mode.unicast:
        inst |= {"unicast_src": str(me.ipv4), "unicast_peers": [str(peer.ipv4)]}
    if mode.auth:
        inst |= {"auth_type": mode.auth[0], "auth_pass": mode.auth[1]}
    return inst


def start(impl: str, host, peer, mode: Mode, priority: int, workdir):
    inst = spec(mode, priority, host, peer)
    if impl == "vrrpd":
        return VrrpdNode(host, workdir, [inst]).start()
    ka = {k: v for k, v in inst.items() if k != "version"}
    return start_keepalived(host, keepalived_conf([ka], router_id=host.name, vrrp_version=mode.version), workdir / f"ka-{host.name}")


def diagnostics(*daemons) -> str:
    out = []
    for d in daemons:
        out.append(d.log_text()[-2500:] if isinstance(d, VrrpdNode) else keepalived_log(d)[-2500:])
    return "\n----\n".join(out)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("master_impl", ["vrrpd", "keepalived"])
def test_interop_failover_and_failback(lab, tmp_path, mode: Mode, master_impl: str):
    backup_impl = "keepalived" if master_impl == "vrrpd" else "vrrpd"
    net = lab(2)
    a, b = net.hosts
    backup = start(backup_impl, b, a, mode, 100, tmp_path)
    master = start(master_impl, a, b, mode, 150, tmp_path)
    vip = mode.vip_addr

    def only_on(host):
        return host.has_address(vip) and not (b if host is a else a).has_address(vip)

    wait_until(lambda: only_on(a), 5 + 4 * mode.mdi, message=f"{master_impl} never sole master\n{diagnostics(master, backup)}")
    vrrpd_node = master if master_impl == "vrrpd" else backup
    wait_until(lambda: (vrrpd_node.instance("VI_1") or {}).get("stats", {}).get("adverts_tx" if master_impl == "vrrpd" else "adverts_rx", 0) >= 2,
               5 * mode.interval + 3, message=f"no adverts counted\n{diagnostics(master, backup)}")
    if master_impl == "keepalived":
        status = vrrpd_node.instance("VI_1")
        assert status["state"] == "BACKUP"
        assert status["stats"]["checksum_errors"] == 0 and status["stats"]["address_list_errors"] == 0
        assert status["stats"]["auth_errors"] == 0

    # failover: the master's link goes down, the other implementation takes the VIP
    a.set_link(False)
    wait_until(lambda: b.has_address(vip), mode.mdi + 2, message=f"{backup_impl} did not take over\n{diagnostics(master, backup)}")
    # failback: the link returns, the higher priority preempts and the backup lets go
    a.set_link(True)
    wait_until(lambda: only_on(a), 3 * mode.mdi + 5, message=f"no failback to {master_impl}\n{diagnostics(master, backup)}")
    if backup_impl == "vrrpd":
        wait_until(lambda: backup.state("VI_1") == "BACKUP", 3)


@pytest.mark.parametrize("mode", [m for m in MODES if not m.unicast], ids=lambda m: m.name)
def test_tshark_decodes_vrrpd_adverts_as_valid_vrrp(lab, tmp_path, mode: Mode):
    net = lab(2)
    a, b = net.hosts
    node = VrrpdNode(a, tmp_path, [spec(mode, 150, a, b)]).start()
    capture = net.capture(b, "ip proto 112 or ip proto 51 or ip6 proto 112")
    try:
        wait_until(lambda: node.state("VI_1") == "MASTER", 10, message=node.log_text()[-2000:])
        wait_until(lambda: len(capture.decode(["vrrp.version"], "vrrp")) >= 2, 5 * mode.interval + 3)
    finally:
        capture.stop()
    rows = capture.decode(["vrrp.version", "vrrp.type", "vrrp.virt_rtr_id", "vrrp.prio", "vrrp.checksum.status"], "vrrp")
    assert rows, "tshark saw no VRRP"
    for row in rows:
        assert row["vrrp.version"] == str(mode.version)
        assert row["vrrp.type"] == "1" and row["vrrp.virt_rtr_id"] == "51" and row["vrrp.prio"] == "150"
        assert row["vrrp.checksum.status"] == "1", f"tshark says bad checksum: {row}"


@pytest.mark.parametrize("kind", ["PASS", "AH"])
def test_a_wrong_password_from_keepalived_is_dropped_and_counted(lab, tmp_path, kind: str):
    # keepalived master with one password, vrrpd with another: vrrpd must not believe it (it takes the VIP,
    # as keepalived would) and says why in auth_failure.
    mode = Mode(f"v2-{kind}", 2, 1.0, "192.0.2.100/24", auth=(kind, "right"))
    net = lab(2)
    a, b = net.hosts
    keepalived = start("keepalived", a, b, mode, 150, tmp_path)
    wait_until(lambda: a.has_address(mode.vip_addr), 5 + 4 * mode.mdi, message=keepalived_log(keepalived)[-2000:])
    wrong = Mode(mode.name, 2, 1.0, mode.vip, auth=(kind, "wrong"))
    node = start("vrrpd", b, a, wrong, 100, tmp_path)
    wait_until(lambda: (node.instance("VI_1") or {}).get("stats", {}).get("auth_failure", 0) >= 2, 10,
               message=node.log_text()[-2000:])
    wait_until(lambda: node.state("VI_1") == "MASTER", mode.mdi + 3, message=node.log_text()[-2000:])
    stats = node.instance("VI_1")["stats"]
    assert stats["adverts_rx"] == 0 and stats["auth_errors"] == stats["auth_failure"]
