"""`make bench`, csserver part: throughput and latency through a VIP, and what a failover costs a client.

The lab is tests/lab/pair.py's: the real vrrpd and csserver from the conf/ samples on node-a and node-b
(advert_interval shortened to 0.1 s), a client namespace generating the load, once with the shared SQLite
file and once with PostgreSQL (scripts/test-postgres.sh; started here if it is not running). Measured:

- GET and PUT of one value through VIP-A: requests/s and p50/p99 latency, N concurrent keep-alive
  workers for a fixed time, after a warm-up; the same load first on a bare aiohttp server at the same VIP
  (bench/bare_server.py, no store), so csserver's throughput is a ratio measured in this very run.
- Per failover trial (node-a crashed: link down, vrrpd and csserver SIGKILLed), against targets:
  the VIP's arrival on node-b (netlink, labkit.netns.AddressWatcher) to the first request served on one
  of node-a's now orphaned contexts (target under 20 ms), seen by a prober that opens a fresh connection
  every few ms; the client's longest gap between two acknowledged writes (tests/lab/writer.py, csserver's
  own client) against Master_Down_Interval + 50 ms; the service's gap as the prober sees it; and the
  failback's gap when node-a returns.
- The store's own failover (labkit/store_failover.py): PostgreSQL primary and synchronous standby on two
  more lab hosts, the primary stopped or frozen and the standby promoted under the writer: its longest
  gap, against 5 s, and nothing acknowledged lost.

The load generator and the prober that run inside the client namespace are bench/csserver_client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from csserver.client import Client
from labkit.pg import pg_problem, pg_schema, pg_url
from labkit.csserver_node import event_time
from labkit.netns import AddressWatcher, in_netns, wait_until
from labkit.pair import Pair, lab_for_pair, lab_pg_url
from labkit.vrrpd_node import REPO

RESULTS = Path(__file__).parent / "results"
ADOPTION_TARGET = 0.020  # seconds from the VIP's arrival to the first served request (issue 3)
GAP_MARGIN = 0.050  # the client's gap may exceed Master_Down_Interval by this much (issue 3)
# Issue 12: csserver / the bare handler at 16 clients, and PUT's p99; the store's failover gap.
THROUGHPUT_TARGETS = {"put": 0.5, "get": 0.8}
PUT_P99_TARGET_MS = 5.0
STORE_FAILOVER_GAP_TARGET = 5.0


@dataclass(frozen=True)
class Settings:
    trials: int = 5  # failover trials per store
    duration: float = 5.0  # seconds of measured load per operation
    warmup: float = 1.0  # seconds of load before each measurement
    concurrency: int = 16  # concurrent keep-alive workers, one context each
    stores: tuple[str, ...] = ("sqlite", "postgresql")
    bare_port: int = 9200  # the bare aiohttp server beside csserver in node-a's namespace
    store_failover: tuple[str, ...] = ("stop", "freeze")  # PostgreSQL failover runs (needs its binaries)
    attempt_timeout: float = 0.1  # the writer's per-attempt timeout (csserver.client attempt_timeout_s)
    writer_contexts: int = 2  # the writer's contexts per alias
    writer_pace: float = 0.01  # seconds between two writes of one context
    probe_interval: float = 0.002  # seconds between two probes (each on a fresh connection)
    probe_timeout: float = 0.3
    advert_interval: float = 0.1
    preempt_delay: float = 0.5


def master_down_interval(advert_interval: float, priority: int = 100) -> float:
    """RFC 5798 6.1, unrounded (vrrpd counts whole centiseconds: 0.360 s for 0.1 s, not 0.3609 s)."""
    return 3 * advert_interval + (256 - priority) / 256 * advert_interval


# =====================================================================================================
# In the client namespace: the load generator and the prober
# =====================================================================================================

# =====================================================================================================
# In the bench process: the lab, the trials, the figures
# =====================================================================================================

def postgres_url(progress) -> tuple[str | None, str | None]:
    """The test PostgreSQL's URL, starting the server first if it does not answer; (None, why) if it can't."""
    if pg_problem(pg_url()) is None:
        return pg_url(), None
    progress("csserver: starting the test PostgreSQL (scripts/test-postgres.sh start)")
    try:
        proc = subprocess.run([str(REPO / "scripts" / "test-postgres.sh"), "start"], capture_output=True,
                              text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"scripts/test-postgres.sh start: {exc}"
    problem = pg_problem(pg_url())
    if proc.returncode != 0:
        problem = f"scripts/test-postgres.sh start exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return (None, problem) if problem else (pg_url(), None)


def python_in_lab(host, args: list[str], out: Path) -> subprocess.Popen:
    """`python ARGS` in a lab host, stdout and stderr to `out` (a file: never a pipe nobody reads)."""
    with open(out, "w") as sink:
        return host.popen([sys.executable, *args], stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)


class Tail:
    """The JSON lines (objects or arrays) a lab process has written to a file so far, read incrementally:
    polling must not cost the machine whose timing it measures."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list:
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.startswith((b"{", b"[")):
                with contextlib.suppress(ValueError):
                    self.records.append(json.loads(line))
        return self.records

    def text(self) -> str:
        return self.path.read_text(errors="replace")[-2000:]


