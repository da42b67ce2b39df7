"""Chaos: random faults on the dual-master pair while a client writes, with the invariants checked throughout.

    python -m labkit.chaos [--full] [--cycles N] [--time-limit S] [--seed N] [--margin S]

Builds the lab of tests/lab/pair.py: node-a (192.0.2.1) and node-b (192.0.2.2) each run vrrpd and csserver
from the conf/ samples, with advert_interval 0.1 s and preempt_delay 0.5 s; a client host (192.0.2.3) runs
the writer (tests/lab/writer.py), which writes a new key to each of its contexts every --pace seconds
through the VIPs, retrying through failovers. Beside it, a contender writes to the same contexts through
each node's own address, one attempt per write (every --contend seconds per node): a client whose ARP
entry names that node. One client's ARP entry names one node at a time, so without the contender the two
sides of a split brain would hardly ever serve one context at once, and the fencing would go untested.

Then come the cycles. Each starts from a steady pair (each node master of its own VIP and backup of the
other's, every health check up), injects one fault on a random node, holds it for a random time, repairs
it and waits for the pair to settle again. Faults are dealt from a shuffled deck, so each kind comes up
once in every round of as many cycles as there are kinds:

  kill vrrpd       SIGKILL vrrpd (its VIPs stay on the interface); start it again after 0.5-2 s
  kill csserver    SIGKILL csserver; start it again after 0.5-4 s (the samples' health check, interval 1 s,
                   fall 2, weight -60, moves its VIP to the peer after about 2-3 s)
  freeze vrrpd     SIGSTOP vrrpd, SIGCONT after 0.5-3 s
  freeze csserver  SIGSTOP csserver, SIGCONT after 0.5-3 s
  link down        the node's cable pulled (its bridge port down) for 0.5-3 s
  partition        nftables in both nodes drop VRRP (IP protocol 112) from and to the peer for 1-3 s;
                   the rest still flows. It heals one node first (the faulted one), as real links do
  store restart    the test PostgreSQL stopped (--pg-script stop) and started again after 0.2-2 s

The run is bounded: at most --cycles cycles, no cycle starts once the time limit is near, and every wait
has a deadline. The lab is always removed (on errors, Ctrl-C and SIGTERM too); a frozen daemon is continued
and a stopped store started again first. The same --seed deals the same faults, nodes and hold times.

STORE
  PostgreSQL when CSSERVER_TEST_PG_URL (or scripts/test-postgres.env) names a server that answers: a schema
  of the run's own (dropped afterwards), each node connecting with application_name csserver-<alias>.
  Otherwise one SQLite file both nodes share, without the store-restart fault and without the audit below
  (said so at the start).

INVARIANTS (each violation is listed at the end, and the exit status is 1)
  one holder   For each VIP, the netlink address events of both nodes (stamped as they happen) give the
               windows when not exactly one node on the network holds it; a node whose cable is pulled
               holds nothing. While VRRP cannot know better (a partition, a frozen vrrpd, a killed vrrpd
               whose VIPs stay on its interface) both sides may hold a VIP. Any other window, and whatever
               part of one outlasts such a fault, must end within Master_Down_Interval (at most
               4 x advert_interval) plus --margin: the VIP-less gap of a failover, the overlap of a
               preemption handover. After each cycle the pair must settle within 30 s, and then
               `ip address` must show each VIP on its master only, as the events say.
  no stale     csserver refuses a write under a stale epoch (409) and does not apply it. Seen from outside:
  write        (1) each contender write answered 4xx (409 stale epoch, 421 not served there) must be absent
               from the store at the end, each answered 2xx present as sent (a timeout or a 503 may go
               either way). (2) The store is the witness of every write: triggers in the run's schema
               record, inside the very transaction of each write, the node that wrote (its
               application_name) and the context's owner and epoch at that instant, and every change of
               owner or epoch. Checked: every value was written by the context's owner of that instant
               (adoption always changes the owner, so a write applied under a stale epoch shows as a write
               by a node that is not the owner); each context's epoch rises by exactly one per adoption,
               each adoption made by the new owner; each key was written once (version 1: a retried write
               applied twice would be version 2). Not visible from outside: which epoch a node believed
               it held when it wrote. csserver's logs count its refusals (409: stale_epoch_refused, kept
               across restarts, unlike /metrics), which shows the fencing was exercised.
  none lost    Every acknowledged write is readable at the end with its value: the writer reads every
               context back through the VIPs, and the store is read directly; nothing is stored that no
               client sent.
  no deaths    vrrpd and csserver on both nodes are polled before and after every fault: an exit that is not
               our SIGKILL is a violation.

FINDINGS (printed, not counted as violations: availability is a figure here, not an invariant)
  stall        After a cycle has settled, a context got no write acknowledged within the writer's
               deadline (--deadline): the pair is steady, yet the client cannot reach the VIP's holder,
               e.g. because its ARP entry still names the other node. The cycle waits for the stall to end
               (90 s at most, within the time limit) and tells how long it lasted.

OUTPUT
  A line per cycle, then the figures: cycles, faults by kind, writes acknowledged, lost and given up,
  the longest client gap (between two acknowledgements of one context) and its cycles, split-brain windows
  (both nodes holding one VIP) by cause with their lengths, VIP-less windows, the contender's answers,
  stale-epoch refusals, adoptions and audited writes.

EXIT STATUS
  0 every invariant held; 1 a violation; 2 not root; 130 interrupted.

EXAMPLES
  make chaos                                        the full run (40 cycles, 10 min at most) on PostgreSQL
  sudo .venv/bin/python -m labkit.chaos --seed 7  the short run, with the faults of seed 7
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from csserver.haid import decode
from labkit.pg import pg_problem, pg_schema, pg_url
from labkit.chaos_watch import (
    KINDS, ChaosPair, Contender, Fault, Feed, Result, VipLedger, app_name, install_audit, judge,
    master_down_bound, report,
)
from labkit.netns import wait_until
from labkit.pair import ALIAS, NODES, VI, lab_for_pair, lab_pg_url
from labkit.vrrpd_node import REPO

HOLD_S = {"kill vrrpd": (0.5, 2.0), "kill csserver": (0.5, 4.0), "freeze vrrpd": (0.5, 3.0),
          "freeze csserver": (0.5, 3.0), "link down": (0.5, 3.0), "partition": (1.0, 3.0),
          "store restart": (0.2, 2.0)}
QUIET_S = (0.3, 1.0)  # steady traffic between a cycle's settling and the next fault
ADVERT_INTERVAL = 0.1
PREEMPT_DELAY = 0.5
SETTLE_S = 30.0
RESTART_S = 20.0  # for a restarted daemon to answer
STALL_S = 90.0  # waited at most for every context to progress after a cycle settled
RESERVE_S = 25.0  # kept at the end of the time limit for the read-back and the checks
CYCLE_BUDGET_S = 10.0  # a cycle starts only with this much left before the reserve
NFT_TABLE = "vrrpchaos"
SHORT = {"cycles": len(KINDS), "time_limit": 90.0}
FULL = {"cycles": 40, "time_limit": 600.0}


class Chaos:
    def __init__(self, args: argparse.Namespace, out=print):
        self.args = args
        self.out = out
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.time_limit
        self.tolerance = master_down_bound(ADVERT_INTERVAL) + args.margin
        self.pg: str | None = None  # the schema's conninfo, as the harness reaches it (127.0.0.1)
        self.pg_script = args.pg_script
        self.store_down = False
        self.frozen: set[int] = set()
        self.killed: set[int] = set()
        self.reported: set[int] = set()
        self.result = Result(args.seed, "")

    def say(self, message: str) -> None:
        self.out(f"[{time.monotonic() - self.t0:6.1f}s] {message}")

    def violation(self, message: str) -> None:
        self.result.violations.append(message)
        self.say(f"VIOLATION: {message}")

    def finding(self, message: str) -> None:
        """Worth a look, but no invariant of the issue: clients stalled although the pair had settled."""
        self.result.findings.append(message)
        self.say(f"FINDING: {message}")

    # ---- setup ------------------------------------------------------------------------------------

    def choose_store(self) -> str | None:
        url = pg_url()
        problem = pg_problem(url)
        if problem:
            self.say(f"store: one shared SQLite file ({problem}); no store-restart fault, no store audit")
            self.result.store = "SQLite (shared file)"
            return None
        self.result.store = "PostgreSQL"
        return url

    def run(self) -> Result:
        url = self.choose_store()
        kinds = [k for k in KINDS if url or k != "store restart"]
        with ExitStack() as stack:
            store_url = None
            if url:
                self.pg = stack.enter_context(pg_schema(url))
                store_url = lab_pg_url(self.pg)
                stack.callback(self.ensure_store_up)  # the schema is dropped after this, the lab closed before
            self.say("building the lab: node-a 192.0.2.1, node-b 192.0.2.2, client 192.0.2.3")
            lab = stack.enter_context(lab_for_pair())
            stack.callback(self.thaw_all)  # runs before the lab closes: SIGTERM reaches no stopped process
            self.pair = ChaosPair.start(lab, advert_interval=ADVERT_INTERVAL, preempt_delay=PREEMPT_DELAY,
                                        store_url=store_url, wait=False)
            self.pair.wait_steady(60)
            if self.pg:
                install_audit(self.pg)
            self.ledger = VipLedger(self.pair)
            self.start_writer(lab)
            if self.args.contend:
                self.contender = Contender(self.pair, [c["haid"] for c in self.feed.created], self.args.contend)
                stack.callback(self.contender.stop.set)
            self.say(f"steady, writer going ({len(self.feed.created)} contexts); seed {self.args.seed}, "
                     f"up to {self.args.cycles} cycles in {self.args.time_limit:g} s; faults: {', '.join(kinds)}")
            self.cycles(kinds)
            self.finish()
        return self.result

    def start_writer(self, lab) -> None:
        self.writer_err = open(lab.tmpdir / "writer.err", "w")
        lab.closers.append(self.writer_err.close)
        self.writer = self.pair.client.popen(
            [sys.executable, "-m", "labkit.writer", "--cluster", json.dumps(self.pair.cluster),
             "--port", str(self.pair.port), "--contexts", str(self.args.contexts), "--pace", str(self.args.pace),
             "--deadline", str(self.args.deadline), "--attempt-timeout", "0.5"],
            stdout=subprocess.PIPE, stderr=self.writer_err, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        self.feed = Feed(self.writer)
        contexts = 2 * self.args.contexts
        wait_until(lambda: len(self.feed.created) == contexts and self.feed.all_acked_since(0), 30, 0.05,
                   message=f"the writer never got going: {self.writer_tail()}")

    def writer_tail(self) -> str:
        self.writer_err.flush()
        return Path(self.writer_err.name).read_text(errors="replace")[-2000:]

    # ---- cycles -----------------------------------------------------------------------------------

    def cycles(self, kinds: list[str]) -> None:
        deck: list[str] = []
        for cycle in range(1, self.args.cycles + 1):
            if time.monotonic() + CYCLE_BUDGET_S + RESERVE_S > self.deadline:
                self.result.stopped_by = f"time limit ({self.args.time_limit:g} s) after {cycle - 1} cycles"
                self.say(f"stopping: {self.result.stopped_by}")
                return
            if not deck:
                deck = self.rng.sample(kinds, len(kinds))
            kind = deck.pop()
            fault = Fault(cycle, kind, self.rng.choice(NODES), round(self.rng.uniform(*HOLD_S[kind]), 2))
            quiet = self.rng.uniform(*QUIET_S)
            if not self.one_cycle(fault, quiet):
                self.result.stopped_by = f"cycle {cycle} did not settle"
                return
        self.result.stopped_by = f"{self.args.cycles} cycles done"

    def one_cycle(self, fault: Fault, quiet: float) -> bool:
        acks_before = self.feed.acks
        if self.writer.poll() is not None:  # the harness's own client: no invariant, but nothing to go on
            raise RuntimeError(f"the writer exited with {self.writer.returncode}: {self.writer_tail()}")
        self.check_daemons()
        fault.start = time.monotonic()
        self.result.faults.append(fault)
        self.inject(fault)
        fault.end = time.monotonic()
        self.check_daemons()
        settle_s = min(SETTLE_S, max(10.0, self.deadline - RESERVE_S - time.monotonic()))
        try:
            wait_until(self.settled, settle_s, 0.05)
        except AssertionError:
            self.violation(f"cycle {fault.cycle} ({fault.label()}): the pair did not settle within "
                           f"{settle_s:.0f} s of the repair:\n{self.pair.describe()}")
            return False
        fault.settled = time.monotonic()
        self.result.cycles += 1
        self.check_settled(fault)
        self.wait_progress(fault)
        time.sleep(quiet)  # steady traffic before the next fault
        windows = [w for w in self.ledger.windows(time.monotonic()) if w.start >= fault.start]
        split = [w for w in windows if w.kind == "split"]
        self.say(f"cycle {fault.cycle:2d}/{self.args.cycles}  {fault.label():26s} held {fault.hold:4.2f}s  "
                 f"settled +{fault.settled - fault.end:5.2f}s  acks {self.feed.acks} (+{self.feed.acks - acks_before})"
                 f"  gap {self.feed.longest_gap(fault.start):5.2f}s  split-brain {len(split)}"
                 + (f" ({max(w.length for w in split):.2f}s)" if split else ""))
        return True

    def wait_progress(self, fault: Fault) -> None:
        """Until every context has a write acknowledged after the pair settled; a stall longer than the
        writer's deadline is a finding, waited out (within STALL_S and the time limit) so that the next
        cycle starts clean and each stall is told with the cycle that caused it."""
        settled = fault.settled
        limit = max(self.args.deadline, min(STALL_S, self.deadline - RESERVE_S - time.monotonic()))
        stalled: list[str] = []

        def progressed() -> bool:
            if time.monotonic() - settled > self.args.deadline and not stalled:
                stalled.extend(self.feed.stalled_since(settled))
            return self.feed.all_acked_since(settled)

        try:
            wait_until(progressed, limit, 0.05)
        except AssertionError:
            self.finding(f"cycle {fault.cycle} ({fault.label()}): contexts {self.feed.stalled_since(settled)} got "
                         f"no write acknowledged in the {limit:.0f} s after the pair settled")
            return
        if stalled:
            self.finding(f"cycle {fault.cycle} ({fault.label()}): contexts {stalled} got no write acknowledged "
                         f"until {time.monotonic() - settled:.1f} s after the pair settled")

    def inject(self, fault: Fault) -> None:
        node, hold = fault.node, fault.hold
        host = self.pair.host(node)
        if fault.kind == "kill vrrpd":
            self.kill(self.pair.vrrpd[node].proc)
            time.sleep(hold)
            self.restart_vrrpd(node)
        elif fault.kind == "kill csserver":
            self.kill(self.pair.cs[node].proc)
            time.sleep(hold)
            self.pair.start_csserver(node)
        elif fault.kind.startswith("freeze"):
            proc = self.pair.vrrpd[node].proc if fault.kind == "freeze vrrpd" else self.pair.cs[node].proc
            self.frozen.add(proc.pid)
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(hold)
            os.kill(proc.pid, signal.SIGCONT)
            self.frozen.discard(proc.pid)
        elif fault.kind == "link down":
            host.set_link(False)
            self.ledger.cut(node)
            time.sleep(hold)
            self.ledger.rejoin(node)
            host.set_link(True)
        elif fault.kind == "partition":
            self.partition(True)
            time.sleep(hold)
            self.partition(False, first=node)  # one side hears the other first, as when a real link heals
        elif fault.kind == "store restart":
            self.store("stop")
            time.sleep(hold)
            self.store("start")
        else:
            raise ValueError(fault.kind)

    def kill(self, proc: subprocess.Popen) -> None:
        self.killed.add(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart_vrrpd(self, node: str) -> None:
        """Start vrrpd again and wait until it answers and has removed the VIPs the killed one left."""
        vrrpd = self.pair.vrrpd[node].start()
        wait_until(lambda: vrrpd.status() is not None, RESTART_S, 0.02,
                   message=f"vrrpd on node-{node} did not come back\n{vrrpd.log_text()[-2000:]}")

        def stale_gone() -> bool:
            status = vrrpd.status() or {}
            mine = {vip.split("/")[0] for i in status.get("instances", []) if i["state"] == "MASTER"
                    for vip in i["virtual_ipaddress"]}
            return not (self.pair.host(node).addresses() & (set(self.ledger.vips) - mine))

        try:
            wait_until(stale_gone, 5, 0.02)
        except AssertionError:
            self.violation(f"vrrpd on node-{node}, started again, kept a VIP it is not master of")

    def partition(self, on: bool, first: str = "a") -> None:
        for node, peer in (("a", "b"), ("b", "a")) if first == "a" else (("b", "a"), ("a", "b")):
            host, other = self.pair.host(node), self.pair.host(peer)
            if on:
                v6 = f"{{ {other.ipv6}, {other.link_local()} }}"
                rules = (f"table inet {NFT_TABLE} {{\n"
                         f" chain input {{ type filter hook input priority 0; policy accept;\n"
                         f"  ip saddr {other.ipv4} ip protocol 112 drop\n"
                         f"  ip6 saddr {v6} meta l4proto 112 drop\n }}\n"
                         f" chain output {{ type filter hook output priority 0; policy accept;\n"
                         f"  ip daddr {other.ipv4} ip protocol 112 drop\n"
                         f"  ip6 daddr {v6} meta l4proto 112 drop\n }}\n}}\n")
                host.run(["nft", "-f", "-"], input=rules)
            else:
                host.run(["nft", "delete", "table", "inet", NFT_TABLE])

    def store(self, action: str) -> None:
        if action == "stop":
            self.store_down = True  # from now on, whatever happens, it is started again at the end
        proc = subprocess.run([self.pg_script, action], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.pg_script} {action} failed: {proc.stderr.strip()}")
        if action == "start":
            self.store_down = False

    # ---- checks -----------------------------------------------------------------------------------

    def settled(self) -> bool:
        """Each node master of its own VIP and backup of the other's at full priority (health checks up),
        and `ip address` shows each VIP on its master only."""
        status = {n: self.pair.vrrpd[n].status() if self.pair.vrrpd[n].alive() else None for n in NODES}
        if any(s is None for s in status.values()):
            return False
        for node, other in (("a", "b"), ("b", "a")):
            inst = {i["name"]: i for i in status[node]["instances"]}
            if inst[VI[node]]["state"] != "MASTER" or inst[VI[other]]["state"] != "BACKUP":
                return False
            if any(i["effective_priority"] != i["priority"] for i in inst.values()):
                return False
        return all(self.pair.holders(self.pair.vip(n)) == [n] for n in NODES)

    def check_settled(self, fault: Fault) -> None:
        self.result.settle_checks += 1
        self.check_daemons()
        for node in NODES:
            truth = self.pair.host(node).addresses() & set(self.ledger.vips)
            if truth != {self.pair.vip(node)}:
                self.violation(f"cycle {fault.cycle}: after settling node-{node} holds {sorted(truth)}")
            # The watcher reads its events a moment after the kernel sends them.
            wait_until(lambda: self.ledger.held_now(node) == truth, 2, 0.01,
                       message=f"the address events of node-{node} disagree with `ip address` "
                               f"({sorted(self.ledger.held_now(node))} vs {sorted(truth)}): events were lost")

    def check_daemons(self) -> None:
        for node in NODES:
            for name, proc in (("vrrpd", self.pair.vrrpd[node].proc), ("csserver", self.pair.cs[node].proc)):
                code = proc.poll()
                if code is None or proc.pid in self.killed or proc.pid in self.reported:
                    continue
                self.reported.add(proc.pid)
                log = (self.pair.vrrpd[node].log_text() if name == "vrrpd"
                       else self.pair.cs[node].log_path.read_text(errors="replace"))
                self.result.deaths.append(f"{name} on node-{node} (exit {code})")
                self.violation(f"{name} on node-{node} exited with {code}, not by our signal; log tail:\n"
                               f"{log[-1500:]}")

    def cycle_at(self, when: float) -> int:
        started = [f.cycle for f in self.result.faults if f.start <= when]
        return started[-1] if started else 0

    def thaw_all(self) -> None:
        for pid in list(self.frozen):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen.clear()

    def ensure_store_up(self) -> None:
        if self.store_down:
            self.store("start")

    # ---- the end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        result = self.result
        if not self.settled():
            try:
                wait_until(self.settled, SETTLE_S, 0.05)
            except AssertionError:
                self.violation(f"at the end the pair is not settled:\n{self.pair.describe()}")
        self.contended = self.contender.finish() if self.args.contend else {}
        self.check_daemons()
        self.say("stopping the writer; it reads every context back")
        self.writer.terminate()
        try:
            self.writer.wait(self.args.deadline + 60)
        except subprocess.TimeoutExpired:
            self.violation("the writer did not finish its read-back")
        self.feed.thread.join(10)
        summary = self.feed.summary
        if summary is None:
            raise RuntimeError(f"the writer printed no summary: {self.writer_tail()}")
        result.acked, result.lost, result.gave_up = summary["acked"], summary["lost"], summary["errors"]
        if summary["lost"]:
            self.violation(f"{summary['lost']} acknowledged writes are not readable: {summary['lost_keys']}")
        with self.feed.lock:
            gaps = list(self.feed.gaps)
        if gaps:
            end, gap, haid = max(gaps, key=lambda g: g[1])
            result.longest_gap = (gap, self.cycle_at(end - gap), self.cycle_at(end), haid)
        self.check_store()
        now = time.monotonic()
        result.windows = self.ledger.windows(now)
        for window in result.windows:
            judge(window, result.faults, now)
            if window.excess > self.tolerance:
                what = "held by both nodes" if window.kind == "split" else "held by no node"
                self.violation(f"VIP {window.vip} {what} for {window.length:.2f} s (cycle {window.cycle}, "
                               f"{window.cause}), {window.excess:.2f} s of it beyond what a fault excuses "
                               f"(allowed {self.tolerance:.2f} s)")
        logged = [e for n in NODES for e in self.pair.past_events[n] + self.pair.cs[n].events()]
        result.stale_refusals = sum(1 for e in logged if e.get("event") == "stale_epoch_refused")
        self.check_daemons()

    def check_store(self) -> None:
        """Read the store directly: every acknowledged write there, nothing the client never sent, every key
        written once; with PostgreSQL, the audit of who wrote under which owner and epoch."""
        with self.feed.lock:
            ids = {decode(h).id: h for h in self.feed.acked_keys}
            acked = {h: set(k) for h, k in self.feed.acked_keys.items()}
            sent = {h: acked[h] | self.feed.error_keys[h] for h in acked}
        contended = {h: {} for h in acked}
        for key, (haid, node, outcome) in self.contended.items():
            contended[haid][key] = outcome
            sent[haid].add(key)
            self.result.contended[str(outcome)] += 1
        if self.pg:
            import psycopg

            with psycopg.connect(self.pg, autocommit=True) as conn:
                values = conn.execute("SELECT context_id, key, value, version FROM context_values").fetchall()
                writes = conn.execute("SELECT writer, context_id, key, version, owner, epoch "
                                      "FROM chaos_value_writes ORDER BY seq").fetchall()
                epochs = conn.execute("SELECT writer, context_id, old_owner, old_epoch, owner, epoch "
                                      "FROM chaos_epochs ORDER BY seq").fetchall()
            self.check_audit(writes, epochs, ids)
        else:
            path = Path(self.pair.store_url.removeprefix("sqlite://"))
            with sqlite3.connect(path) as conn:
                values = conn.execute("SELECT context_id, key, value, version FROM context_values").fetchall()
        stored: dict[str, dict[str, tuple]] = {h: {} for h in acked}
        for context_id, key, value, version in values:
            if context_id in ids:
                stored[ids[context_id]][key] = (json.loads(value), int(version))
        for haid in acked:
            missing = [k for k in acked[haid] if stored[haid].get(k, (None,))[0] != {"seq": int(k[1:])}]
            unsent = sorted(set(stored[haid]) - sent[haid])
            twice = sorted(k for k, (_, version) in stored[haid].items() if version != 1)
            if missing:
                self.violation(f"{haid}: acknowledged but not in the store as written: {sorted(missing)[:10]}")
            if unsent:
                self.violation(f"{haid}: in the store but never sent by the client: {unsent[:10]}")
            if twice:
                self.violation(f"{haid}: keys applied more than once (version > 1): {twice[:10]}")
            self.check_contended(haid, contended[haid], stored[haid])

    def check_contended(self, haid: str, outcomes: dict[str, int | str], stored: dict[str, tuple]) -> None:
        """A contender's write answered 2xx is stored as sent; one refused (4xx: 409 stale epoch, 421 not
        served here...) is not stored at all. A timeout or a 503 may go either way."""
        lost = [k for k, o in outcomes.items() if isinstance(o, int) and 200 <= o < 300
                and stored.get(k, (None,))[0] != {"node": k[1], "seq": int(k[2:])}]
        applied = [f"{k} ({o})" for k, o in outcomes.items() if isinstance(o, int) and 400 <= o < 500 and k in stored]
        self.result.refused_but_stored += len(applied)
        if lost:
            self.violation(f"{haid}: contender writes acknowledged but not stored as sent: {sorted(lost)[:10]}")
        if applied:
            self.violation(f"{haid}: contender writes refused yet applied: {sorted(applied)[:10]}")

    def check_audit(self, writes: list[tuple], epochs: list[tuple], ids: dict[int, str]) -> None:
        alias = {app_name(n): ALIAS[n] for n in NODES}
        self.result.audited_writes = len(writes)
        for writer, context_id, key, version, owner, epoch in writes:
            if alias.get(writer) != owner:
                self.result.foreign_writes += 1
                self.violation(f"{ids.get(context_id, context_id)}/{key} was applied by {writer} while "
                               f"{owner} owned the context at epoch {epoch}: a write under a stale epoch")
        last: dict[int, tuple[str, int]] = {}
        adoptions = 0
        for writer, context_id, old_owner, old_epoch, owner, epoch in epochs:
            name = ids.get(context_id, context_id)
            if alias.get(writer) != owner:
                self.violation(f"{name}: {writer} made {owner} the owner at epoch {epoch}")
            if old_owner is None:  # created
                if epoch != 1 or context_id in last:
                    self.violation(f"{name}: created at epoch {epoch}")
            else:
                adoptions += 1
                if last.get(context_id) != (old_owner, old_epoch) or epoch != old_epoch + 1 or owner == old_owner:
                    self.violation(f"{name}: owner/epoch went from {last.get(context_id)} (recorded "
                                   f"{(old_owner, old_epoch)}) to {(owner, epoch)}: not one adoption")
            last[context_id] = (owner, epoch)
        self.result.adoptions = adoptions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m labkit.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help=f"the long run: {FULL['cycles']} cycles, {FULL['time_limit']:g} s at most "
                             f"(default: {SHORT['cycles']} cycles, {SHORT['time_limit']:g} s)")
    parser.add_argument("--cycles", type=int, metavar="N", help="at most N fault cycles")
    parser.add_argument("--time-limit", type=float, metavar="S",
                        help="seconds for the whole run; no cycle starts when less than "
                             f"{CYCLE_BUDGET_S + RESERVE_S:g} s remain")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the fault sequence (default: random, printed)")
    parser.add_argument("--margin", type=float, default=0.6, metavar="S",
                        help="seconds allowed beyond Master_Down_Interval for a VIP to have one holder again "
                             "(default 0.6: two shared cores)")
    parser.add_argument("--contexts", type=int, default=2, metavar="N",
                        help="the writer's contexts per node (default 2)")
    parser.add_argument("--pace", type=float, default=0.05, metavar="S",
                        help="seconds between two writes to one context (default 0.05)")
    parser.add_argument("--deadline", type=float, default=20.0, metavar="S",
                        help="seconds a client call retries before it gives up (default 20)")
    parser.add_argument("--contend", type=float, default=0.05, metavar="S",
                        help="seconds between two contender writes through each node's own address "
                             "(default 0.05; 0: no contender)")
    parser.add_argument("--pg-script", default=str(REPO / "scripts" / "test-postgres.sh"), metavar="PATH",
                        help="what the store-restart fault runs with `stop` and `start` "
                             "(default scripts/test-postgres.sh)")
    args = parser.parse_args(argv)
    base = FULL if args.full else SHORT
    args.cycles = args.cycles if args.cycles is not None else base["cycles"]
    args.time_limit = args.time_limit if args.time_limit is not None else base["time_limit"]
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    if args.cycles < 0 or args.time_limit <= 0:
        parser.error("--cycles must be >= 0 and --time-limit > 0")
    return args


def run(args: argparse.Namespace, out=print) -> Result:
    chaos = Chaos(args, out)
    result = chaos.run()
    report(result, chaos.tolerance, out)
    return result


def _terminated(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("chaos needs root: it builds network namespaces (run it as root, e.g. with sudo)", file=sys.stderr)
        return 2
    # Both end the run through KeyboardInterrupt, so the lab is removed; SIGINT too, as a background job
    # may have inherited it ignored.
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _terminated)
    try:
        result = run(args, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted: the lab was removed", file=sys.stderr)
        return 130
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
