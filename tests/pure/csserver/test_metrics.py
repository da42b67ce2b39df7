"""csserver's /metrics text: bounded label sets."""

from __future__ import annotations

from csserver.metrics import Metrics


def test_an_unknown_method_is_counted_as_other_so_series_stay_bounded():
    metrics = Metrics()
    for method in ("GET", "BREW", "X" * 50, "get"):
        metrics.request("/healthz", method, 405)
    text = metrics.render()
    assert 'csserver_requests_total{route="/healthz",method="GET",status="405"} 1' in text
    assert 'csserver_requests_total{route="/healthz",method="other",status="405"} 3' in text
    assert "BREW" not in text