def throughput(pair, workdir: Path, settings: Settings) -> dict:
    out = workdir / "load.json"
    bare = python_in_lab(pair.host("a"), ["-m", "bench.bare_server", "--port", str(settings.bare_port)],
                         workdir / "bare.log")
    try:
        wait_until(lambda: f":{settings.bare_port} " in pair.host("a").run(["ss", "-Htln"]).stdout, 10, 0.05,
                   message=f"the bare server did not listen:\n{(workdir / 'bare.log').read_text()[-2000:]}")
        proc = python_in_lab(pair.client, ["-m", "bench.csserver_client", "load", "--cluster", json.dumps(pair.cluster),
                                           "--port", str(pair.port), "--via", "cs-a", "--concurrency",
                                           str(settings.concurrency), "--duration", str(settings.duration),
                                           "--warmup", str(settings.warmup), "--bare-port", str(settings.bare_port)],
                             out)
        try:
            proc.wait(60 + 4 * (settings.duration + settings.warmup))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the load generator did not finish:\n{Tail(out).text()}") from None
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(10)
    records = [r for r in Tail(out).read() if isinstance(r, dict)]
    if proc.returncode != 0 or not records:
        raise AssertionError(f"the load generator failed ({proc.returncode}):\n{Tail(out).text()}")
    return records[-1]


