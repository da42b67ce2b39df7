"""The chaos run's watchers and judges (tests/lab/chaos.py runs the faults): who holds each VIP over time and
which windows break the rules, the writer's and the contender's ledgers, the store's audit triggers, and the
figures printed at the end. Kept apart from the fault loop so each can be read on its own."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from labkit.csserver_node import CsserverNode
from labkit.netns import AddressWatcher, _libc_setns
from labkit.pair import ALIAS, NODES, Pair
from labkit.writer import records

KINDS = ("kill vrrpd", "kill csserver", "freeze vrrpd", "freeze csserver", "link down", "partition",
         "store restart")
BLIND = frozenset({"kill vrrpd", "freeze vrrpd", "partition"})  # both sides may hold a VIP until repaired


def master_down_bound(advert_interval: float) -> float:
    """Master_Down_Interval = 3 * interval + Skew_Time, Skew_Time = (256 - priority) * interval / 256 < interval
    (RFC 5798 section 6.1): 4 * interval bounds it for any priority."""
    return 4 * advert_interval


@dataclass
class Fault:
    cycle: int
    kind: str
    node: str
    hold: float
    start: float = 0.0
    end: float | None = None  # repaired: process answering again, SIGCONT sent, link up, partition healed...
    settled: float | None = None

    def label(self) -> str:
        return f"{self.kind} on node-{self.node}" if self.kind != "store restart" else self.kind


@dataclass
class Window:
    """A stretch of time when a VIP was not held by exactly one node on the network."""

    vip: str
    kind: str  # "split" (both nodes) or "none"
    start: float
    end: float
    cause: str = ""
    cycle: int = 0
    excess: float = 0.0  # longest part not excused by a fault VRRP cannot see through

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class Result:
    seed: int
    store: str
    cycles: int = 0
    faults: list[Fault] = field(default_factory=list)
    acked: int = 0
    lost: int = 0
    gave_up: int = 0
    longest_gap: tuple[float, int, int, str] = (0.0, 0, 0, "")  # seconds, cycle begun in, cycle ended in, HAID
    windows: list[Window] = field(default_factory=list)
    stale_refusals: int = 0
    adoptions: int | None = None
    contended: Counter = field(default_factory=Counter)  # the contender's outcomes: "200", "409", "timeout"...
    refused_but_stored: int = 0
    audited_writes: int | None = None
    foreign_writes: int = 0  # applied by a node that was not the context's owner then: under a stale epoch
    settle_checks: int = 0
    deaths: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    stopped_by: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


# ---- the pair, with a store URL per node ---------------------------------------------------------------

def with_application_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = name
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@dataclass
class ChaosPair(Pair):
    """The pair of pair.py; csserver's PostgreSQL sessions name their node (application_name), and the log of
    a csserver that is started again is kept (CsserverNode truncates it; each line is flushed as written, so
    a SIGKILL loses none)."""

    past_events: dict[str, list[dict]] = field(default_factory=lambda: {n: [] for n in NODES})

    def node_store_url(self, node: str) -> str:
        url = self.store_url
        return with_application_name(url, app_name(node)) if url.startswith("postgresql:") else url

    def start_csserver(self, node: str) -> CsserverNode:
        if node in self.cs:
            self.past_events[node] += self.cs[node].events()
        return super().start_csserver(node)


def app_name(node: str) -> str:
    return f"csserver-{ALIAS[node]}"


# ---- who holds each VIP, over time -------------------------------------------------------------------

class VipLedger:
    """Both nodes' address events (netlink) and the times a node was cut off, turned into windows."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.vips = [pair.vip(n) for n in NODES]
        self.watchers = {n: AddressWatcher(pair.host(n)).start() for n in NODES}
        # Read after subscribing: an event also seen here is applied twice, which changes nothing.
        self.initial = {n: pair.host(n).addresses() & set(self.vips) for n in NODES}
        self.cutoffs: list[list] = []  # [node, from, until or None]

    def cut(self, node: str) -> None:
        self.cutoffs.append([node, time.monotonic(), None])

    def rejoin(self, node: str) -> None:
        for cutoff in self.cutoffs:
            if cutoff[0] == node and cutoff[2] is None:
                cutoff[2] = time.monotonic()

    def held_now(self, node: str) -> set[str]:
        """The VIPs on the node's eth0 as its address events tell."""
        held = set(self.initial[node])
        for event in self.watchers[node].events():
            if event.address in self.vips:
                (held.add if event.kind == "add" else held.discard)(event.address)
        return held

    def windows(self, until: float) -> list[Window]:
        changes = [(e.time, n, e.address, e.kind == "add") for n in NODES for e in self.watchers[n].events()
                   if e.address in self.vips and e.time <= until]
        for node, start, end in self.cutoffs:
            changes.append((start, node, None, False))
            if end is not None:
                changes.append((end, node, None, True))
        changes.sort(key=lambda c: c[0])
        have = {n: set(self.initial[n]) for n in NODES}
        online = dict.fromkeys(NODES, True)
        opened: dict[str, Window] = {}
        done: list[Window] = []
        for when, node, vip, on in changes:
            if vip is None:
                online[node] = on
            else:
                (have[node].add if on else have[node].discard)(vip)
            for each in self.vips:
                count = sum(1 for n in NODES if online[n] and each in have[n])
                kind = None if count == 1 else "split" if count > 1 else "none"
                current = opened.get(each)
                if current is not None and current.kind != kind:
                    current.end = when
                    done.append(opened.pop(each))
                if kind is not None and each not in opened:
                    opened[each] = Window(each, kind, when, when)
        for window in opened.values():
            window.end = until
            done.append(window)
        return [w for w in done if w.end > w.start]


