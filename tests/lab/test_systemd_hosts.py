"""Installed by apt, run by systemd (issue 10): the packages in two Debian 12 hosts with a real systemd.

One pair for the module (labkit.systemd_pair: booting two hosts and installing takes ~20 s once the root file
system is cached). The samples run as shipped: advert_interval 1 s, preempt_delay 3 s, so Skew_Time of node-b
(priority 100) for VI_A is 0.609 s and Master_Down_Interval 3.609 s. Each test starts from the pair steady and
leaves it steady, except the last two: one powers node-a off, the other removes the packages from node-b.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import rootfs
from labkit.netns import AddressWatcher, Lab, wait_until
from labkit.systemd_host import wait_explained
from labkit.systemd_pair import HOSTS, NODES, UNITS, InstalledPair
from tests.support import REPO, built_debs, require_program, require_root

pytestmark = pytest.mark.lab

MARGIN_S = 0.100  # the allowance on top of Skew_Time
EXTRA_VIP = "192.0.2.102"
WRITER_DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def installed():
    require_root("the systemd hosts need root (systemd-nspawn, network namespaces)")
    for program in ("systemd-nspawn", "debootstrap", "nsenter"):
        require_program(program)
    debs = list(built_debs())
    tree = rootfs.ensure(debs)
    lab = Lab(len(HOSTS), HOSTS)
    try:
        yield InstalledPair.start(lab, tree, debs)
    finally:
        lab.close()


@pytest.fixture
def pair(installed):
    """The module's pair, steady (each VIP on its master) as every test but the last two leaves it."""
    for node, host in installed.nodes.items():
        if not host.running:
            pytest.fail(f"node-{node} was powered off by an earlier test of this module")
    installed.wait_steady()
    return installed


def watch(pair: InstalledPair) -> dict[str, AddressWatcher]:
    return {node: AddressWatcher(pair.lab.host(f"node-{node}")).start() for node in NODES}


def longest_gap(watchers: dict[str, AddressWatcher], vip: str, since: float, holder: str) -> float:
    """The longest time after `since` during which no node held `vip` (held by `holder` at `since`)."""
    events = sorted((e.time, node, e.kind) for node, w in watchers.items() for e in w.events()
                    if e.address == vip and e.time >= since)
    holding, empty_since, longest = {holder}, None, 0.0
    for when, node, kind in events:
        (holding.add if kind == "add" else holding.discard)(node)
        if not holding and empty_since is None:
            empty_since = when
        elif holding and empty_since is not None:
            longest, empty_since = max(longest, when - empty_since), None
    assert empty_since is None, f"{vip} was left on no node"
    return longest


def sha256(pair: InstalledPair, node: str, path: str) -> str:
    return pair.nodes[node].run(["sha256sum", path]).stdout.split()[0]


# ---- install ---------------------------------------------------------------------------------------------

def test_apt_install_enables_both_units_and_leaves_them_stopped_until_configured(installed):
    for node in NODES:
        for unit in UNITS:
            state = installed.after_install[node][unit]
            # Skipped by the ExecCondition on the packaged all-comments config: not running, not failed.
            seen = (state["enabled"], state["ActiveState"], state["Result"])
            assert seen == ("enabled", "inactive", "exec-condition"), (node, unit, state)


def test_apt_install_puts_commands_docs_user_and_state_where_an_operator_looks(installed):
    host = installed.nodes["a"]
    found = host.run(["sh", "-c", "for c in vrrpd csserver; do command -v $c; done"]).stdout.split()
    assert found == ["/usr/bin/vrrpd", "/usr/bin/csserver"]
    assert host.run(["vrrpd", "--version"]).stdout.strip() == "vrrpd 0.1.0"
    for page in ("vrrpd.8", "vrrpd.toml.5", "csserver.8", "csserver.toml.5"):
        name, section = page.rsplit(".", 1)
        assert host.run(["man", "-w", section, name]).stdout.strip() == f"/usr/share/man/man{section}/{page}.gz"
    for path in ("/usr/share/doc/vrrpd/examples/node-a.toml", "/usr/share/doc/vrrpd/examples/node-b.toml",
                 "/usr/share/doc/csserver/examples/csserver-a.toml", "/usr/share/doc/csserver/examples/csserver-b.toml",
                 "/usr/share/bash-completion/completions/vrrpd", "/usr/share/bash-completion/completions/csserver"):
        host.run(["test", "-f", path])
    user = host.run(["getent", "passwd", "csserver"]).stdout.split(":")
    assert int(user[2]) < 1000 and user[5] == "/var/lib/csserver" and user[6].strip() == "/usr/sbin/nologin"
    stat = host.run(["stat", "-c", "%U:%G %a %n", "/var/lib/csserver", "/etc/csserver/csserver.toml",
                     "/etc/vrrpd/vrrpd.toml"]).stdout.splitlines()
    assert stat == ["csserver:csserver 700 /var/lib/csserver", "root:csserver 640 /etc/csserver/csserver.toml",
                    "root:root 644 /etc/vrrpd/vrrpd.toml"]
    conffiles = host.run(["sh", "-c", "cat /var/lib/dpkg/info/vrrpd.conffiles /var/lib/dpkg/info/csserver.conffiles"])
    assert conffiles.stdout.split() == ["/etc/vrrpd/vrrpd.toml", "/etc/csserver/csserver.toml"]