class WriterLog(Tail):
    """tests/lab/writer.py's JSON lines, read back: which alias made each context, its acknowledgement times."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.via: dict[str, str] = {}
        self.acks: dict[str, list[float]] = {}
        self.summary: dict | None = None
        self._seen = 0

    def acks_of(self, alias: str) -> dict[str, list[float]]:
        records = self.read()
        for record in records[self._seen:]:
            event = record.get("event") if isinstance(record, dict) else None
            if event == "created":
                self.via[record["haid"]] = record["via"]
            elif event == "ack":
                self.acks.setdefault(record["haid"], []).append(record["t"])
            elif event == "summary":
                self.summary = {k: v for k, v in record.items() if k != "event"}
        self._seen = len(records)
        return {h: t for h, t in self.acks.items() if self.via.get(h) == alias}


def longest_gap(acks: dict[str, list[float]], start: float, end: float) -> float | None:
    """The longest time between two consecutive acknowledgements of one context, over the gaps that
    overlap [start, end] (so the one the failover opened is in, whenever it began)."""
    gaps = [nxt - prev for times in acks.values() for prev, nxt in zip(times, times[1:]) if nxt >= start and prev <= end]
    return max(gaps) if gaps else None


def first_after(times, after: float) -> float | None:
    later = [t for t in times if t >= after]
    return min(later) if later else None


def server_view(pair, vip: str, after: float) -> tuple[float | None, float | None]:
    """From node-b's csserver log: when it saw `vip` arrive, and when it first adopted one of node-a's
    contexts, both after `after`."""
    events = pair.cs["b"].events()
    seen = first_after([event_time(e) for e in events
                        if e.get("event") == "local_addresses_changed" and vip in e.get("added", [])], after)
    adopted = first_after([event_time(e) for e in events
                           if e.get("event") == "context_adopted" and e.get("old_owner") == "cs-a"], after)
    return seen, adopted


def failover_trial(pair, writer: WriterLog, probe_url: str, workdir: Path, settings: Settings, index: int) -> dict:
    """Crash node-a while the prober and the writer run, wait for node-b to serve, bring node-a back."""
    vip = pair.vip("a")
    probes = Tail(workdir / f"probe-{index}.jsonl")
    prober = python_in_lab(pair.client, ["-m", "bench.csserver_client", "probe", "--url", probe_url, "--interval",
                                         str(settings.probe_interval), "--timeout", str(settings.probe_timeout)],
                           probes.path)

    def resumed(after: float) -> bool:  # every context of node-a's written 20 times since `after`
        return all(sum(t > after for t in times) >= 20 for times in writer.acks_of("cs-a").values())

    watcher = AddressWatcher(pair.host("b")).start()
    try:
        wait_until(lambda: any(p[2] == 200 for p in probes.read()), 10, 0.02,
                   message=f"the prober never got an answer:\n{probes.text()}")
        crashed = pair.crash("a")
        # Only the netlink watcher is polled while the failover runs: no `ip` processes on the busy machine.
        arrived = wait_until(lambda: watcher.first_add(vip, crashed), 5, 0.005, message=f"VIP-A never moved\n{pair.describe()}")
        wait_until(lambda: any(p[2] == 200 and p[1] > arrived for p in probes.read()), 5, 0.01,
                   message=f"no probe was answered after the takeover:\n{probes.text()}")
        wait_until(lambda: resumed(arrived), 20, 0.02, message="the writer did not resume on node-a's contexts")
        if pair.holders(vip) != ["b"]:
            raise AssertionError(f"VIP-A is not on node-b alone after the takeover\n{pair.describe()}")
    finally:
        watcher.stop()
        if prober.poll() is None:
            prober.send_signal(signal.SIGTERM)
        prober.wait(10)
    failover_end = time.monotonic()

    recovered = pair.recover("a")
    pair.wait_steady(30)
    steady = time.monotonic()
    wait_until(lambda: resumed(steady), 20, 0.02, message="the writer did not resume after the failback")
    failback_end = time.monotonic()

    answered = [p for p in probes.read() if p[2] == 200]
    last_before = max((p[1] for p in answered if p[1] <= crashed), default=None)
    probe_first = min(p[1] for p in answered if p[1] > arrived)
    writer_first = first_after([t for times in writer.acks_of("cs-a").values() for t in times], arrived)
    seen, adopted = server_view(pair, vip, crashed)
    outcomes: dict[str, int] = {}
    for p in probes.records:
        if p[1] > crashed and p[0] < arrived + 0.5:
            outcomes[str(p[2])] = outcomes.get(str(p[2]), 0) + 1
    return {
        "trial": index,
        "takeover": arrived - crashed,  # crash -> VIP-A on node-b (netlink)
        "vip_to_csserver_saw": None if seen is None else seen - arrived,
        "vip_to_adopted_logged": None if adopted is None else adopted - arrived,
        "vip_to_first_served": min(probe_first, writer_first or probe_first) - arrived,
        "vip_to_first_probe_answer": probe_first - arrived,
        "service_gap": None if last_before is None else probe_first - last_before,
        "client_gap": longest_gap(writer.acks_of("cs-a"), crashed, failover_end),
        "unaffected_gap": longest_gap(writer.acks_of("cs-b"), crashed, failover_end),
        "failback_gap": longest_gap(writer.acks_of("cs-a"), recovered, failback_end),
        "failback_seconds": steady - recovered,  # node-a's recover() -> the pair steady again
        "probe_outcomes": outcomes,  # probes ending after the crash, sent before VIP + 0.5 s: 200, 421, timeout...
    }


def failover_trials(pair, workdir: Path, settings: Settings, label: str, progress) -> dict:
    """The writer runs through every trial; a trial that fails ends the series, the finished ones count."""
    async def create() -> str:
        async with Client(cluster=pair.cluster, port=pair.port, deadline_s=10) as cs:
            return (await cs.create(labels={"bench": "probe"}, via="cs-a"))["haid"]

    haid = in_netns(pair.client, lambda: asyncio.run(create()))
    probe_url = f"http://{pair.vip('a')}:{pair.port}/v1/contexts/{quote(haid, safe='')}"
    writer = WriterLog(workdir / "writer.jsonl")
    proc = python_in_lab(pair.client, ["-m", "labkit.writer", "--cluster", json.dumps(pair.cluster), "--port",
                                       str(pair.port), "--contexts", str(settings.writer_contexts), "--pace",
                                       str(settings.writer_pace), "--deadline", "15", "--attempt-timeout",
                                       str(settings.attempt_timeout)], writer.path)
    result: dict = {"trials": []}
    try:
        wait_until(lambda: (acks := writer.acks_of("cs-a")) and all(len(t) >= 20 for t in acks.values()),
                   20, 0.05, message=f"the writer never got going:\n{writer.text()}")
        for i in range(1, settings.trials + 1):
            t = failover_trial(pair, writer, probe_url, workdir, settings, i)
            result["trials"].append(t)
            progress(f"csserver {label} failover {i}/{settings.trials}: takeover {t['takeover']:.3f}s, "
                     f"VIP -> first served {t['vip_to_first_served'] * 1000:.1f} ms, "
                     f"client gap {fmt_s(t['client_gap'])}, service gap {fmt_s(t['service_gap'])}, "
                     f"failback gap {fmt_s(t['failback_gap'])}")
    except AssertionError as exc:
        progress(f"csserver {label} failover: FAILED after {len(result['trials'])} trials: {exc}")
        result["failed"] = str(exc)[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    writer.acks_of("cs-a")  # the summary line, written at exit
    result.update(writer=writer.summary or {}, writer_exit=proc.returncode)
    return result


def store_failover_runs(settings: Settings, progress) -> dict:
    """labkit/store_failover.py once per fault: the writer's longest gap and its losses."""
    from labkit import store_failover

    runs: dict = {}
    for fault in settings.store_failover:
        progress(f"csserver store failover: PostgreSQL primary {'stopped' if fault == 'stop' else 'frozen'}, "
                 f"standby promoted")
        try:
            with store_failover.lab() as lab:
                outcome = store_failover.run(lab, fault)
        except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            progress(f"csserver store failover ({fault}): FAILED: {exc}")
            runs[fault] = {"failed": str(exc)[-3000:]}
            continue
        s = outcome.summary
        runs[fault] = {"max_gap": s["max_gap"], "max_call": s["max_call"], "acked": s["acked"], "lost": s["lost"],
                       "gave_up": s["errors"], "stale_writes": len(outcome.stale_writes), "audited": outcome.audited,
                       "promotion_s": outcome.promoted_at - outcome.fault_at}
        progress(f"csserver store failover ({fault}): longest writer gap {s['max_gap']:.2f} s, acked {s['acked']}, "
                 f"lost {s['lost']}, gave up {s['errors']}, stale-epoch writes {len(outcome.stale_writes)}")
    return runs


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def store_bench(store: str, store_url: str | None, workdir: Path, settings: Settings, progress) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"store": store}
    with lab_for_pair() as lab:
        pair = Pair.start(lab, advert_interval=settings.advert_interval, preempt_delay=settings.preempt_delay,
                          store_url=store_url)
        progress(f"csserver {store}: GET/PUT through VIP-A, {settings.concurrency} workers, "
                 f"{settings.duration:g}s each")
        load = throughput(pair, workdir, settings)
        result["throughput"], result["bare"] = load["phases"], load.get("bare", {})
        for op, phase in load["phases"].items():
            bare = result["bare"].get(op)
            ratio = f", x{phase['per_second'] / bare['per_second']:.2f} of the bare handler's " \
                    f"{bare['per_second']:.0f}/s" if bare and bare["per_second"] else ""
            progress(f"csserver {store} {op.upper()}: {phase['per_second']:.0f}/s{ratio}, p50 {phase['p50_ms']:.2f} ms, "
                     f"p99 {phase['p99_ms']:.2f} ms, failures {phase['failures'] or 0}")
        progress(f"csserver {store}: {settings.trials} failover trials at advert_interval {settings.advert_interval}s")
        result["failover"] = failover_trials(pair, workdir, settings, store, progress)
    return result


