"""The store fails over under the pair (issue 12, item 6): PostgreSQL on two lab hosts, pg1 the primary and
pg2 its synchronous streaming standby (scripts/pg-pair.sh, Debian's binaries, data of their own), both
csservers on `postgresql://pg1,pg2/csserver?target_session_attrs=read-write`, a writer through the VIPs
(labkit/store_failover.py runs it; `make bench` measures the same scenario).

pg1 is stopped, or frozen (every one of its processes SIGSTOPped: a hung host, whose connections stay
open and answer nothing), and pg2 promoted. csserver must follow within seconds: no call of the writer
gives up, no acknowledged write is lost, and the store's own audit (triggers in the very transaction of
each write, replicated to pg2 like everything else) shows no write applied under a stale epoch.
"""

from __future__ import annotations

import pytest

from labkit import store_failover

pytestmark = pytest.mark.lab

DEADLINE = 15.0  # the writer's: a call that needs longer gives up, and the test fails


@pytest.mark.parametrize("fault", store_failover.FAULTS)
def test_csserver_follows_its_store_to_the_promoted_standby(lab, fault):
    outcome = store_failover.run(lab(len(store_failover.HOSTS), store_failover.HOSTS), fault, deadline=DEADLINE)
    summary = outcome.summary
    assert summary["lost"] == 0, summary["lost_keys"]  # every acknowledged write is on pg2
    assert summary["errors"] == 0  # no call gave up: csserver followed the store within the deadline
    for tally in summary["contexts"].values():
        assert tally["stored"] == tally["acked"] > 0, tally  # nothing applied twice, nothing unacknowledged
    assert outcome.audited >= summary["acked"]
    assert outcome.stale_writes == [], "writes applied by a node that was not the owner (a stale epoch)"
    assert outcome.epoch_steps == []  # every change of owner is one adoption: epoch + 1, never back
    assert outcome.request_failures == 0
