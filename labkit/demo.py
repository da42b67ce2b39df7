"""make demo: a dual-master pair loses a node, and no acknowledged write is lost.

Builds three network namespaces on one bridge (node-a 192.0.2.1, node-b 192.0.2.2, client 192.0.2.3),
starts csserver and vrrpd on both nodes from the conf/ samples (one shared SQLite store), and runs a client
that creates contexts through both VIPs and writes to each of them continuously. Then it kills node A (link
down, vrrpd and csserver SIGKILLed), shows node B taking VIP-A over and adopting A's contexts while the
writes go on, brings node A back, shows the failback, and verifies every acknowledged write. It prints a
timeline and a summary table, and exits 0 only when no acknowledged write was lost.

The lab is always removed, on errors and on Ctrl-C too. Needs root (network namespaces). Nothing outside
the lab's namespaces is touched; addresses come from the documentation range 192.0.2.0/24.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from labkit.csserver_node import event_time
from labkit.netns import AddressWatcher, wait_until
from labkit.pair import Pair, lab_for_pair
from labkit.vrrpd_node import REPO
from labkit.writer import records

T0 = time.monotonic()


def now() -> float:
    return time.monotonic() - T0


def say(message: str) -> None:
    print(f"[{now():6.2f}s] {message}", flush=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


class WriterFeed:
    """The writer's JSON lines, read continuously (a full pipe would stall it) and tallied."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lock = threading.Lock()
        self.created: list[dict] = []
        self.acks: list[dict] = []
        self.errors: list[dict] = []
        self.summary: dict | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for record in records(self.proc.stdout):
            with self.lock:
                {"created": self.created, "ack": self.acks, "error": self.errors}.get(
                    record["event"], []).append(record)
                if record["event"] == "summary":
                    self.summary = record

    def acked(self, haids: set[str] | None = None, after: float = 0.0) -> list[dict]:
        with self.lock:
            return [a for a in self.acks if a["t"] >= after and (haids is None or a["haid"] in haids)]

    def haids_of(self, alias: str) -> set[str]:
        with self.lock:
            return {c["haid"] for c in self.created if c["via"] == alias}


def adoptions(pair: Pair, node: str, after: float) -> list[tuple[float, dict]]:
    """csserver's context_adopted events on `node` after a monotonic time, with their monotonic time."""
    out = []
    for event in pair.cs[node].events():
        if event.get("event") != "context_adopted":
            continue
        stamp = event_time(event)
        if stamp >= after:
            out.append((stamp, event))
    return out


def wait_adoptions(pair: Pair, node: str, after: float, count: int, timeout: float) -> list[tuple[float, dict]]:
    def enough():
        found = adoptions(pair, node, after)
        return found if len(found) >= count else None

    return wait_until(enough, timeout, 0.05, message=f"node-{node} did not adopt {count} contexts")