def run(workdir: Path, progress, settings: Settings | None = None) -> dict:
    """Both stores (PostgreSQL recorded as skipped when it cannot be started); writes csserver.json and the
    plots, returns what it wrote."""
    settings = settings or Settings()
    mdi = master_down_interval(settings.advert_interval)
    result = {"settings": asdict(settings), "master_down_interval": mdi, "gap_target": mdi + GAP_MARGIN,
              "adoption_target": ADOPTION_TARGET, "load_average_start": os.getloadavg()[0], "stores": {}}
    for store in settings.stores:
        try:
            if store == "sqlite":
                result["stores"][store] = store_bench(store, None, workdir / store, settings, progress)
                continue
            url, problem = postgres_url(progress)
            if url is None:
                progress(f"csserver postgresql: skipped: {problem}")
                result["stores"][store] = {"store": store, "skipped": problem}
                continue
            with pg_schema(url) as schema_url:
                result["stores"][store] = store_bench(store, lab_pg_url(schema_url), workdir / store, settings,
                                                      progress)
        except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            # One store's failure is a result too; the other store (and the rest of `make bench`) still runs.
            progress(f"csserver {store}: FAILED: {exc}")
            result["stores"][store] = {"store": store, "failed": str(exc)[-3000:]}
    if settings.store_failover and "postgresql" in settings.stores:
        result["store_failover"] = store_failover_runs(settings, progress)
    result["load_average_end"] = os.getloadavg()[0]  # other work on the machine shows in the figures
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "csserver.json").write_text(json.dumps(result, indent=2))
    result["plots"] = [str(p) for p in plot(result)]
    return result


