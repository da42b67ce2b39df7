"""The product as an operator deploys it, in a lab: a dual-master pair plus a client host.

node-a and node-b each run vrrpd from conf/node-{a,b}.toml and csserver from conf/csserver-{a,b}.toml, the
very samples the README explains; only what a lab must change is changed: the control socket and log paths
live in the lab's directory, logs are JSON, both csservers share one store (a single SQLite file on the
shared filesystem by default, as two hosts would share one PostgreSQL), and `advert_interval` may be
shortened. Lab host indexes give node-a 192.0.2.1 and node-b 192.0.2.2, the addresses the samples name.

Used by `make demo` (tests/lab/demo.py), the csserver failover scenarios, chaos and the benchmarks.
"""

from __future__ import annotations

import os
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from labkit.csserver_node import CsserverNode
from labkit.netns import Host, Lab, wait_until
from daemonkit.tomlwrite import dump_tables
from labkit.vrrpd_node import REPO, VrrpdNode

CONF = REPO / "conf"
NODES = ("a", "b")
VI = {"a": "VI_A", "b": "VI_B"}  # the instance each node is master of
ALIAS = {"a": "cs-a", "b": "cs-b"}
LAB_GLOBAL = ("router_id", "control_socket", "log_format", "log_level")  # VrrpdNode sets these itself


def sample(name: str) -> dict:
    with open(CONF / name, "rb") as fh:
        return tomllib.load(fh)


def sample_cluster() -> dict[str, str]:
    """alias -> VIP, from the csserver sample (what a client is configured with)."""
    return dict(sample("csserver-a.toml")["cluster"]["aliases"])


def sample_vip(node: str) -> str:
    """The VIP `node` is master of, as the samples name it."""
    return sample_cluster()[ALIAS[node]]