# ---- running ---------------------------------------------------------------------------------------------

def test_both_units_reach_ready_and_verify_clean_as_installed(pair):
    for node in NODES:
        host = pair.nodes[node]
        for unit in UNITS:
            state = pair.unit_state(node, unit)
            # Type=notify: "active (running)" only after the daemon sent READY=1.
            seen = (state["Type"], state["ActiveState"], state["SubState"])
            assert seen == ("notify", "active", "running"), (node, unit, state)
        verify = host.run(["systemd-analyze", "verify", *UNITS], check=False)
        assert (verify.returncode, verify.stderr) == (0, ""), verify.stderr
        status = pair.status(node)
        assert status["pid"] == int(pair.unit_state(node, "vrrpd.service")["MainPID"])
        table = host.run(["vrrpd", "status"]).stdout
        assert re.search(rf"VI_{node.upper()}\s+eth0\s+\d+\s+ipv4\s+MASTER", table), table


def test_reload_with_a_vip_added_installs_it_without_a_flap(pair):
    pids = {node: pair.nodes[node].main_pid("vrrpd") for node in NODES}
    since = {node: pair.instance(node, "VI_A")["since"] for node in NODES}
    watchers = watch(pair)
    t0 = time.monotonic()
    original = {node: pair.nodes[node].read("/etc/vrrpd/vrrpd.toml") for node in NODES}
    try:
        for node in NODES:
            text, count = re.subn(r'"192\.0\.2\.100/24"\]', f'"192.0.2.100/24", "{EXTRA_VIP}/24"]', original[node])
            assert count == 1
            pair.nodes[node].write("/etc/vrrpd/vrrpd.toml", text)
            pair.nodes[node].systemctl("reload", "vrrpd")
        wait_until(lambda: pair.lab.host("node-a").has_address(EXTRA_VIP), 5, 0.02, message="the added VIP never came")
        assert {node: pair.nodes[node].main_pid("vrrpd") for node in NODES} == pids  # reloaded, not restarted
        assert {node: pair.instance(node, "VI_A")["since"] for node in NODES} == since  # no state change at all
        assert [e for e in watchers["a"].events() if e.kind == "del" and e.time >= t0] == []
        assert [e for e in watchers["b"].events() if e.kind == "add" and e.time >= t0] == []
        assert any(e["event"] == "reloaded" for e in pair.nodes["a"].events("vrrpd"))
    finally:
        for node in NODES:
            pair.nodes[node].write("/etc/vrrpd/vrrpd.toml", original[node])
            pair.nodes[node].systemctl("reload", "vrrpd")
        for watcher in watchers.values():
            watcher.stop()
    wait_until(lambda: not pair.lab.host("node-a").has_address(EXTRA_VIP), 5, 0.02, message="the VIP was not removed")


def test_systemctl_stop_on_a_master_hands_over_within_skew_time(pair):
    skew = pair.skew_time("b", "VI_A")
    before = pair.instance("b", "VI_A")["stats"]["priority_zero_rx"]
    watchers = watch(pair)
    try:
        t0 = time.monotonic()
        pair.nodes["a"].systemctl("stop", "vrrpd")
        taken = wait_until(lambda: watchers["b"].first_add(pair.vip("a"), t0), 5, 0.01, message="no handover")
    finally:
        for watcher in watchers.values():
            watcher.stop()
    assert taken - t0 <= skew + MARGIN_S, f"handover took {taken - t0:.3f}s, Skew_Time is {skew:.3f}s"
    assert pair.instance("b", "VI_A")["stats"]["priority_zero_rx"] == before + 1
    assert not pair.lab.host("node-a").has_address(pair.vip("a"))
    state = pair.unit_state("a", "vrrpd.service")
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success")  # exit 0 after a clean stop
    pair.nodes["a"].systemctl("start", "vrrpd")