# ---- the summary table and the plots ----------------------------------------------------------------

def _values(trials: list[dict], key: str) -> list[float]:
    return [t[key] for t in trials if t.get(key) is not None]


def _med_max(values: list[float], ms: bool = False) -> str:
    if not values:
        return "-"
    if ms:
        return f"{statistics.median(values) * 1000:.1f} / {max(values) * 1000:.1f} ms"
    return f"{statistics.median(values):.3f} / {max(values):.3f} s"


def _against(values: list[float], target: float) -> str:
    """median / target, and how many trials met the target."""
    if not values:
        return "-"
    return f"x{statistics.median(values) / target:.2f}, {sum(v <= target for v in values)}/{len(values)} met"


FAILOVER_ROWS = (  # label, trial key, in ms
    ("takeover: crash -> VIP on node-b", "takeover", False),
    ("VIP -> csserver saw it (its log)", "vip_to_csserver_saw", True),
    ("VIP -> first adoption (its log)", "vip_to_adopted_logged", True),
    ("VIP -> first served request", "vip_to_first_served", True),
    ("client gap (writer)", "client_gap", False),
    ("service gap (prober)", "service_gap", False),
    ("gap on node-b's own contexts", "unaffected_gap", False),
    ("failback gap (node-a returns)", "failback_gap", False),
)


