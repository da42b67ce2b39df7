"""All of one daemon's virtual routers: packets, links, addresses, scripts and reloads in; effects and one deadline out.

The layer above `fsm.VirtualRouter`, as h11's ConnectionState is above its per-role machines. It decides what
the runtime must not: which router a packet is for and which counter its drop goes to; which facts of the host
put a router in FAULT (its interface missing or down, no working socket, no source address, a tracked object
down); how sync groups couple their members, settled to a fixed point inside each call so that no member waits
for I/O to follow another; what a reload changes; which addresses this daemon installed and may therefore
remove; and the order effects go out in. No socket, clock, asyncio or os: every entry point takes `now`, the
caller's monotonic time in seconds, and returns `Routed` effects; `next_deadline()` says when to call again.
Its vocabulary, the events and effects, is `vrrpd.core.events`.

`Node` holds all the state and the entry points; its methods live one concern per module: `hearing` (the
receive path), `hostfacts` (links, addresses, sockets, use_vmac -> FAULT reasons and source addresses),
`lifecycle` (start, reload, tracked scripts, files and processes), `syncgroups`, and `carry` (effects made
concrete, the timer heap); `router` is one router's bookkeeping.
"""

from __future__ import annotations

import heapq
import itertools

from daemonkit.net import Address, Interface
from vrrpd.config import Config, Script
from vrrpd.core import fsm
from vrrpd.core.carry import Carrying
from vrrpd.core.events import (
    AddressChanged, EffectFailed, Event, FileValue, LinkChanged, PacketIn, ProcessCount, Reconfigure, Routed,
    ScriptChanged, SocketChanged, Start, Status, Stop,
)
from vrrpd.core.fsm import State
from vrrpd.core.hearing import Hearing
from vrrpd.core.hostfacts import HostFacts
from vrrpd.core.lifecycle import Lifecycle
from vrrpd.core.router import Router
from vrrpd.core.stats import Stats
from vrrpd.core.syncgroups import SyncGroups
from vrrpd.core.tracking import Tracked


