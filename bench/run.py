"""`make bench`: vrrpd against keepalived in one run: takeover time, SIGTERM handover, CPU and memory.

Every figure is measured here, in this run, for both daemons on the same lab, and printed as a ratio
(vrrpd / keepalived). Results go to bench/results/*.json, plots to bench/results/*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.keepalived import keepalived_conf, start_keepalived
from tests.lab.netns import AddressWatcher, Lab, wait_until
from tests.lab.vrrpd_node import VrrpdNode
from vrrpd.fsm import master_down_interval_cs, skew_time_cs

RESULTS = Path(__file__).parent / "results"
VIP = "192.0.2.100"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Pair:
    """A master (a, priority 150) and a backup (b, priority 100) of one implementation."""

    def __init__(self, impl: str, lab: Lab, workdir: Path, interval: float, instances: int = 1):
        self.impl, self.lab, self.workdir, self.interval, self.count = impl, lab, workdir, interval, instances
        self.procs: dict[str, object] = {}

    def specs(self, priority: int) -> list[dict]:
        if self.count == 1:
            return [dict(name="VI_1", interface="eth0", vrid=51, priority=priority, advert_interval=self.interval,
                         virtual_ipaddress=[f"{VIP}/24"], garp_repeat=1)]
        return [dict(name=f"VI_{i}", interface="eth0", vrid=i, priority=priority, advert_interval=self.interval,
                     virtual_ipaddress=[f"198.51.100.{i}/24"], garp_repeat=1) for i in range(1, self.count + 1)]

    def start(self, host) -> None:
        priority = 150 if host.name == "a" else 100
        if self.impl == "vrrpd":
            node = VrrpdNode(host, self.workdir, self.specs(priority), global_kw={"log_level": "info"})
            node.start()
            self.procs[host.name] = node.proc
        else:
            conf = keepalived_conf(self.specs(priority), router_id=host.name)
            self.procs[host.name] = start_keepalived(host, conf, self.workdir / f"ka-{host.name}")

    def stop(self, name: str, sig=signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
            proc.wait(15)

    def pids(self, name: str) -> list[int]:
        """The daemon's process and its children (keepalived forks a VRRP child)."""
        root = self.procs[name].pid
        pids = [root]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) in pids:
                    pids.append(int(entry.name))
        return pids


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def first_add(watcher: AddressWatcher, addr: str, after: float) -> float | None:
    times = [t for t, kind, a in watcher.events() if kind == "add" and a == addr and t >= after]
    return min(times) if times else None


def takeover_trials(impl: str, interval: float, trials: int, workdir: Path) -> dict:
    """Master's link set down: time until the VIP appears on the backup (netlink event on b)."""
    mdi = master_down_interval_cs(100, round(interval * 100)) / 100
    skew = skew_time_cs(100, round(interval * 100)) / 100
    link, term = [], []
    with Lab(2) as lab:
        a, b = lab.hosts
        pair = Pair(impl, lab, workdir, interval)
        pair.start(a)
        pair.start(b)
        wait_until(lambda: a.has_address(VIP) and not b.has_address(VIP), 10 + 5 * interval, message=f"{impl}: a not master")
        for i in range(trials):
            for kind in ("link", "sigterm"):
                watcher = AddressWatcher(b)
                watcher.start()
                try:
                    t0 = time.monotonic()
                    if kind == "link":
                        a.set_link(False)
                    else:
                        pair.stop("a")
                    wait_until(lambda: b.has_address(VIP), mdi + 5, message=f"{impl}: b never took over")
                    added = wait_until(lambda: first_add(watcher, VIP, t0), 2, message="no netlink add event")
                finally:
                    watcher.stop()
                (link if kind == "link" else term).append(added - t0)
                if kind == "link":
                    a.set_link(True)
                else:
                    pair.start(a)
                wait_until(lambda: a.has_address(VIP) and not b.has_address(VIP), 3 * mdi + 10, message=f"{impl}: no failback")
            progress(f"{impl} interval {interval}s trial {i + 1}/{trials}: link {link[-1]:.3f}s, sigterm {term[-1]:.3f}s")
        pair.stop("a")
        pair.stop("b")
    return {"impl": impl, "interval": interval, "master_down_interval": mdi, "skew_time": skew,
            "link_down": link, "sigterm": term}