def summary_lines(result: dict) -> list[str]:
    s, stores = result["settings"], result["stores"]
    lines = ["", f"csserver through VIP-A, {s['concurrency']} keep-alive workers in the client namespace, "
                 f"{s['duration']:g} s per operation:",
             f"{'store':>11} {'op':>4} {'req/s':>7} {'p50':>9} {'p99':>9} {'max':>9} {'failures':>9}"]
    for name, r in stores.items():
        if "throughput" not in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r.get('failed', '?')[:300]}"
            lines.append(f"{name:>11}  {why}")
            continue
        for op, p in r["throughput"].items():
            lines.append(f"{name:>11} {op.upper():>4} {p['per_second']:>7.0f} {p['p50_ms']:>6.2f} ms {p['p99_ms']:>6.2f} ms "
                         f"{p['max_ms']:>6.1f} ms {sum(p['failures'].values()):>9}")
        for op, p in r.get("bare", {}).items():
            mine = r["throughput"][op]["per_second"]
            target = THROUGHPUT_TARGETS.get(op)
            lines.append(f"{'':>11} {op.upper():>4} bare aiohttp handler {p['per_second']:.0f}/s: csserver "
                         f"x{mine / max(p['per_second'], 1e-9):.2f}" + (f" (target >= x{target})" if target else ""))
        put = r["throughput"].get("put")
        if put:
            lines.append(f"{'':>11}  PUT p99 {put['p99_ms']:.2f} ms (target < {PUT_P99_TARGET_MS:g} ms)")
    if all("throughput" in stores.get(n, {}) for n in ("sqlite", "postgresql")):
        pg, lite = stores["postgresql"]["throughput"], stores["sqlite"]["throughput"]
        ratios = ", ".join(f"{op.upper()} {pg[op]['per_second'] / max(lite[op]['per_second'], 1e-9):.2f}" for op in lite)
        lines.append(f"{'':>11} req/s ratio postgresql / sqlite: {ratios}")

    for name, r in stores.items():
        if r.get("failover", {}).get("failed"):
            lines.append(f"{name:>11}  failover trials stopped after {len(r['failover']['trials'])}: "
                         f"{r['failover']['failed'][:300]}")
    for fault, run in result.get("store_failover", {}).items():
        if "failed" in run:
            lines.append(f"store failover ({fault}): FAILED: {run['failed'][:300]}")
            continue
        lines.append(f"store failover, PostgreSQL primary {'stopped' if fault == 'stop' else 'frozen'}: longest "
                     f"writer gap {run['max_gap']:.2f} s (target < {STORE_FAILOVER_GAP_TARGET:g} s), acked "
                     f"{run['acked']}, lost {run['lost']}, gave up {run['gave_up']}, stale-epoch writes "
                     f"{run['stale_writes']} of {run['audited']} audited")
    done = {n: r["failover"] for n, r in stores.items() if r.get("failover", {}).get("trials")}
    if not done:
        return lines
    gap_target, adopt_target = result["gap_target"], result["adoption_target"]
    trials = {n: f["trials"] for n, f in done.items()}
    lines += ["", f"csserver failover: node-a crashed (link down, SIGKILL) at advert_interval {s['advert_interval']} s, "
                  f"Master_Down_Interval {result['master_down_interval']:.4f} s;",
              f"median / max over trials ({', '.join(f'{n} {len(t)}' for n, t in trials.items())}); "
              f"the writer's attempt timeout {s['attempt_timeout']:g} s",
              f"  {'':34}" + "".join(f"{n:>22}" for n in trials) + "   target"]
    for label, key, ms in FAILOVER_ROWS:
        line = f"  {label:34}" + "".join(f"{_med_max(_values(t, key), ms):>22}" for t in trials.values())
        if key == "vip_to_first_served":
            line += f"   < {adopt_target * 1000:.0f} ms"
            lines += [line, f"  {'  median / target, trials met':34}" +
                      "".join(f"{_against(_values(t, key), adopt_target):>22}" for t in trials.values())]
        elif key == "client_gap":
            line += f"   <= {gap_target:.3f} s (MDI + {GAP_MARGIN * 1000:.0f} ms)"
            lines += [line, f"  {'  median / target, trials met':34}" +
                      "".join(f"{_against(_values(t, key), gap_target):>22}" for t in trials.values())]
        else:
            lines.append(line)
    writers = [f.get("writer", {}) for f in done.values()]
    lines.append(f"  {'writes acked / gave up / lost':34}" + "".join(
        f"{w.get('acked', '?')} / {w.get('errors', '?')} / {w.get('lost', '?'):<3}".rjust(22) for w in writers)
        + "   0 lost")
    return lines