def judge(window: Window, faults: list[Fault], now: float) -> None:
    """Name the window's cause and cycle, and how long it lasted beyond what a blind fault excuses."""
    excused = sorted((f.start, f.end if f.end is not None else now) for f in faults if f.kind in BLIND)
    segments, cursor = [], window.start
    for start, end in excused:
        if end <= cursor or start >= window.end:
            continue
        if start > cursor:
            segments.append(start - cursor)
        cursor = max(cursor, end)
    if cursor < window.end:
        segments.append(window.end - cursor)
    window.excess = max(segments, default=0.0)
    started = [f for f in faults if f.start <= window.start]
    window.cycle = started[-1].cycle if started else 0
    blind = [f for f in faults if f.kind in BLIND and f.start < window.end
             and (f.end if f.end is not None else now) > window.start]
    if blind:
        window.cause = blind[0].kind
    elif window.kind == "split":
        window.cause = "handover"
    else:
        window.cause = f"failover ({started[-1].kind})" if started else "failover"


# ---- the writer's output -------------------------------------------------------------------------------

class Feed:
    """The writer's JSON lines, read as they come (a full pipe would stall it)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lock = threading.Lock()
        self.created: list[dict] = []
        self.acks = 0
        self.acked_keys: dict[str, set[str]] = {}
        self.error_keys: dict[str, set[str]] = {}
        self.errors = 0
        self.last_ack: dict[str, float] = {}
        self.gaps: list[tuple[float, float, str]] = []  # (ended at, length, haid)
        self.summary: dict | None = None
        self.thread = threading.Thread(target=self._read, name="writer-feed", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for record in records(self.proc.stdout):
            with self.lock:
                self._take(record)

    def _take(self, record: dict) -> None:
        event, haid = record.get("event"), record.get("haid")
        if event == "created":
            self.created.append(record)
            self.last_ack[haid] = record["t"]
            self.acked_keys[haid], self.error_keys[haid] = set(), set()
        elif event == "ack":
            self.acks += 1
            self.acked_keys[haid].add(record["key"])
            self.gaps.append((record["t"], record["t"] - self.last_ack[haid], haid))
            self.last_ack[haid] = record["t"]
        elif event == "error":
            self.errors += 1
            self.error_keys[haid].add(record["key"])
        elif event == "summary":
            self.summary = record

    def all_acked_since(self, when: float) -> bool:
        with self.lock:
            return bool(self.last_ack) and all(t > when for t in self.last_ack.values())

    def stalled_since(self, when: float) -> list[str]:
        with self.lock:
            return sorted(h for h, t in self.last_ack.items() if t <= when)

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest wait between two acknowledgements of one context that ended after `since`, or is
        still going on."""
        now = time.monotonic()
        with self.lock:
            ended = (gap for end, gap, _ in self.gaps if end >= since)
            return max((*ended, *(now - t for t in self.last_ack.values())), default=0.0)


