"""The product as an operator installs it: the packages in two systemd hosts, set up from their own samples.

node-a (192.0.2.1) and node-b (192.0.2.2) are Debian 12 containers (labkit.systemd_host) on the lab's link;
each gets the .debs with `apt install`, then what README's install section tells an operator to do: copy
the installed samples to /etc (vrrpd's unchanged, csserver's with `[store] url` pointed at PostgreSQL), start
the units, check `vrrpd status`. PostgreSQL runs on db (192.0.2.4, labkit.pg_host), a client on 192.0.2.3.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from labkit.netns import Host, Lab
from labkit.pair import NODES, VI, sample, sample_cluster, sample_vip
from labkit.pg_host import LabPostgres
from labkit.systemd_host import SystemdHost, wait_explained
from vrrpd.core.fsm import master_down_interval_cs, skew_time_cs

HOSTS = ["node-a", "node-b", "client", "db"]
UNITS = ("vrrpd.service", "csserver.service")
DEBS_INSIDE = "/root/debs"
INSTALL_TIMEOUT_S = 180


def other(node: str) -> str:
    return "b" if node == "a" else "a"


@dataclass
class InstalledPair:
    """A running pair of systemd hosts; `InstalledPair.start(lab, tree, debs)` builds it, the lab tears it down."""

    lab: Lab
    debs: list[Path]
    pg: LabPostgres
    nodes: dict[str, SystemdHost] = field(default_factory=dict)
    after_install: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # node -> unit -> state

    @classmethod
    def start(cls, lab: Lab, tree: Path, debs: list[Path]) -> InstalledPair:
        pair = cls(lab, debs, LabPostgres(lab.host("db")).start())
        for node in NODES:
            pair.nodes[node] = SystemdHost(lab.host(f"node-{node}"), tree).boot()
        for node in NODES:
            pair.install(node, debs)
            pair.after_install[node] = {unit: pair.unit_state(node, unit) for unit in UNITS}
        for node in NODES:
            pair.configure(node)
        for node in NODES:  # one transaction: systemd orders the two (csserver.service is After=vrrpd.service)
            pair.nodes[node].systemctl("restart", "csserver", "vrrpd")
        pair.wait_steady()
        return pair

    # ---- what the operator does ----------------------------------------------------------------------

    def install(self, node: str, debs: list[Path]) -> str:
        """`apt install ./FILE.deb ...` in the node, as README's install section says; its output."""
        for deb in debs:
            self.nodes[node].put(f"{DEBS_INSIDE}/{deb.name}", deb.read_bytes())
        paths = [f"{DEBS_INSIDE}/{deb.name}" for deb in debs]
        return self.nodes[node].run(["apt", "install", "-y", *paths], timeout=INSTALL_TIMEOUT_S).stdout

    def configure(self, node: str) -> None:
        host = self.nodes[node]
        host.run(["cp", f"/usr/share/doc/vrrpd/examples/node-{node}.toml", "/etc/vrrpd/vrrpd.toml"])
        text = host.read(f"/usr/share/doc/csserver/examples/csserver-{node}.toml")
        text, count = re.subn(r'(?m)^url = ".*"$', f'url = "{self.pg.url}"', text)
        assert count == 1, "the csserver sample should set [store] url once"
        host.write("/etc/csserver/csserver.toml", text)

    # ---- observation ---------------------------------------------------------------------------------

    @property
    def client(self) -> Host:
        return self.lab.host("client")

    @property
    def cluster(self) -> dict[str, str]:
        return sample_cluster()

    def vip(self, node: str) -> str:
        return sample_vip(node)

    def instance_config(self, node: str, name: str) -> dict:
        return next(i for i in sample(f"node-{node}.toml")["instance"] if i["name"] == name)

    def skew_time(self, node: str, name: str) -> float:
        """Skew_Time of `node` as backup of instance `name`, in seconds (RFC 5798 6.1)."""
        inst = self.instance_config(node, name)
        return skew_time_cs(inst["priority"], round(inst["advert_interval"] * 100)) / 100

    def master_down_interval(self, node: str, name: str) -> float:
        inst = self.instance_config(node, name)
        return master_down_interval_cs(inst["priority"], round(inst["advert_interval"] * 100)) / 100

    def unit_state(self, node: str, unit: str) -> dict[str, str]:
        host = self.nodes[node]
        state = host.show(unit, "ActiveState", "SubState", "Result", "Type", "MainPID", "NRestarts")
        state["enabled"] = host.systemctl("is-enabled", unit, check=False).stdout.strip()
        return state

    def status(self, node: str) -> dict | None:
        """`vrrpd status --json` in the node; None when no daemon answers."""
        host = self.nodes[node]
        if not host.running:
            return None
        proc = host.run(["vrrpd", "status", "--json"], check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def instance(self, node: str, name: str) -> dict | None:
        status = self.status(node)
        return next((i for i in status["instances"] if i["name"] == name), None) if status else None

    def state(self, node: str, name: str) -> str | None:
        inst = self.instance(node, name)
        return inst["state"] if inst else None

    def holders(self, vip: str) -> list[str]:
        return [n for n in NODES if self.lab.host(f"node-{n}").has_address(vip)]

    def steady(self) -> bool:
        """Each node master of its own VIP and backup of the other's, each VIP on exactly its master."""
        for node in NODES:
            states = {inst["name"]: inst["state"] for inst in (self.status(node) or {}).get("instances", [])}
            if states != {VI[node]: "MASTER", VI[other(node)]: "BACKUP"}:
                return False
            if self.holders(self.vip(node)) != [node]:
                return False
        return True

    def wait_steady(self, timeout: float = 40.0) -> None:
        wait_explained(self.steady, timeout, 0.2, lambda: f"the pair never settled:\n{self.describe()}")

    def describe(self) -> str:
        lines = []
        for node, host in self.nodes.items():
            if not host.running:
                lines.append(f"node-{node}: powered off")
                continue
            states = {i["name"]: i["state"] for i in (self.status(node) or {}).get("instances", [])}
            units = {u: self.unit_state(node, u)["ActiveState"] for u in UNITS}
            lines.append(f"node-{node}: {units} vrrpd {states}, holds "
                         f"{[v for v in self.cluster.values() if self.lab.host(f'node-{node}').has_address(v)]}")
            lines.append(host.run(["journalctl", "-n", "15", "--no-pager", "-u", "vrrpd", "-u", "csserver"],
                                  check=False).stdout)
        return "\n".join(lines)
