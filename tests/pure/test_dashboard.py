"""The shipped Grafana dashboard asks only for metrics the daemons serve (both vocabularies, and csserver's)."""

from __future__ import annotations

import json
import re

from csserver.metrics import Metrics
from tests.promtext_parse import sample_status
from tests.support import REPO
from vrrpd.metrics import render

DASHBOARD = REPO / "dashboards" / "vrrpd-csserver.json"
NAME = re.compile(r"\b(?:keepalived|vrrpd|csserver)_[a-zA-Z0-9_:]*")
FAMILY = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)


def served() -> set[str]:
    """Every sample name the daemons can serve: family names, and a histogram's _bucket/_sum/_count."""
    cs = Metrics()
    cs.request("/v1/contexts", "GET", 200)
    cs.store_call("get", 0.001, True)
    names = set()
    for text in (render(sample_status()), cs.render()):
        for name, kind in FAMILY.findall(text):
            names |= {name} | ({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set())
    return names


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])] + [
        v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]


def test_every_query_names_a_metric_the_daemons_serve():
    exprs = queries()
    assert len(exprs) >= 20
    asked = {name for expr in exprs for name in NAME.findall(expr)}
    assert asked - served() == set()
    # The point of the keepalived names: a keepalived dashboard's core queries work unchanged.
    assert {"keepalived_vrrp_state", "keepalived_become_master_total", "keepalived_up"} <= asked


def test_the_checker_sees_a_metric_nobody_serves():
    assert NAME.findall('rate(keepalived_no_such_thing_total[5m])')[0] not in served()