class Contender:
    """Writes to the writer's contexts through each node's own address, one attempt per write, as clients
    whose ARP entry names that node would: while both nodes hold a VIP both serve, each adopting the context
    in turn, and the fencing must refuse every write under the epoch the other node has superseded."""

    def __init__(self, pair: Pair, haids: list[str], pace: float):
        self.pair, self.haids, self.pace = pair, haids, pace
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: dict[str, tuple[str, str, int | str]] = {}  # key -> (haid, node, status or error)
        self.threads = [threading.Thread(target=self._run, args=(n,), name=f"contender-{n}", daemon=True)
                        for n in NODES]
        for thread in self.threads:
            thread.start()

    def _run(self, node: str) -> None:
        with open(f"/run/netns/{self.pair.client.ns}") as nsfile:
            _libc_setns(nsfile.fileno())  # this thread only: the client's namespace
        address, seq, conn = str(self.pair.host(node).ipv4), 0, None
        while not self.stop.wait(self.pace):
            seq += 1
            haid, key = self.haids[seq % len(self.haids)], f"c{node}{seq:06d}"
            if conn is None:
                conn = http.client.HTTPConnection(address, self.pair.port, timeout=0.5)
            try:
                conn.request("PUT", f"/v1/contexts/{haid}/values/{key}", json.dumps({"node": node, "seq": seq}),
                             {"Content-Type": "application/json", "Idempotency-Key": f"chaos-{key}"})
                response = conn.getresponse()
                response.read()
                outcome: int | str = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                conn.close()
                conn = None
            with self.lock:
                self.outcomes[key] = (haid, node, outcome)

    def finish(self) -> dict[str, tuple[str, str, int | str]]:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        with self.lock:
            return dict(self.outcomes)


# ---- the run -------------------------------------------------------------------------------------------

AUDIT_SQL = """
CREATE TABLE chaos_value_writes (
    seq bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), writer text NOT NULL,
    context_id bigint NOT NULL, key text NOT NULL, version bigint NOT NULL, owner text, epoch bigint);
CREATE TABLE chaos_epochs (
    seq bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), writer text NOT NULL,
    context_id bigint NOT NULL, old_owner text, old_epoch bigint, owner text NOT NULL, epoch bigint NOT NULL);
CREATE FUNCTION chaos_value_written() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    -- The context row as this transaction sees it: csserver's fence has just locked and matched it.
    INSERT INTO chaos_value_writes (writer, context_id, key, version, owner, epoch)
        SELECT current_setting('application_name'), NEW.context_id, NEW.key, NEW.version, c.owner, c.epoch
        FROM (SELECT 1) AS one LEFT JOIN contexts AS c ON c.id = NEW.context_id;
    RETURN NULL;
END $$;
CREATE FUNCTION chaos_context_changed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO chaos_epochs (writer, context_id, owner, epoch)
            VALUES (current_setting('application_name'), NEW.id, NEW.owner, NEW.epoch);
    ELSIF NEW.owner IS DISTINCT FROM OLD.owner OR NEW.epoch IS DISTINCT FROM OLD.epoch THEN
        INSERT INTO chaos_epochs (writer, context_id, old_owner, old_epoch, owner, epoch)
            VALUES (current_setting('application_name'), NEW.id, OLD.owner, OLD.epoch, NEW.owner, NEW.epoch);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_value_written AFTER INSERT OR UPDATE ON context_values
    FOR EACH ROW EXECUTE FUNCTION chaos_value_written();
CREATE TRIGGER chaos_context_changed AFTER INSERT OR UPDATE ON contexts
    FOR EACH ROW EXECUTE FUNCTION chaos_context_changed();
"""