@dataclass
class Pair:
    """A running dual-master pair; `Pair.start(lab_hosts)` builds it, the lab tears it down."""

    lab: Lab
    store_url: str
    advert_interval: float | None = None  # None: as in the samples
    preempt_delay: float | None = None  # None: as in the samples
    vrrpd: dict[str, VrrpdNode] = field(default_factory=dict)
    cs: dict[str, CsserverNode] = field(default_factory=dict)
    crashed: set[str] = field(default_factory=set)

    # ---- construction --------------------------------------------------------------------------------

    @classmethod
    def start(cls, lab: Lab, *, store_url: str | None = None, advert_interval: float | None = None,
              preempt_delay: float | None = None, wait: bool = True) -> Pair:
        """Both nodes up (csserver first, so the health checks pass from the start); with `wait`, until each
        node is master of its own VIP and backup of the other's."""
        pair = cls(lab, store_url or f"sqlite://{lab.tmpdir}/contexts.db", advert_interval, preempt_delay)
        for node in NODES:
            pair.start_csserver(node)
        for node in NODES:
            pair.vrrpd[node] = pair._vrrpd_node(node).start()
        if wait:
            pair.wait_steady()
        return pair

    @property
    def workdir(self) -> Path:
        """Configs and logs of both nodes: the lab's own directory, removed with it."""
        return self.lab.tmpdir

    def host(self, node: str) -> Host:
        return self.lab.host(f"node-{node}")

    @property
    def client(self) -> Host:
        return self.lab.host("client")

    @property
    def cluster(self) -> dict[str, str]:
        return sample_cluster()

    @property
    def port(self) -> int:
        return int(sample("csserver-a.toml")["node"]["listen"].rsplit(":", 1)[1])

    def vip(self, node: str) -> str:
        return sample_vip(node)

    def _vrrpd_node(self, node: str) -> VrrpdNode:
        conf = sample(f"node-{node}.toml")
        instances = []
        for inst in conf["instance"]:
            inst = dict(inst)
            if self.advert_interval is not None:
                inst["advert_interval"] = self.advert_interval
            if self.preempt_delay is not None and "preempt_delay" in inst:
                inst["preempt_delay"] = self.preempt_delay
            instances.append(inst)
        global_kw = {k: v for k, v in conf.get("global", {}).items() if k not in LAB_GLOBAL}
        return VrrpdNode(self.host(node), self.workdir, instances, conf.get("script", []),
                         conf.get("sync_group", []), global_kw)

    def csserver_config(self, node: str) -> str:
        conf = sample(f"csserver-{node}.toml")
        conf["node"]["log_format"] = "json"
        conf["store"]["url"] = self.node_store_url(node)
        return dump_tables(conf)

    def node_store_url(self, node: str) -> str:
        """The store URL `node`'s csserver is given: the one both share."""
        return self.store_url

    def start_csserver(self, node: str) -> CsserverNode:
        self.cs[node] = CsserverNode.start(self.host(node), self.workdir, self.csserver_config(node))
        return self.cs[node]

    # ---- observation ---------------------------------------------------------------------------------

    def holders(self, vip: str) -> list[str]:
        """The nodes on the network that hold `vip`: a crashed node cut off by crash() holds nothing, even
        though the address its killed vrrpd never removed is still on its eth0 (recover() clears it)."""
        return [n for n in NODES if n not in self.crashed and self.host(n).has_address(vip)]

    def state(self, node: str, instance: str) -> str | None:
        return self.vrrpd[node].state(instance) if self.vrrpd[node].alive() else None

    def steady(self) -> bool:
        """Each node master of its own VIP, backup of the other's, each VIP on exactly its master."""
        for node, other in (("a", "b"), ("b", "a")):
            if self.state(node, VI[node]) != "MASTER" or self.state(node, VI[other]) != "BACKUP":
                return False
            if self.holders(self.vip(node)) != [node]:
                return False
        return True

    def wait_steady(self, timeout: float = 30.0) -> None:
        wait_until(self.steady, timeout, 0.05, message=f"the pair never settled:\n{self.describe()}")

    def describe(self) -> str:
        lines = []
        for node in NODES:
            states = {vi: self.state(node, vi) for vi in VI.values()}
            lines.append(f"node-{node}: vrrpd {states}, holds {[v for v in self.cluster.values() if self.host(node).has_address(v)]}")
        return "\n".join(lines)

    # ---- faults --------------------------------------------------------------------------------------

    def crash(self, node: str) -> float:
        """The node is lost: its link goes down and its vrrpd and csserver are SIGKILLed. Returns when."""
        when = time.monotonic()
        self.host(node).set_link(False)
        self.crashed.add(node)
        for proc in (self.vrrpd[node].proc, self.cs[node].proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        return when

    def recover(self, node: str) -> float:
        """The node boots again: vrrpd first (it removes the VIP a crash left behind, while the link is still
        down), then csserver, then the link returns. Returns when the link came up."""
        self.vrrpd[node].start()
        wait_until(lambda: self.vrrpd[node].status() is not None, 10, 0.02,
                   message=f"vrrpd on node-{node} did not come back\n{self.vrrpd[node].log_text()[-2000:]}")
        wait_until(lambda: not any(self.host(node).has_address(v) for v in self.cluster.values()), 5, 0.02,
                   message=f"node-{node} kept a stale VIP after restart")
        self.start_csserver(node)
        self.host(node).set_link(True)
        self.crashed.discard(node)
        return time.monotonic()


def lab_pg_url(url: str) -> str:
    """The test PostgreSQL (scripts/test-postgres.sh) as csserver in a lab namespace reaches it: through its
    unix socket, as the namespaces share the filesystem while 127.0.0.1 is each namespace's own. Takes and
    returns a postgresql:// URL (a query such as pg_schema's `options` is kept)."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    from psycopg.conninfo import conninfo_to_dict

    parts = urlsplit(url) if url.startswith(("postgresql:", "postgres:")) else None
    if parts is None:  # a key=value conninfo, as pg_schema() returns
        info = conninfo_to_dict(url)
        query = {k: v for k, v in info.items() if k not in ("user", "password", "dbname", "host", "hostaddr")}
        auth = quote(info.get("user", ""), safe="") + (f":{quote(info['password'], safe='')}" if info.get("password") else "")
        parts = urlsplit(f"postgresql://{auth}@x/{info.get('dbname', '')}?{urlencode(query, quote_via=quote)}")
    query = dict(parse_qsl(parts.query))
    base = os.environ.get("CSSERVER_TEST_PG_DIR", "/var/tmp/csserver-test-pg")
    query.update(host=f"{base}/run", port=str(parts.port or query.get("port") or 5432))
    netloc = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(("postgresql", netloc, parts.path, urlencode(query, quote_via=quote), ""))


def lab_for_pair() -> Lab:
    """node-a (192.0.2.1), node-b (192.0.2.2) and a client (192.0.2.3) on one bridge."""
    return Lab(3, ["node-a", "node-b", "client"])
