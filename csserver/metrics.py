"""csserver's Prometheus metrics: counters and a latency histogram, rendered in the text exposition format."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

from daemonkit.promtext import Family, render

# Store operations take well under a millisecond (SQLite, a cached page) to tens of milliseconds (an fsync,
# a PostgreSQL round trip under load); the buckets span that.
STORE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The method label takes these; anything else is "other", so a client cannot grow the series without bound
# (aiohttp's C parser refuses unknown methods, its pure-Python parser does not).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple, int] = defaultdict(int)  # (route, method, status) -> count
        self.adoptions = 0
        self.stale_epoch_refusals = 0
        self.misdirected = 0
        self.unshared_refusals = 0
        self.idempotency_records: int | None = None  # counted by the expiry job; None until it has run
        self.sharing: Callable[[], dict[str, int]] = dict
        self._store_buckets: dict[str, list[int]] = {}
        self._store_sum: dict[str, float] = defaultdict(float)
        self._store_count: dict[str, int] = defaultdict(int)
        self._store_errors: dict[str, int] = defaultdict(int)

    def request(self, route: str, method: str, status: int) -> None:
        self.requests[(route, method if method in METHODS else "other", str(status))] += 1

    def store_call(self, operation: str, seconds: float, failed: bool) -> None:
        buckets = self._store_buckets.setdefault(operation, [0] * (len(STORE_BUCKETS_S) + 1))
        buckets[bisect_left(STORE_BUCKETS_S, seconds)] += 1
        self._store_sum[operation] += seconds
        self._store_count[operation] += 1
        if failed:
            self._store_errors[operation] += 1

    def render(self) -> str:
        requests = Family("csserver_requests_total", "counter", "HTTP requests answered, by route, method and status.")
        for (route, method, status), count in sorted(self.requests.items()):
            requests.add((("route", route), ("method", method), ("status", status)), count)
        families = [requests]
        for name, value, text in (
            ("csserver_adoptions_total", self.adoptions, "Contexts this node took over from another owner."),
            ("csserver_stale_epoch_refusals_total", self.stale_epoch_refusals,
             "Writes refused (409) because another node had adopted the context."),
            ("csserver_misdirected_total", self.misdirected, "Requests answered 421: another node serves them."),
            ("csserver_unshared_refusals_total", self.unshared_refusals,
             "Adoptions and creations under a partner's alias refused (503): no shared store shown."),
        ):
            family = Family(name, "counter", text)
            family.add((), value)
            families.append(family)
        if self.idempotency_records is not None:
            records = Family("csserver_idempotency_records", "gauge",
                             "Idempotency records the store holds (bounded by count and age).")
            records.add((), self.idempotency_records)
            families.append(records)
        shared = Family("csserver_store_shared", "gauge",
                        "Whether the store is shown shared with each partner: 1 yes, 0 not shown yet, -1 no.")
        for partner, value in sorted(self.sharing().items()):
            shared.add((("partner", partner),), value)
        families.append(shared)
        latency = Family("csserver_store_seconds", "histogram", "Latency of store operations.")
        for op in sorted(self._store_buckets):
            cumulative = 0
            for bound, count in zip((*STORE_BUCKETS_S, float("inf")), self._store_buckets[op]):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                latency.add((("op", op), ("le", le)), cumulative, "_bucket")
            latency.add((("op", op),), self._store_sum[op], "_sum")
            latency.add((("op", op),), self._store_count[op], "_count")
        errors = Family("csserver_store_errors_total", "counter", "Store operations that failed (503).")
        for op in sorted(self._store_errors):
            errors.add((("op", op),), self._store_errors[op])
        return render([*families, latency, errors])