def install_audit(conninfo: str) -> None:
    """The audit triggers, in the run's schema (csserver has migrated it by now)."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(AUDIT_SQL)


# ---- the figures ---------------------------------------------------------------------------------------

def figures(result: Result, tolerance: float) -> list[tuple[str, str]]:
    kinds = Counter(f.kind for f in result.faults)
    split = [w for w in result.windows if w.kind == "split"]
    none = [w for w in result.windows if w.kind == "none"]

    def cycles(first: int, last: int) -> str:
        name = {f.cycle: f.label() for f in result.faults}
        said = [f"cycle {c} {name[c]}" if c else "before the first fault" for c in sorted({first, last})]
        return " to ".join(said)

    def spans(windows: list[Window]) -> str:
        if not windows:
            return "0"
        return (f"{len(windows)}, longest {max(w.length for w in windows):.3f} s, "
                f"total {sum(w.length for w in windows):.2f} s")

    rows = [("seed", str(result.seed)), ("store", result.store),
            ("cycles", f"{result.cycles} ({result.stopped_by})"),
            ("faults by kind", ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k]) or "none"),
            ("writes acknowledged", str(result.acked)), ("writes lost", str(result.lost)),
            ("client calls that gave up", str(result.gave_up)),
            ("longest client gap", f"{result.longest_gap[0]:.2f} s, {result.longest_gap[3]} "
                                   f"({cycles(*result.longest_gap[1:3])})"),
            ("split-brain windows", spans(split))]
    for cause in sorted({w.cause for w in split}):
        rows.append((f"  {cause}", spans([w for w in split if w.cause == cause])))
    rows += [("VIP held by no node", spans(none)),
             ("allowed outside blind faults", f"{tolerance:.2f} s (Master_Down_Interval bound + margin)"),
             ("settle checks, one holder each", str(result.settle_checks)),
             ("contender writes, by answer", ", ".join(f"{k} {v}" for k, v in sorted(result.contended.items()))
              or "none"),
             ("  refused (4xx) but stored", str(result.refused_but_stored)),
             ("stale-epoch writes refused (409)", f"{result.stale_refusals} (csserver's logs)"),
             ("adoptions (epoch + 1)", "-" if result.adoptions is None else str(result.adoptions)),
             ("writes audited in the store", "- (SQLite: no audit)" if result.audited_writes is None
              else f"{result.audited_writes}, applied by a node not the owner: {result.foreign_writes}"),
             ("daemon exits not ours", str(len(result.deaths))),
             ("invariant violations", str(len(result.violations))),
             ("findings (clients stalled)", str(len(result.findings)))]
    return rows


def report(result: Result, tolerance: float, out=print) -> None:
    rows = figures(result, tolerance)
    width = max(len(k) for k, _ in rows)
    out("\nFigures")
    for key, value in rows:
        out(f"  {key:<{width}}  {value}")
    for window in sorted(result.windows, key=lambda w: -w.length)[:5]:
        if window.kind == "split":
            out(f"  split brain: VIP {window.vip} {window.length:.3f} s in cycle {window.cycle} ({window.cause})")
    for message in result.findings:
        out(f"  finding: {message}")
    if result.violations:
        out(f"\nFAILED: {len(result.violations)} violation(s)")
        for message in result.violations:
            out(f"  - {message}")
    else:
        out("\nOK: every invariant held")
