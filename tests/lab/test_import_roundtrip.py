"""Migration proof: a keepalived.conf pair run by keepalived, and its `vrrpd import-keepalived` conversion run
by vrrpd, elect and fail over the same way on the same lab."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from labkit.keepalived import keepalived_log, start_keepalived
from labkit.netns import wait_until
from labkit.vrrpd_node import VrrpdNode

pytestmark = pytest.mark.lab

VIP_A, VIP_B = "192.0.2.100", "192.0.2.101"


def keepalived_text(me: str, flag: str) -> str:
    prio = {"a": (150, 100), "b": (100, 150)}[me]
    blocks = [f"global_defs {{\n    router_id node_{me}\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n"
              "    script_user root\n    enable_script_security\n}\n",
              f'vrrp_script chk_service {{\n    script "/usr/bin/test ! -e {flag}"\n    interval 1\n'
              "    fall 1\n    rise 1\n    weight -60\n}\n"]
    for name, vrid, vip, p in (("VI_A", 51, VIP_A, prio[0]), ("VI_B", 52, VIP_B, prio[1])):
        blocks.append(
            f"vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n"
            f"    priority {p}\n    advert_int 0.2\n"
            f"    virtual_ipaddress {{\n        {vip}/24\n    }}\n    track_script {{\n        chk_service\n    }}\n}}\n"
        )
    return "\n".join(blocks)


def holders(hosts) -> tuple[str, str]:
    def who(vip):
        found = [h.name for h in hosts if h.has_address(vip)]
        return ",".join(found) or "-"

    return who(VIP_A), who(VIP_B)


def scenario(net, flag) -> list[tuple[str, str]]:
    """Steady state, a's service failing, recovering, a's link down: who holds each VIP after each step."""
    a, b = net.hosts
    seen = []

    def settle(expected, timeout, what):
        wait_until(lambda: holders(net.hosts) == expected, timeout, message=f"{what}: {holders(net.hosts)} != {expected}")
        seen.append(expected)

    settle(("a", "b"), 15, "start")
    flag.touch()
    settle(("b", "b"), 10, "a's check failing")
    flag.unlink()
    settle(("a", "b"), 10, "a's check recovered")
    a.set_link(False)
    settle(("b", "b"), 10, "a's link down")
    a.set_link(True)
    settle(("a", "b"), 10, "a's link back")
    return seen


def test_keepalived_conf_and_its_conversion_behave_the_same(lab, tmp_path):
    texts = {}
    for run in ("keepalived", "vrrpd"):
        net = lab(2)
        flag = tmp_path / f"{run}-a-unhealthy"
        procs = {}
        for host in net.hosts:
            conf = keepalived_text(host.name, str(flag if host.name == "a" else tmp_path / "never"))
            if run == "keepalived":
                procs[host.name] = start_keepalived(host, conf, tmp_path / f"ka-{host.name}")
                continue
            src = tmp_path / f"{host.name}.keepalived.conf"
            src.write_text(conf)
            converted = subprocess.run([sys.executable, "-m", "vrrpd", "import-keepalived", str(src)],
                                       capture_output=True, text=True, check=True).stdout
            texts[host.name] = converted
            data = tomllib.loads(converted)
            procs[host.name] = VrrpdNode(host, tmp_path / "vrrpd", data["instance"], scripts=data.get("script", []),
                                         sync_groups=data.get("sync_group", [])).start()
        try:
            outcome = scenario(net, flag)
        except AssertionError as exc:
            logs = [keepalived_log(p) if run == "keepalived" else p.log_text() for p in procs.values()]
            raise AssertionError(f"{run}: {exc}\n" + "\n---\n".join(x[-2000:] for x in logs)) from None
        net.close()
        if run == "keepalived":
            expected = outcome
    assert outcome == expected
    assert "priority = 150" in texts["a"] and "priority = 150" in texts["b"]


def parity_keepalived_text(me: str, priority: int, flag, fifo) -> str:
    """A VRRPv2 keepalived.conf with what operators bring from keepalived (issue 13)."""
    return f"""global_defs {{
    router_id node_{me}
    vrrp_version 2
    vrrp_garp_master_delay 1
    notify_fifo {fifo}
    script_user root
    enable_script_security
}}
track_file down_{me} {{
    file {flag}
    weight 0
    init_file 0
}}
vrrp_instance VI_M {{
    state BACKUP
    interface eth0
    virtual_router_id 61
    priority {priority}
    advert_int 1
    use_vmac
    authentication {{
        auth_type PASS
        auth_pass s3cret
    }}
    garp_master_repeat 2
    garp_master_refresh 30
    virtual_ipaddress {{
        192.0.2.110/24
    }}
    virtual_ipaddress_excluded {{
        2001:db8::110/64
    }}
    virtual_routes {{
        198.51.100.0/24 via 192.0.2.254 dev eth0
    }}
    track_file {{
        down_{me}
    }}
}}
"""


def test_a_node_moved_from_keepalived_works_beside_the_one_not_moved_yet(lab, tmp_path):
    # The migration the issue is about: node b runs the importer's conversion of its keepalived.conf (VRRPv2 with
    # PASS, use_vmac, track_file, excluded addresses, virtual routes, notify_fifo), node a still runs keepalived.
    net = lab(2)
    a, b = net.hosts
    flags = {h.name: tmp_path / f"{h.name}.down" for h in net.hosts}
    ka = start_keepalived(a, parity_keepalived_text("a", 150, flags["a"], tmp_path / "a.fifo"), tmp_path / "ka")
    src = tmp_path / "b.keepalived.conf"
    src.write_text(parity_keepalived_text("b", 100, flags["b"], tmp_path / "b.fifo"))
    converted = subprocess.run([sys.executable, "-m", "vrrpd", "import-keepalived", str(src)],
                               capture_output=True, text=True, check=True).stdout
    lost = [line.split("not carried:", 1)[1].split()[0] for line in converted.splitlines() if "not carried:" in line]
    assert not set(lost) & {"vrrp_garp_master_delay", "notify_fifo", "track_file", "use_vmac", "authentication",
                            "garp_master_repeat", "garp_master_refresh", "virtual_ipaddress_excluded",
                            "virtual_routes"}, converted  # only script_user / enable_script_security are lost
    data = tomllib.loads(converted)
    node = VrrpdNode(b, tmp_path / "vrrpd", data["instance"], tables={"track_file": data["track_file"]},
                     global_kw={k: v for k, v in data["global"].items() if k != "router_id"}).start()

    def diagnostics() -> str:
        return keepalived_log(ka)[-1500:] + "\n----\n" + node.log_text()[-1500:]

    wait_until(lambda: a.has_address("192.0.2.110", "vrrp.61") and node.state("VI_M") == "BACKUP", 15,
               message=diagnostics())
    wait_until(lambda: node.instance("VI_M")["stats"]["adverts_rx"] >= 2, 5, message=diagnostics())
    assert node.instance("VI_M")["stats"]["auth_errors"] == 0  # the PASS adverts are heard both ways
    flags["a"].write_text("1\n")  # keepalived's track_file says FAULT: the moved node takes over
    wait_until(lambda: node.state("VI_M") == "MASTER" and b.has_address("192.0.2.110", "vrrp.61")
               and b.has_address("2001:db8::110", "vrrp.61"), 10, message=diagnostics())
    wait_until(lambda: "198.51.100.0/24 via 192.0.2.254" in b.run(["ip", "route"]).stdout, 5)
    assert not a.has_address("192.0.2.110", "vrrp.61")
    flags["a"].write_text("0\n")  # and hands the VIPs back
    wait_until(lambda: a.has_address("192.0.2.110", "vrrp.61") and node.state("VI_M") == "BACKUP", 10,
               message=diagnostics())
    assert "198.51.100.0/24" not in b.run(["ip", "route"]).stdout