def test_sigkill_is_taken_over_by_the_peer_and_restart_brings_vrrpd_back(pair):
    old = pair.unit_state("a", "vrrpd.service")
    watchers = watch(pair)
    try:
        t0 = time.monotonic()
        pair.nodes["a"].systemctl("kill", "-s", "KILL", "vrrpd")
        # No priority 0 from a killed daemon: node-b waits out Master_Down_Interval since the last advert.
        mdi = pair.master_down_interval("b", "VI_A")
        taken = wait_until(lambda: watchers["b"].first_add(pair.vip("a"), t0), mdi + 2, 0.02, message="no takeover")
    finally:
        for watcher in watchers.values():
            watcher.stop()
    assert taken - t0 <= mdi + MARGIN_S
    def restarted():
        state = pair.unit_state("a", "vrrpd.service")
        return state["ActiveState"] == "active" and state["MainPID"] not in ("0", old["MainPID"]) and state

    new = wait_until(restarted, 10, 0.1, message="Restart= never brought vrrpd back")
    assert int(new["NRestarts"]) == int(old["NRestarts"]) + 1


def test_a_frozen_vrrpd_is_restarted_by_the_watchdog(pair):
    watchdog_s = int(pair.nodes["a"].show("vrrpd", "WatchdogUSec")["WatchdogUSec"].rstrip("s"))
    old = pair.unit_state("a", "vrrpd.service")
    watchers = watch(pair)
    try:
        t0 = time.monotonic()
        pair.nodes["a"].systemctl("kill", "-s", "STOP", "--kill-who=main", "vrrpd")
        def restarted_at():
            return int(pair.unit_state("a", "vrrpd.service")["NRestarts"]) > int(old["NRestarts"]) and time.monotonic()

        restarted = wait_until(restarted_at, watchdog_s + 5, 0.1, message="the watchdog never restarted vrrpd")
        taken = watchers["b"].first_add(pair.vip("a"), t0)
    finally:
        for watcher in watchers.values():
            watcher.stop()
    # The last ping came at most WatchdogSec/2 before the freeze (the daemon pings at half the timeout).
    assert watchdog_s / 2 <= restarted - t0 <= watchdog_s + 2, restarted - t0
    journal = " ".join(e.get("MESSAGE", "") for e in pair.nodes["a"].journal("vrrpd", "--since=-60s"))
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal
    # Meanwhile the peer took over: a frozen master sends no adverts.
    assert taken is not None and taken - t0 <= pair.master_down_interval("b", "VI_A") + MARGIN_S
    wait_until(lambda: pair.unit_state("a", "vrrpd.service")["ActiveState"] == "active", 10, 0.1)


def test_the_journal_holds_the_daemons_structured_events(pair):
    events = pair.nodes["a"].events("vrrpd")
    changes = [e for e in events if e["event"] == "state_change"]
    assert {"instance", "vrid", "family", "old", "new", "reason", "priority", "level", "timestamp"} <= set(changes[-1])
    assert any(e["instance"] == "VI_A" and (e["old"], e["new"]) == ("BACKUP", "MASTER") for e in changes)
    assert any(e["event"] == "started" and e["version"] == "0.1.0" for e in events)
    entry = next(e for e in pair.nodes["a"].journal("vrrpd") if e.get("MESSAGE", "").startswith("{"))
    assert entry["_SYSTEMD_UNIT"] == "vrrpd.service" and entry["SYSLOG_IDENTIFIER"] == "vrrpd"
    cs_events = pair.nodes["a"].events("csserver")
    assert any(e["event"] == "csserver_started" and e["store"] == "postgresql" for e in cs_events)


def bumped(debs: list[Path], version: str, out: Path) -> list[Path]:
    """The same packages under a newer version: what an upgrade installs (same files and maintainer scripts)."""
    made = []
    for deb in debs:
        tree = out / deb.stem
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=60)
        control = tree / "DEBIAN" / "control"
        control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", control.read_text()))
        made.append(out / deb.name.replace(deb.name.split("_")[1], version))
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(made[-1])], check=True,
                       capture_output=True, timeout=60)
        shutil.rmtree(tree)
    return made


