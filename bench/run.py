"""`make bench`: vrrpd against keepalived in one run: takeover time, SIGTERM handover, CPU and memory;
then csserver through its VIPs (bench/csserver_bench.py): throughput, latency and failover gaps.

Every figure is measured here, in this run, for both daemons on the same lab, and printed as a ratio
(vrrpd / keepalived, or measured / target). Results go to bench/results/*.json, plots to
bench/results/*.png; bench/README.md says what each figure means.
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

from labkit.keepalived import keepalived_conf, start_keepalived
from labkit.netns import AddressWatcher, Lab, wait_until
from labkit.vrrpd_node import VrrpdNode
from vrrpd.core.fsm import master_down_interval_cs, skew_time_cs

RESULTS = Path(__file__).parent / "results"
VIP = "192.0.2.100"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class ImplPair:
    """A master (a, priority 150) and a backup (b, priority 100) of one implementation."""

    def __init__(self, impl: str, lab: Lab, workdir: Path, interval: float, instances: int = 1, vips: int = 1,
                 python: str = sys.executable):
        self.impl, self.lab, self.workdir, self.interval, self.count = impl, lab, workdir, interval, instances
        self.vips, self.python = vips, python
        self.procs: dict[str, object] = {}

    def specs(self, priority: int) -> list[dict]:
        if self.count == 1:
            return [dict(name="VI_1", interface="eth0", vrid=51, priority=priority, advert_interval=self.interval,
                         virtual_ipaddress=[f"{VIP}/24"], garp_repeat=1)]
        if self.vips > 1:  # IPv6: the documentation prefixes hold no thousand IPv4 addresses
            return [dict(name=f"VI_{i}", interface="eth0", vrid=i, priority=priority, advert_interval=self.interval,
                         virtual_ipaddress=[f"2001:db8:ff::{i:x}:{j:x}/64" for j in range(1, self.vips + 1)],
                         garp_repeat=1) for i in range(1, self.count + 1)]
        return [dict(name=f"VI_{i}", interface="eth0", vrid=i, priority=priority, advert_interval=self.interval,
                     virtual_ipaddress=[f"198.51.100.{i}/24"], garp_repeat=1) for i in range(1, self.count + 1)]

    def addresses(self) -> list[str]:
        return [v.split("/")[0] for spec in self.specs(150) for v in spec["virtual_ipaddress"]]

    def start(self, host) -> None:
        priority = 150 if host.name == "a" else 100
        if self.impl == "vrrpd":
            node = VrrpdNode(host, self.workdir, self.specs(priority), global_kw={"log_level": "info"},
                             python=self.python)
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
    """CPU time the scheduler has run the process (every thread of it) for, to the nanosecond (schedstat):
    utime + stime in /proc/PID/stat are sampled at the clock tick (10 ms), too coarse for a daemon using 1 %."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def takeover_trials(impl: str, interval: float, trials: int, workdir: Path) -> dict:
    """Master's link set down: time until the VIP appears on the backup (netlink event on b)."""
    mdi = master_down_interval_cs(100, round(interval * 100)) / 100
    skew = skew_time_cs(100, round(interval * 100)) / 100
    link, term = [], []
    with Lab(2) as lab:
        a, b = lab.hosts
        pair = ImplPair(impl, lab, workdir, interval)
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
                    added = wait_until(lambda: watcher.first_add(VIP, t0), 2, message="no netlink add event")
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
        pair = ImplPair(impl, lab, workdir, 0.05, instances=20)
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


def held(host, addresses: list[str]) -> int:
    out = host.run(["ip", "-o", "address", "show", "dev", "eth0"], timeout=30).stdout
    present = {line.split()[3].split("/")[0] for line in out.splitlines()}
    return sum(1 for a in addresses if a in present)


def scale(impl: str, instances: int, interval: float, vips: int, seconds: float, workdir: Path,
          python: str) -> dict:
    """`instances` x `vips` IPv6 VIPs on one pair: how long until the master holds them all, then the CPU of
    master and backup over `seconds` of steady state, and the master's RSS."""
    with Lab(2) as lab:
        a, b = lab.hosts
        pair = ImplPair(impl, lab, workdir, interval, instances=instances, vips=vips, python=python)
        addresses = pair.addresses()
        t0 = time.monotonic()
        pair.start(a)
        wait_until(lambda: held(a, addresses) == len(addresses), 120, interval=0.05,
                   message=f"{impl}: a holds {held(a, addresses)} of {len(addresses)}")
        all_held = time.monotonic() - t0
        pair.start(b)
        time.sleep(3 * interval + 5.0)  # settle: the backup's start-up is not steady state
        assert held(b, addresses) == 0, f"{impl}: the backup holds addresses"
        pids = {name: pair.pids(name) for name in ("a", "b")}
        before = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        t1 = time.monotonic()
        time.sleep(seconds)  # a fixed measurement window, not a wait for a condition
        wall = time.monotonic() - t1
        cpu = {name: 100 * (sum(cpu_seconds(p) for p in ps) - before[name]) / wall for name, ps in pids.items()}
        rss = sum(rss_mb(p) for p in pids["a"])
        pair.stop("a")
        pair.stop("b")
    return {"impl": impl, "instances": instances, "advert_interval": interval, "vips": instances * vips,
            "all_held_s": all_held, "cpu_master_percent": cpu["a"], "cpu_backup_percent": cpu["b"],
            "rss_master_mb": rss, "seconds": wall}


