"""The store fails over under the dual-master pair: what tests/lab/test_store_failover.py asserts and
`make bench` measures (bench/csserver_bench.py).

PostgreSQL runs on two more lab hosts, pg1 the primary and pg2 its synchronous standby (labkit.pg.PgPair);
both csservers use `postgresql://pg1,pg2/csserver?target_session_attrs=read-write`; the writer
(labkit.writer) writes through the VIPs. Then pg1 is stopped or frozen (a hung host) and pg2 promoted, and
the writer runs on until it has written `after` more times. The store's audit triggers (labkit.chaos_watch)
record, inside each write's own transaction, the writer and the context's owner at that instant; being
data, they reach pg2 with every commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psycopg

from labkit.chaos_watch import AUDIT_SQL, ChaosPair, app_name
from labkit.netns import Lab, in_netns, wait_until
from labkit.pair import ALIAS, NODES
from labkit.pg import PgPair
from labkit.vrrpd_node import REPO
from labkit.writer import records

HOSTS = ["node-a", "node-b", "client", "pg1", "pg2"]
FAULTS = ("stop", "freeze")


@dataclass
class Outcome:
    fault: str
    summary: dict  # the writer's: acked, errors (calls that gave up), lost, max_gap, max_call, contexts
    fault_at: float  # time.monotonic() when pg1 was stopped or frozen
    promoted_at: float
    stale_writes: list[tuple] = field(default_factory=list)  # applied by a node that was not the owner then
    epoch_steps: list[tuple] = field(default_factory=list)  # owner/epoch changes that were not one adoption
    audited: int = 0
    request_failures: int = 0  # csserver's request_failed log lines (an unexpected exception: a 500)


def lab() -> Lab:
    return Lab(len(HOSTS), HOSTS)


def run(lab: Lab, fault: str, deadline: float = 15.0, warmup_acks: int = 100, after: int = 300) -> Outcome:
    """Build the scenario in `lab` (made by `lab()` or with HOSTS), inject `fault`, return what happened."""
    if fault not in FAULTS:
        raise ValueError(fault)
    pg = PgPair.start(lab, lab.host("pg1"), lab.host("pg2"))
    pair = ChaosPair.start(lab, advert_interval=0.1, preempt_delay=0.5, store_url=pg.url())
    in_netns(pair.client, _install_audit, pg.url())
    out = lab.tmpdir / "writer.jsonl"
    with open(out, "w") as sink:  # a file, never a pipe nobody reads
        writer = pair.client.popen(
            [sys.executable, "-m", "labkit.writer", "--cluster", json.dumps(pair.cluster), "--port", str(pair.port),
             "--contexts", "2", "--pace", "0.01", "--deadline", str(deadline), "--attempt-timeout", "0.5"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)

    def acks() -> int:
        return out.read_text().count('"event": "ack"')

    wait_until(lambda: acks() >= warmup_acks, 30, 0.05, message=f"the writer never got going:\n{out.read_text()[-2000:]}")
    fault_at = time.monotonic()
    if fault == "stop":
        pg.stop_server("pg1")
    else:
        pg.freeze("pg1")
    pg.promote("pg2")
    promoted_at = time.monotonic()
    before = acks()
    wait_until(lambda: acks() >= before + after, 30, 0.05, message=f"writes did not resume on pg2:\n{out.read_text()[-2000:]}")
    writer.terminate()
    if writer.wait(deadline + 30) != 0 and not out.read_text().count('"event": "summary"'):
        raise AssertionError(f"the writer failed:\n{out.read_text()[-3000:]}")
    with open(out) as lines:
        summary = [r for r in records(lines) if r.get("event") == "summary"][-1]
    outcome = Outcome(fault, summary, fault_at, promoted_at)
    writes, epochs = in_netns(pair.client, _read_audit, pg.url())
    alias_of = {app_name(node): ALIAS[node] for node in NODES}
    outcome.audited = len(writes)
    outcome.stale_writes = [w for w in writes if alias_of.get(w[0]) != w[3]]
    outcome.epoch_steps = [e for e in epochs if (e[1] is None and e[4] != 1) or (e[1] is not None and e[4] != e[2] + 1)]
    outcome.request_failures = sum(1 for node in NODES for e in pair.cs[node].events() if e.get("event") == "request_failed")
    return outcome


def _install_audit(url: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        with conn.transaction():
            conn.execute(AUDIT_SQL)


def _read_audit(url: str) -> tuple[list[tuple], list[tuple]]:
    """From the promoted standby (the one host that takes writes now)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise AssertionError("the audit was read from a standby, not the promoted server")
        writes = conn.execute("SELECT writer, context_id, key, owner, epoch FROM chaos_value_writes").fetchall()
        epochs = conn.execute("SELECT context_id, old_owner, old_epoch, owner, epoch FROM chaos_epochs "
                              "ORDER BY seq").fetchall()
        return writes, epochs