def test_an_upgrade_keeps_the_configs_and_hands_over_with_priority_zero(pair, tmp_path):
    configs = ("/etc/vrrpd/vrrpd.toml", "/etc/csserver/csserver.toml")
    sums = {path: sha256(pair, "a", path) for path in configs}
    old_pid = pair.nodes["a"].main_pid("vrrpd")
    zero_rx = pair.instance("b", "VI_A")["stats"]["priority_zero_rx"]
    newer = bumped(pair.debs, "0.1.0+lab1", tmp_path)
    watchers = watch(pair)
    try:
        t0 = time.monotonic()
        pair.install("a", newer)
        pair.wait_steady(30)
        gap = longest_gap(watchers, pair.vip("a"), t0, holder="a")
    finally:
        for watcher in watchers.values():
            watcher.stop()
    version = pair.nodes["a"].run(["dpkg-query", "-W", "-f", "${Version}", "vrrpd", "csserver"]).stdout
    assert version == "0.1.0+lab10.1.0+lab1"
    assert {path: sha256(pair, "a", path) for path in configs} == sums  # the operator's files, untouched
    assert pair.nodes["a"].run(["stat", "-c", "%G %a", configs[1]]).stdout.strip() == "csserver 640"
    assert pair.nodes["a"].main_pid("vrrpd") != old_pid  # the new code runs
    # The old daemon resigned with priority 0 and node-b took VIP-A after Skew_Time, not Master_Down_Interval.
    assert pair.instance("b", "VI_A")["stats"]["priority_zero_rx"] >= zero_rx + 1
    assert gap <= pair.skew_time("b", "VI_A") + MARGIN_S, f"VIP-A was on no node for {gap:.3f}s"


# ---- the last two: they take the pair apart ---------------------------------------------------------------

def test_a_client_loses_no_acknowledged_write_when_a_host_powers_off(pair):
    out = pair.lab.tmpdir / "writer.jsonl"
    with open(out, "w") as sink:  # a file, never a pipe nobody reads
        writer = pair.client.popen(
            [sys.executable, "-m", "labkit.writer", "--cluster", json.dumps(pair.cluster), "--contexts", "2",
             "--pace", "0.02", "--deadline", str(WRITER_DEADLINE_S)], stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)

    def acks() -> int:
        return out.read_text().count('"event": "ack"')

    wait_explained(lambda: acks() >= 100, 20, 0.05, lambda: f"the writer never got going:\n{out.read_text()[-2000:]}")
    pair.nodes["a"].poweroff()  # systemd stops csserver and vrrpd (priority 0), then the host is gone
    wait_until(lambda: pair.holders(pair.vip("a")) == ["b"], 5, 0.02, message="VIP-A never moved to node-b")
    before = acks()
    wait_explained(lambda: acks() >= before + 200, 30, 0.05, lambda: f"writes stopped:\n{out.read_text()[-2000:]}")
    writer.terminate()
    assert writer.wait(WRITER_DEADLINE_S + 30) == 0, out.read_text()[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    summary = records[-1]
    assert summary["event"] == "summary"
    assert summary["lost"] == 0, summary["lost_keys"]  # every acknowledged write is in the store
    assert summary["errors"] == 0  # and no call gave up: each rode the failover out within its deadline
    a_contexts = {r["haid"] for r in records if r["event"] == "created" and r["via"] == "cs-a"}
    adopted = {e["haid"] for e in pair.nodes["b"].events("csserver") if e["event"] == "context_adopted"}
    assert adopted == a_contexts  # node-b served node-a's contexts from the shared PostgreSQL


def test_remove_stops_the_services_and_purge_removes_their_state(installed):
    host = installed.nodes["b"]
    # A store in SQLite under /var/lib/csserver (the sample points at PostgreSQL): state the unit's user writes.
    sample = host.run(["cat", "/usr/share/doc/csserver/examples/csserver-b.toml"]).stdout
    text, count = re.subn(r'(?m)^url = ".*"$', 'url = "sqlite:///var/lib/csserver/contexts.db"', sample)
    assert count == 1, "the csserver sample should set [store] url once"
    host.write("/etc/csserver/csserver.toml", text)
    host.systemctl("restart", "csserver")
    store = "/var/lib/csserver/contexts.db"
    assert host.run(["stat", "-c", "%U", store]).stdout.strip() == "csserver"
    host.run(["apt-get", "remove", "-y", "vrrpd", "csserver"], timeout=120)
    for unit in UNITS:
        assert host.show(unit, "ActiveState")["ActiveState"] == "inactive"
    assert host.run(["pgrep", "-f", "/usr/bin/(vrrpd|csserver) run"], check=False).returncode == 1
    assert installed.holders(installed.vip("b")) == []  # vrrpd released its VIP as it stopped
    host.run(["test", "-f", "/etc/vrrpd/vrrpd.toml"])  # remove keeps the configs...
    host.run(["test", "-f", store])  # ... and the state
    host.run(["apt-get", "purge", "-y", "vrrpd", "csserver"], timeout=120)
    left = host.run(["ls", "-d", "/etc/vrrpd", "/etc/csserver", "/var/lib/csserver", "/usr/bin/vrrpd",
                     "/etc/systemd/system/multi-user.target.wants/vrrpd.service"], check=False)
    assert left.stdout == "", left.stdout
    query = host.run(["dpkg-query", "-W", "vrrpd", "csserver"], check=False)
    assert query.returncode == 1 and query.stderr.count("no packages found") == 2, query