def plot(result: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    stores = {n: r for n, r in result["stores"].items() if r.get("failover", {}).get("trials")}
    paths = []
    if stores:
        fig, (gap_ax, adopt_ax) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
        for name, r in stores.items():
            trials = r["failover"]["trials"]
            x = [t["trial"] for t in trials]
            c = colors_for(name)
            gap_ax.plot(x, [t["client_gap"] * 1000 if t["client_gap"] else float("nan") for t in trials], "o-",
                        color=c, label=f"{name}: client gap (writer)")
            gap_ax.plot(x, [t["service_gap"] * 1000 if t["service_gap"] else float("nan") for t in trials], "s--",
                        color=c, alpha=0.6, label=f"{name}: service gap (prober)")
            adopt_ax.plot(x, [t["vip_to_first_served"] * 1000 for t in trials], "o-", color=c, label=name)
        gap_ax.axhline(result["gap_target"] * 1000, color="red", linestyle="--",
                       label=f"target: MDI + {GAP_MARGIN * 1000:.0f} ms = {result['gap_target'] * 1000:.0f} ms")
        gap_ax.axhline(result["master_down_interval"] * 1000, color="grey", linestyle=":",
                       label=f"Master_Down_Interval {result['master_down_interval'] * 1000:.0f} ms")
        gap_ax.set_ylim(bottom=0)
        gap_ax.set_xlabel("failover trial")
        gap_ax.set_ylabel("longest time without an answer (ms)")
        gap_ax.set_title(f"Client gap when node-a fails (advert_interval {result['settings']['advert_interval']} s)",
                         fontsize=10)
        gap_ax.legend(fontsize=7, loc="lower right")
        adopt_ax.axhline(result["adoption_target"] * 1000, color="red", linestyle="--",
                         label=f"target {result['adoption_target'] * 1000:.0f} ms")
        adopt_ax.set_ylim(bottom=0)
        adopt_ax.set_xlabel("failover trial")
        adopt_ax.set_ylabel("ms after VIP-A arrived on node-b")
        adopt_ax.set_title("VIP on node-b -> first served request\non an orphaned context", fontsize=10)
        adopt_ax.legend(fontsize=7, loc="center right")
        for ax in (gap_ax, adopt_ax):
            ax.set_xticks(sorted({t["trial"] for r in stores.values() for t in r["failover"]["trials"]}))
            ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(RESULTS / "csserver-failover.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    loads = {n: r["throughput"] for n, r in result["stores"].items() if r.get("throughput")}
    if loads:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        styles = {"get": "-", "put": "--"}
        for name, phases in loads.items():
            for op, p in phases.items():
                if p["cdf_ms"]:
                    ax.plot(p["cdf_ms"], range(101), styles.get(op, ":"), color=colors_for(name),
                            label=f"{name} {op.upper()}: {p['per_second']:.0f}/s, p99 {p['p99_ms']:.1f} ms")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("percent of requests answered within")
        ax.set_title(f"csserver latency through VIP-A, {result['settings']['concurrency']} concurrent clients",
                     fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        paths.append(RESULTS / "csserver-latency.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def colors_for(store: str) -> str:
    return {"sqlite": "tab:blue", "postgresql": "tab:orange"}.get(store, "tab:green")
