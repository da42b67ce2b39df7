"""The store fails over under the pair (issue 12, item 6): PostgreSQL on two lab hosts, pg1 the primary and
pg2 its synchronous streaming standby (scripts/pg-pair.sh, Debian's binaries, data of their own), both
csservers on `postgresql://pg1,pg2/csserver?target_session_attrs=read-write`, a writer through the VIPs.

pg1 is stopped, or frozen (every one of its processes SIGSTOPped: a hung host, whose connections stay
open and answer nothing), and pg2 promoted. csserver must follow within seconds: no call of the writer
gives up, no acknowledged write is lost, and the store's own audit (triggers in the very transaction of
each write, replicated to pg2 like everything else) shows no write applied under a stale epoch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from labkit.chaos_watch import AUDIT_SQL, ChaosPair, app_name
from labkit.netns import in_netns, wait_until
from labkit.pair import ALIAS, NODES
from labkit.pg import PgPair
from labkit.vrrpd_node import REPO
from labkit.writer import records

pytestmark = pytest.mark.lab

NAMES = ["node-a", "node-b", "client", "pg1", "pg2"]
DEADLINE = 15.0  # the writer's: a call that needs longer gives up, and the test fails


def in_client(pair, fn, *args):
    return in_netns(pair.client, fn, *args)


def install_audit(url: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        with conn.transaction():
            conn.execute(AUDIT_SQL)


def read_audit(url: str) -> tuple[list[tuple], list[tuple]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        writes = conn.execute("SELECT writer, context_id, key, owner, epoch FROM chaos_value_writes").fetchall()
        epochs = conn.execute("SELECT context_id, old_owner, old_epoch, owner, epoch FROM chaos_epochs "
                              "ORDER BY seq").fetchall()
        return writes, epochs


@pytest.mark.parametrize("fault", ["stop", "freeze"])
def test_csserver_follows_its_store_to_the_promoted_standby(lab, fault):
    lab = lab(len(NAMES), NAMES)
    pg = PgPair.start(lab, lab.host("pg1"), lab.host("pg2"))
    pair = ChaosPair.start(lab, advert_interval=0.1, preempt_delay=0.5, store_url=pg.url())
    in_client(pair, install_audit, pg.url())
    out = lab.tmpdir / "writer.jsonl"
    with open(out, "w") as sink:
        writer = pair.client.popen(
            [sys.executable, "-m", "labkit.writer", "--cluster", json.dumps(pair.cluster), "--port", str(pair.port),
             "--contexts", "2", "--pace", "0.01", "--deadline", str(DEADLINE), "--attempt-timeout", "0.5"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)

    def acks() -> int:
        return out.read_text().count('"event": "ack"')

    wait_until(lambda: acks() >= 100, 30, 0.05, message=f"the writer never got going:\n{out.read_text()[-2000:]}")
    if fault == "stop":
        pg.stop_server("pg1")
    else:
        pg.freeze("pg1")
    pg.promote("pg2")
    before = acks()
    wait_until(lambda: acks() >= before + 300, 30, 0.05,
               message=f"writes did not resume on pg2:\n{out.read_text()[-2000:]}")
    writer.terminate()
    assert writer.wait(DEADLINE + 30) == 0, out.read_text()[-3000:]

    with open(out) as lines:
        summary = [r for r in records(lines) if r.get("event") == "summary"][-1]
    assert summary["lost"] == 0, summary["lost_keys"]  # every acknowledged write is on pg2
    assert summary["errors"] == 0  # no call gave up: csserver followed the store within the deadline
    for tally in summary["contexts"].values():
        assert tally["stored"] == tally["acked"] > 0, tally  # and nothing unacknowledged slipped in twice
    writes, epochs = in_client(pair, read_audit, pg.url())
    alias_of = {app_name(node): ALIAS[node] for node in NODES}
    assert len(writes) >= summary["acked"]
    stale = [w for w in writes if alias_of.get(w[0]) != w[3]]
    assert stale == [], f"writes applied by a node that was not the owner (a stale epoch): {stale[:5]}"
    assert all(epoch == 1 for _, old_owner, _, _, epoch in epochs if old_owner is None)
    assert all(epoch == old_epoch + 1 for _, old_owner, old_epoch, _, epoch in epochs if old_owner is not None)
    for node in NODES:  # each followed the store, and said where to
        assert pair.cs[node].proc.poll() is None
        failures = [e for e in pair.cs[node].events() if e.get("event") == "request_failed"]
        assert failures == []