def production_python() -> str:
    """An interpreter with the runtime dependencies only (pyproject's, no test extras), made once and kept:
    what a production install loads, for the memory figure (test extras pull rich into structlog)."""
    venv = Path("/var/cache/vrrpd-bench/venv-prod")
    python = venv / "bin" / "python"
    if not python.exists():
        progress(f"making a production venv in {venv} (runtime dependencies only)")
        import subprocess
        import tomllib

        deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *deps], check=True)
    return str(python)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


SCALE = ((100, 0.1, 4, 30.0), (250, 1.0, 4, 60.0))  # instances, advert_interval, VIPs each, CPU window (s)
RSS_TARGET_MB, HELD_TARGET_S = 32.0, 10.0


def scale_lines(results: list[dict]) -> list[str]:
    by = {(r["impl"], r["instances"]): r for r in results}
    lines = ["", "scale: N instances x 4 IPv6 VIPs, master and backup steady state (CPU over the window), "
             "the master's RSS (production venv), time until the master holds every VIP:",
             f"{'instances':>9} {'interval':>8} {'':>8} {'vrrpd':>8} {'keepalived':>11} {'ratio':>6} {'target':>7}"]
    for instances, interval, _, _ in SCALE:
        ours, theirs = by.get(("vrrpd", instances)), by.get(("keepalived", instances))
        if not ours or not theirs:
            continue
        for label, key in (("CPU M", "cpu_master_percent"), ("CPU B", "cpu_backup_percent")):
            ratio = ours[key] / max(theirs[key], 1e-9)
            lines.append(f"{instances:>9} {interval:>7}s {label:>8} {ours[key]:>7.2f}% {theirs[key]:>10.2f}% "
                         f"{ratio:>6.2f} {'<= 1.0':>7}")
        lines.append(f"{instances:>9} {interval:>7}s {'RSS M':>8} {ours['rss_master_mb']:>6.1f}MB "
                     f"{theirs['rss_master_mb']:>8.1f}MB {'':>6} {'<= ' + str(RSS_TARGET_MB) + ' MB':>7}")
        lines.append(f"{instances:>9} {interval:>7}s {'held':>8} {ours['all_held_s']:>7.2f}s {theirs['all_held_s']:>9.2f}s "
                     f"{ours['all_held_s'] / max(theirs['all_held_s'], 1e-9):>6.2f} {'<= ' + str(HELD_TARGET_S) + ' s':>7}")
    return lines


def summarize(takeovers: list[dict], cpu: list[dict], cs: dict | None = None, scaled: list[dict] = ()) -> list[str]:
    lines = ["", "takeover (master's link down, or master SIGTERMed -> VIP on backup, netlink), medians;",
             "expected: Master_Down_Interval after a link loss, Skew_Time after the stopping master's priority-0 advert:",
             f"{'interval':>9} {'kind':>8} {'vrrpd':>9} {'keepalived':>11} {'ratio':>6} {'vrrpd p99':>10} {'expected':>9}"]
    by = {(t["impl"], t["interval"]): t for t in takeovers}
    if not takeovers:
        lines = []
    for interval in sorted({t["interval"] for t in takeovers}):
        ours, theirs = by.get(("vrrpd", interval)), by.get(("keepalived", interval))
        for kind in ("link_down", "sigterm"):
            m_ours = statistics.median(ours[kind])
            m_theirs = statistics.median(theirs[kind]) if theirs else float("nan")
            lines.append(f"{interval:>8}s {kind:>8} {m_ours:>8.3f}s {m_theirs:>10.3f}s {m_ours / m_theirs:>6.2f} "
                         f"{p99(ours[kind]):>9.3f}s "
                         f"{ours['master_down_interval' if kind == 'link_down' else 'skew_time']:>8.3f}s")
    if cpu:
        c = {x["impl"]: x for x in cpu}
        lines += ["", "20 instances at 0.05 s, master node, steady state:",
                  f"  CPU  vrrpd {c['vrrpd']['cpu_percent']:.2f}%  keepalived {c['keepalived']['cpu_percent']:.2f}%  "
                  f"ratio {c['vrrpd']['cpu_percent'] / max(c['keepalived']['cpu_percent'], 1e-9):.2f}",
                  f"  RSS  vrrpd {c['vrrpd']['rss_mb_total']:.1f} MB  keepalived {c['keepalived']['rss_mb_total']:.1f} MB "
                  f"(all processes; largest keepalived process {c['keepalived']['rss_mb_max_process']:.1f} MB)"]
    if scaled:
        lines += scale_lines(list(scaled))
    if cs:
        from bench import csserver_bench

        lines += csserver_bench.summary_lines(cs)
    return lines