def cpu_memory(impl: str, seconds: float, workdir: Path) -> dict:
    """20 instances at 0.05 s as master against a backup node; CPU share and RSS of the master's daemon."""
    with Lab(2) as lab:
        a, b = lab.hosts
        pair = Pair(impl, lab, workdir, 0.05, instances=20)
        pair.start(a)
        pair.start(b)
        wait_until(lambda: all(a.has_address(f"198.51.100.{i}") for i in range(1, 21)), 20, message=f"{impl}: not master of 20")
        time.sleep(1.0)  # settle: measured below is steady state, not start-up
        pids = pair.pids("a")
        before = sum(cpu_seconds(p) for p in pids)
        t0 = time.monotonic()
        time.sleep(seconds)  # a fixed measurement window, not a wait for a condition
        cpu = sum(cpu_seconds(p) for p in pids) - before
        wall = time.monotonic() - t0
        rss = {p: rss_mb(p) for p in pids}
        pair.stop("a")
        pair.stop("b")
    return {"impl": impl, "instances": 20, "advert_interval": 0.05, "seconds": wall,
            "cpu_percent": 100 * cpu / wall, "rss_mb_total": sum(rss.values()), "rss_mb_max_process": max(rss.values()),
            "processes": len(pids)}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def summarize(takeovers: list[dict], cpu: list[dict]) -> list[str]:
    lines = ["", "takeover (link down -> VIP on backup, netlink), medians:",
             f"{'interval':>9} {'kind':>8} {'vrrpd':>9} {'keepalived':>11} {'ratio':>6} {'vrrpd p99':>10} {'MDI':>7}"]
    by = {(t["impl"], t["interval"]): t for t in takeovers}
    if not takeovers:
        lines = []
    for interval in sorted({t["interval"] for t in takeovers}):
        ours, theirs = by.get(("vrrpd", interval)), by.get(("keepalived", interval))
        for kind in ("link_down", "sigterm"):
            m_ours = statistics.median(ours[kind])
            m_theirs = statistics.median(theirs[kind]) if theirs else float("nan")
            lines.append(f"{interval:>8}s {kind:>8} {m_ours:>8.3f}s {m_theirs:>10.3f}s {m_ours / m_theirs:>6.2f} "
                         f"{p99(ours[kind]):>9.3f}s {ours['master_down_interval']:>6.3f}s")
    if cpu:
        c = {x["impl"]: x for x in cpu}
        lines += ["", "20 instances at 0.05 s, master node, steady state:",
                  f"  CPU  vrrpd {c['vrrpd']['cpu_percent']:.2f}%  keepalived {c['keepalived']['cpu_percent']:.2f}%  "
                  f"ratio {c['vrrpd']['cpu_percent'] / max(c['keepalived']['cpu_percent'], 1e-9):.2f}",
                  f"  RSS  vrrpd {c['vrrpd']['rss_mb_total']:.1f} MB  keepalived {c['keepalived']['rss_mb_total']:.1f} MB "
                  f"(all processes; largest keepalived process {c['keepalived']['rss_mb_max_process']:.1f} MB)"]
    return lines


def plot(takeovers: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for interval in sorted({t["interval"] for t in takeovers}):
        fig, ax = plt.subplots(figsize=(7, 4))
        for t in takeovers:
            if t["interval"] != interval:
                continue
            for kind, marker in (("link_down", "o"), ("sigterm", "s")):
                ax.plot(range(1, len(t[kind]) + 1), [v * 1000 for v in t[kind]], marker=marker,
                        label=f"{t['impl']} {kind.replace('_', ' ')}")
            mdi = t["master_down_interval"] * 1000
        ax.axhline(mdi, color="grey", linestyle="--", label="Master_Down_Interval")
        ax.set_xlabel("trial")
        ax.set_ylabel("takeover (ms)")
        ax.set_title(f"Takeover time per trial, advert_interval {interval} s")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = RESULTS / f"takeover-{interval}s.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials-fast", type=int, default=10, help="trials at advert_interval 0.1 s (default 10)")
    parser.add_argument("--trials-slow", type=int, default=3, help="trials at advert_interval 1 s (default 3)")
    parser.add_argument("--cpu-seconds", type=float, default=10.0, help="CPU/RSS measurement window (default 10)")
    parser.add_argument("--skip", action="append", default=[], choices=["takeover", "cpu", "csserver"])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make bench needs root (network namespaces)", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    takeovers, cpu = [], []
    with tempfile.TemporaryDirectory(prefix="vrrpd-bench-") as tmp:
        work = Path(tmp)
        if "takeover" not in args.skip:
            for interval, trials in ((0.1, args.trials_fast), (1.0, args.trials_slow)):
                for impl in ("vrrpd", "keepalived"):
                    progress(f"takeover: {impl} at advert_interval {interval}s, {trials} trials")
                    takeovers.append(takeover_trials(impl, interval, trials, work / f"{impl}-{interval}"))
            (RESULTS / "takeover.json").write_text(json.dumps(takeovers, indent=2))
            plot(takeovers)
        if "cpu" not in args.skip:
            for impl in ("vrrpd", "keepalived"):
                progress(f"cpu/memory: {impl}, 20 instances at 0.05 s for {args.cpu_seconds}s")
                cpu.append(cpu_memory(impl, args.cpu_seconds, work / f"cpu-{impl}"))
            (RESULTS / "cpu.json").write_text(json.dumps(cpu, indent=2))
        if "csserver" not in args.skip:
            from bench import csserver_bench

            csserver_bench.run(work / "csserver", progress)
    for line in summarize(takeovers, cpu):
        print(line)
    print(f"\nresults in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