def run(args) -> int:
    timeline: list[tuple[float, str]] = []

    def mark(when: float, text: str) -> None:
        timeline.append((when - T0, text))

    say("building the lab: node-a (192.0.2.1), node-b (192.0.2.2) and client (192.0.2.3) on one bridge")
    with lab_for_pair() as lab:
        say("starting csserver (one shared SQLite store) and vrrpd on both nodes from conf/ samples")
        pair = Pair.start(lab, advert_interval=args.advert_interval, wait=False)
        vip_a, vip_b = pair.vip("a"), pair.vip("b")
        watch_b = AddressWatcher(pair.host("b")).start()
        watch_a = AddressWatcher(pair.host("a")).start()
        pair.wait_steady(60)
        mark(time.monotonic(), "pair steady: node-a holds VIP-A, node-b holds VIP-B")
        say(f"steady: node-a MASTER of VIP-A {vip_a}, node-b MASTER of VIP-B {vip_b}")

        writer = pair.client.popen(
            [sys.executable, "-m", "labkit.writer", "--cluster", json.dumps(pair.cluster),
             "--port", str(pair.port), "--contexts", str(args.contexts), "--pace", str(args.pace),
             "--deadline", str(args.deadline)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        feed = WriterFeed(writer)
        wait_until(lambda: len(feed.created) == 2 * args.contexts, 20, 0.05, message="the client created no contexts")
        a_haids, b_haids = feed.haids_of("cs-a"), feed.haids_of("cs-b")
        say(f"client: contexts {sorted(a_haids)} via VIP-A and {sorted(b_haids)} via VIP-B; "
            f"writing to each every {args.pace * 1000:.0f} ms")
        mark(time.monotonic(), f"client created {len(a_haids) + len(b_haids)} contexts and started writing")
        wait_until(lambda: len(feed.acked()) >= 50, 20, 0.05, message="no write was acknowledged")
        time.sleep(args.settle)  # steady traffic to compare against, shown as it goes
        say(f"writes acknowledged so far: {len(feed.acked())}, errors: {len(feed.errors)}")

        # ---- node A dies ------------------------------------------------------------------------------
        say(">>> killing node-a: link down, vrrpd and csserver SIGKILLed")
        crashed = pair.crash("a")
        mark(crashed, "node-a crashed (link down, vrrpd + csserver SIGKILLed)")
        took = wait_until(lambda: watch_b.first_add(vip_a, crashed), 30, 0.01,
                          message="node-b never took VIP-A over")
        mark(took, "VIP-A added on node-b (netlink)")
        say(f"VIP-A {vip_a} appeared on node-b {ms(took - crashed)} after the crash")
        first_b = wait_until(lambda: feed.acked(a_haids, took), 30, 0.01,
                             message="no write to node-a's contexts was served by node-b")[0]
        mark(first_b["t"], "first write to node-a's contexts acknowledged (served by node-b)")
        adopted = wait_adoptions(pair, "b", crashed, len(a_haids), 10)
        for stamp, event in adopted:
            say(f"node-b adopted {event['haid']} from {event['old_owner']} (epoch {event['epoch']})")
        mark(min(s for s, _ in adopted), f"node-b adopted {len(adopted)} contexts of node-a (new epoch)")
        say(f"first write on node-a's contexts acknowledged {ms(first_b['t'] - crashed)} after the crash; "
            f"acknowledged so far: {len(feed.acked())}")
        time.sleep(args.settle)
        say(f"node-b serves both VIPs; writes acknowledged so far: {len(feed.acked())}")

        # ---- node A returns ---------------------------------------------------------------------------
        say(">>> node-a returns: vrrpd restarts (clearing the VIP the crash left), csserver, then the link")
        back = pair.recover("a")
        mark(back, "node-a back (vrrpd + csserver restarted, link up)")
        returned = wait_until(lambda: watch_a.first_add(vip_a, back), 60, 0.01,
                              message="node-a never took VIP-A back")
        mark(returned, "VIP-A added on node-a again (preempt after preempt_delay)")
        say(f"failback: VIP-A back on node-a {ms(returned - back)} after it returned "
            f"(health check rise + preempt_delay)")
        pair.wait_steady(30)
        readopted = wait_adoptions(pair, "a", back, len(a_haids), 15)
        mark(min(s for s, _ in readopted), f"node-a adopted its {len(readopted)} contexts back")
        say(f"node-a adopted its contexts back (epoch {max(e['epoch'] for _, e in readopted)}); "
            f"acknowledged so far: {len(feed.acked())}")
        time.sleep(args.settle)

        # ---- the verdict ------------------------------------------------------------------------------
        say("stopping the client and reading every context back")
        writer.terminate()
        writer.wait(args.deadline + 30)
        feed.thread.join(10)
        summary = feed.summary
        if summary is None:
            raise RuntimeError("the client printed no summary")
        mark(time.monotonic(), f"client verified {summary['acked']} acknowledged writes: {summary['lost']} lost")

        print("\nTimeline")
        for when, text in sorted(timeline):
            print(f"  {when:7.3f}s  {text}")
        a_acks = [a["t"] for a in feed.acked(a_haids)]
        gap_a = max((b - a for a, b in zip(a_acks, a_acks[1:])), default=0.0)
        rows = [
            ("advert_interval", f"{args.advert_interval or 'as in conf/'}"),
            ("takeover: crash -> VIP-A on node-b", ms(took - crashed)),
            ("first write served by node-b", ms(first_b["t"] - crashed)),
            ("contexts adopted by node-b", str(len(adopted))),
            ("failback: node-a back -> VIP-A on node-a", ms(returned - back)),
            ("contexts adopted back by node-a", str(len(readopted))),
            ("longest gap on node-a's contexts", ms(gap_a)),
            ("writes acknowledged", str(summary["acked"])),
            ("client calls that gave up", str(summary["errors"])),
            ("writes lost", str(summary["lost"])),
        ]
        width = max(len(k) for k, _ in rows)
        print("\nSummary")
        for key, value in rows:
            print(f"  {key:<{width}}  {value:>10}")
        ok = summary["lost"] == 0 and summary["errors"] == 0
        print(f"\n{'OK' if ok else 'FAILED'}: writes lost {summary['lost']}, calls that gave up {summary['errors']}")
        say("removing the lab")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run directly: sudo .venv/bin/python -m labkit.demo [options]")
    parser.add_argument("--advert-interval", type=float, default=None, metavar="SECONDS",
                        help="override the samples' advert_interval (1.0 s: takeover in about 3.6 s); "
                             "0.1 shows a takeover in about 0.4 s")
    parser.add_argument("--contexts", type=int, default=2, help="contexts created through each VIP (default 2)")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between writes to one context (default 0.05)")
    parser.add_argument("--deadline", type=float, default=15.0,
                        help="seconds a client call keeps retrying through a failover (default 15)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of steady traffic between steps (default 2)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make demo needs root: it builds network namespaces (run it as root, e.g. with sudo)", file=sys.stderr)
        return 2
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: the lab was removed", file=sys.stderr)
        return 130
    except Exception as exc:  # a clear line, not a traceback, for a demo that went wrong
        print(f"\ndemo failed: {type(exc).__name__}: {exc}\n(the lab was removed)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