def plot(takeovers: list[dict]) -> list[Path]:
    """Per advert_interval, two panels (the master's link lost; the master stopped), each trial of both
    daemons side by side against the time RFC 5798 gives (Master_Down_Interval; Skew_Time after the
    stopping master's priority-0 advert)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    style = {"vrrpd": ("tab:blue", "o", -0.08), "keepalived": ("tab:orange", "s", 0.08)}
    panels = (("link_down", "master's link lost", "master_down_interval", "Master_Down_Interval"),
              ("sigterm", "master stopped (SIGTERM)", "skew_time", "Skew_Time"))
    paths = []
    for interval in sorted({t["interval"] for t in takeovers}):
        runs = [t for t in takeovers if t["interval"] == interval]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, (kind, title, expected_key, expected_name) in zip(axes, panels):
            for t in runs:
                color, marker, shift = style.get(t["impl"], ("tab:green", "^", 0.0))
                values = [v * 1000 for v in t[kind]]
                ax.plot([i + 1 + shift for i in range(len(values))], values, marker=marker, color=color,
                        linestyle="-", alpha=0.85, label=f"{t['impl']}: median {statistics.median(values):.0f} ms")
            expected = runs[0][expected_key] * 1000
            ax.axhline(expected, color="grey", linestyle="--", label=f"{expected_name} {expected:.0f} ms")
            ax.set_ylim(0, max(expected, *(v * 1000 for t in runs for v in t[kind])) * 1.15)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("trial")
            ax.set_ylabel("VIP on the backup after (ms)")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        fig.suptitle(f"Takeover per trial, vrrpd and keepalived, advert_interval {interval} s")
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
    parser.add_argument("--cpu-seconds", type=float, default=30.0, help="CPU/RSS measurement window (default 30: the daemons use about 1 % of a core, and a shorter window is noise)")
    parser.add_argument("--skip", action="append", default=[], choices=["takeover", "cpu", "scale", "csserver"])
    cs = parser.add_argument_group("csserver (bench/csserver_bench.py)")
    cs.add_argument("--cs-trials", type=int, default=5, help="failover trials per store (default 5)")
    cs.add_argument("--cs-duration", type=float, default=5.0, help="seconds of GET and of PUT load per store (default 5)")
    cs.add_argument("--cs-concurrency", type=int, default=16, help="concurrent load workers (default 16)")
    cs.add_argument("--cs-attempt-timeout", type=float, default=0.1,
                    help="the failover writer's per-attempt timeout, csserver.client attempt_timeout_s (default 0.1)")
    cs.add_argument("--cs-store", action="append", choices=["sqlite", "postgresql"],
                    help="only this store (repeatable; default both)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make bench needs root (network namespaces)", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    load_before = os.getloadavg()[0]
    takeovers, cpu, scaled, cs_result = [], [], [], None
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
        if "scale" not in args.skip:
            python = production_python()
            for instances, interval, vips, seconds in SCALE:
                for impl in ("vrrpd", "keepalived"):
                    progress(f"scale: {impl}, {instances} instances x {vips} VIPs at {interval}s, {seconds:g}s window")
                    scaled.append(scale(impl, instances, interval, vips, seconds, work / f"scale-{impl}-{instances}",
                                        python))
            (RESULTS / "scale.json").write_text(json.dumps(scaled, indent=2))
        if "csserver" not in args.skip:
            from bench import csserver_bench

            settings = csserver_bench.Settings(
                trials=args.cs_trials, duration=args.cs_duration, concurrency=args.cs_concurrency,
                attempt_timeout=args.cs_attempt_timeout, stores=tuple(args.cs_store or ("sqlite", "postgresql")))
            cs_result = csserver_bench.run(work / "csserver", progress, settings)
    for line in summarize(takeovers, cpu, cs_result, scaled):
        print(line)
    load_after = os.getloadavg()[0]
    busy = (" (a busy machine: compare with a run on a quiet one)"
            if load_before > 1.0 or load_after > 2.0 else "")
    print(f"\nload average (1 min) at the start {load_before:.2f}, at the end {load_after:.2f}, "
          f"{os.cpu_count()} CPUs; the bench itself adds about 1-2{busy}")
    print(f"results in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