class Node(Hearing, HostFacts, Lifecycle, SyncGroups, Carrying):
    def __init__(self, config: Config, now: float = 0.0):
        self.config = config
        self.routers: dict[int, Router] = {}
        self.global_stats = Stats()  # drops no instance can be blamed for
        self._ids = itertools.count(1)
        self._by_link: dict[tuple[str, str], dict[int, Router]] = {}  # (ifname, family) -> vrid -> router
        self._links: dict[str, LinkChanged] = {}
        self._addrs: dict[str, dict[Address, tuple[Interface, int]]] = {}  # ifname -> ip -> (address, flags)
        self._sockets: dict[tuple[str, str], int | None] = {}  # the index each open advert socket is bound to
        self._requested: dict[tuple[str, str], int] = {}  # OpenSocket asked for this index, no answer yet
        self._scripts_up: dict[str, bool | None] = {}
        self._groups: dict[str, list[Router]] = {}
        self._dirty_groups: set[str] = set()
        self._group_states: dict[str, State] = {}  # what the notify FIFO last said of each sync group
        self._yielded: set[str] = set()  # groups with a member that gave MASTER up for a reason of its own
        self._heap: list[tuple[float, int, int]] = []  # (deadline, tie-break, router id); stale entries skipped
        self._seq = itertools.count()
        self._out: list[Routed] = []
        self._touched: dict[int, Router] = {}
        self._status_dirty = False
        self._warned: dict[tuple[int, str], float] = {}
        self._heard: dict[bytes, tuple] = {}  # payload -> (src, dst, ttl, ifname, family, router, advert, differ)
        self._links_up: dict[str, bool] = {}
        self._primaries: dict[tuple[str, str], Address | None] = {}  # per (interface, family), from _addrs
        self._vip_router: dict[tuple[str, Address], Router] = {}
        self._vip_ips: frozenset[Address] = frozenset()
        self._scripts: dict[str, Script] = {}
        self._file_values: dict[str, int | None] = {}
        self._process_up: dict[str, bool | None] = {}
        self._process_pending: dict[str, tuple[float, bool]] = {}  # name -> (when, up): a change awaiting its delay
        self._tracked = Tracked({}, {}, {}, {})
        self.started = False
        for inst in config.instances:
            self._add(inst, now)
        self._index_vips()
        self._regroup()
        self._want_scripts()
        self._want_tracked()

    # -- entry points ------------------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Routed]:
        match event:
            case PacketIn(ip_header=None):
                return self.receive(event.ifname, event.family, event.payload, event.src, event.dst, event.ttl, now)
            case PacketIn():
                return self.receive_ah(event.ifname, event.payload, event.ip_header, event.src, event.dst,
                                       event.ttl, now)
            case LinkChanged():
                self._link(event, now)
            case AddressChanged():
                self._address(event, now)
            case ScriptChanged(name=name, up=up):
                self._scripts_up[name] = up
                self._refresh_where(lambda r: name in r.inst.track_script, now)
            case FileValue(name=name, value=value):
                if name in self._file_values:
                    self._file_values[name] = 0 if value is None else value
                    self._refresh_where(lambda r: any(ref.name == name for ref in r.inst.track_file), now)
            case ProcessCount(name=name, count=count):
                self._process_count(name, count, now)
            case SocketChanged():
                self._socket(event, now)
            case EffectFailed():
                self._failed(event)
            case Start():
                self._start(now)
            case Stop():
                for r in list(self.routers.values()):
                    self._apply(r, r.fsm.handle(fsm.Shutdown(), now), now)
                    self._filter(r, r.inst, None)
                    self._tear_down_vmac(r)
            case Reconfigure(config=config):
                self._reconfigure(config, now)
            case _:
                raise fsm.ProtocolMisuse(f"unknown event {event!r}")
        return self._finish(now)

    def handle_timer(self, now: float) -> list[Routed]:
        for name, (when, up) in list(self._process_pending.items()):
            if when <= now:
                del self._process_pending[name]
                self._process_flip(name, up, now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, router_id = heapq.heappop(heap)
            r = self.routers.get(router_id)
            if r is None or r.scheduled != deadline:
                continue  # stale: the router is gone or was re-scheduled earlier
            r.scheduled = None
            self._apply(r, r.fsm.handle_timer(now), now)
            if r.fsm.wants_master and r.group is not None:
                self._dirty_groups.add(r.group)
        return self._finish(now)

    def next_deadline(self) -> float | None:
        pending = min((when for when, _ in self._process_pending.values()), default=None)
        heap = self._heap
        while heap:
            deadline, _, router_id = heap[0]
            r = self.routers.get(router_id)
            if r is not None and r.scheduled == deadline:
                return deadline if pending is None else min(deadline, pending)
            heapq.heappop(heap)
        return pending

    # -- what the runtime asks -------------------------------------------------------------------------------

    def router(self, name: str) -> Router | None:
        return next((r for r in self.routers.values() if r.inst.name == name), None)

    def link_state(self, ifname: str) -> str:
        link = self._links.get(ifname)
        if link is None or link.index is None:
            return "missing"
        return "up" if link.up else "down"

    def script_state(self, name: str) -> str:
        up = self._scripts_up.get(name)
        return "pending" if up is None else "up" if up else "down"

    def file_state(self, name: str) -> int | str:
        value = self._file_values.get(name)
        return "pending" if value is None else value

    def process_state(self, name: str) -> str:
        up = self._process_up.get(name)
        state = "pending" if up is None else "up" if up else "down"
        return f"{state} (changing)" if name in self._process_pending else state

    def summary(self) -> str:
        counts = {state: 0 for state in State}
        for r in self.routers.values():
            counts[r.fsm.state] += 1
        shown = ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
        return f"{len(self.routers)} instances: {shown}" if self.routers else "no instances"

    def _finish(self, now: float) -> list[Routed]:
        self._settle(now)
        for r in self._touched.values():
            deadline = r.fsm.next_deadline()
            if deadline is not None and (r.scheduled is None or deadline < r.scheduled):
                self._schedule(r, deadline, now)
        self._touched.clear()
        if self._status_dirty:
            self._status_dirty = False
            self._emit(None, Status(self.summary()))
        out, self._out = self._out, []
        return out
