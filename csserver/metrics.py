"""csserver's Prometheus metrics: counters and a latency histogram, rendered in the text exposition format."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

# Store operations take well under a millisecond (SQLite, a cached page) to tens of milliseconds (an fsync,
# a PostgreSQL round trip under load); the buckets span that.
STORE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple, int] = defaultdict(int)  # (route, method, status) -> count
        self.adoptions = 0
        self.stale_epoch_refusals = 0
        self.misdirected = 0
        self._store_buckets: dict[str, list[int]] = {}
        self._store_sum: dict[str, float] = defaultdict(float)
        self._store_count: dict[str, int] = defaultdict(int)
        self._store_errors: dict[str, int] = defaultdict(int)

    def request(self, route: str, method: str, status: int) -> None:
        self.requests[(route, method, str(status))] += 1

    def store_call(self, operation: str, seconds: float, failed: bool) -> None:
        buckets = self._store_buckets.setdefault(operation, [0] * (len(STORE_BUCKETS_S) + 1))
        buckets[bisect_left(STORE_BUCKETS_S, seconds)] += 1
        self._store_sum[operation] += seconds
        self._store_count[operation] += 1
        if failed:
            self._store_errors[operation] += 1

    def render(self) -> str:
        out = [
            "# HELP csserver_requests_total HTTP requests answered, by route, method and status.",
            "# TYPE csserver_requests_total counter",
        ]
        for (route, method, status), count in sorted(self.requests.items()):
            out.append(f"csserver_requests_total{_labels((('route', route), ('method', method), ('status', status)))} {count}")
        for name, value, text in (
            ("csserver_adoptions_total", self.adoptions, "Contexts this node took over from another owner."),
            ("csserver_stale_epoch_refusals_total", self.stale_epoch_refusals,
             "Writes refused (409) because another node had adopted the context."),
            ("csserver_misdirected_total", self.misdirected, "Requests answered 421: another node serves them."),
        ):
            out += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
        out += ["# HELP csserver_store_seconds Latency of store operations.",
                "# TYPE csserver_store_seconds histogram"]
        for op in sorted(self._store_buckets):
            cumulative = 0
            for bound, count in zip((*STORE_BUCKETS_S, float("inf")), self._store_buckets[op]):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f"csserver_store_seconds_bucket{_labels((('op', op), ('le', le)))} {cumulative}")
            out.append(f"csserver_store_seconds_sum{_labels((('op', op),))} {self._store_sum[op]:.6f}")
            out.append(f"csserver_store_seconds_count{_labels((('op', op),))} {self._store_count[op]}")
        out += ["# HELP csserver_store_errors_total Store operations that failed (503).",
                "# TYPE csserver_store_errors_total counter"]
        for op in sorted(self._store_errors):
            out.append(f"csserver_store_errors_total{_labels((('op', op),))} {self._store_errors[op]}")
        return "\n".join(out) + "\n"
