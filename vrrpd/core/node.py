"""All of one daemon's virtual routers: packets, links, addresses, scripts and reloads in; effects and one deadline out.

The layer above `fsm.VirtualRouter`, as h11's ConnectionState is above its per-role machines. It decides what
the runtime must not: which router a packet is for and which counter its drop goes to; which facts of the host
put a router in FAULT (its interface missing or down, no working socket, no source address, a tracked object
down); how sync groups couple their members, settled to a fixed point inside each call so that no member waits
for I/O to follow another; what a reload changes; which addresses this daemon installed and may therefore
remove; and the order effects go out in. No socket, clock, asyncio or os: every entry point takes `now`, the
caller's monotonic time in seconds, and returns `Routed` effects; `next_deadline()` says when to call again.
Its vocabulary, the events and effects, is `vrrpd.core.events`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_interface

from daemonkit.net import Address, Interface
from vrrpd.config import Config, Instance, Script
from vrrpd.core import fsm, packet
from vrrpd.core import accept
from vrrpd.core.adverts import AdvertCache, params_for
from vrrpd.core.checks import addresses_differ, check_advert
from vrrpd.core.frames import eui64_link_local, garp_frame, na_frame
from vrrpd.core.fsm import FaultReason, State
from vrrpd.core.events import (
    AddAddresses, AddRoutes, AddressChanged, Announce, CloseSocket, EffectFailed, Effect, Event, LinkChanged, Log,
    FifoLine, FileValue, FilterRules, Notify, PruneFilters, SetUpVmac, TearDownVmac, OpenSocket, ProcessCount, WatchFiles, WatchProcesses, PacketIn, Reconfigure, RemoveAddresses, RemoveRoutes, Retire, Routed, RunScripts, ScriptChanged,
    SocketChanged, Start, StateChanged, Status, Stop, Transmit,
)
from vrrpd.core.notify import fifo_line, group_state, jobs_for
from vrrpd.core.stats import Stats
from vrrpd.core.tracking import Tracked, evaluate

IFA_F_SECONDARY, IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x80, 0x40, 0x08
RESTART_ONLY = ("control_socket", "metrics_listen", "log_format", "log_level", "notify_fifo")  # [global] keys a reload cannot change
COARSE_S = 0.05  # the grid a backup's far-off Master_Down_Timer is checked on (see _schedule)
MAX_HEARD = 4096  # distinct accepted messages remembered (a LAN repeats a few per instance)
WARN_INTERVAL_S = 60.0  # a repeated warning about what a peer sends is logged at most this often
MAX_SETTLE_ROUNDS = 64  # a fixed point is reached in a few rounds; more means a bug in the coupling rules
_HOST_FAULTS = (fsm.NoInterface, fsm.LinkDown, fsm.NoSocket, fsm.NoAddress, fsm.NoVmac, fsm.TrackedInterfaceDown,
                fsm.TrackedScriptDown, fsm.TrackedFileFault, fsm.TrackedProcessDown)  # everything but SyncHeld: the facts decide them


# ---- one router's bookkeeping -------------------------------------------------------------------------------


class _Router:
    __slots__ = ("id", "inst", "vips", "fsm", "stats", "cache", "primary", "installed", "since", "frames",
                 "group", "scheduled", "started", "ah_sequence", "ip_id", "routed", "vmac_asked", "vmac_created",
                 "vmac_ll")

    def __init__(self, router_id: int, inst: Instance, now: float):
        self.id = router_id
        self.inst = inst
        self.vips = frozenset(v.ip for v in inst.virtual_ipaddress)
        self.fsm = fsm.VirtualRouter(params_for(inst, _unspecified(inst.family)))
        self.stats = Stats()
        self.cache = AdvertCache(inst, _unspecified(inst.family))
        self.primary: Address | None = None
        self.installed: set[Interface] = set()  # addresses this daemon added and has not removed since
        self.since = now
        self.frames: tuple[tuple, tuple[bytes, ...]] | None = None  # (what they were built from, frames)
        self.group: str | None = None
        self.scheduled: float | None = None  # the deadline of this router's live entry in the timer heap
        self.started = False
        self.ah_sequence = 0  # auth_type AH: the highest sequence number heard or sent (RFC 2402 anti-replay)
        self.ip_id = 0  # auth_type AH: the IPv4 id of the last datagram built (never 0: the kernel would pick one)
        self.routed: tuple[tuple, tuple] = ((), ())  # the virtual routes and rules installed, not removed since
        self.vmac_asked: tuple | None = None  # use_vmac: (base index, macvlan index) SetUpVmac was asked for
        self.vmac_created = False  # the macvlan is this daemon's (made by it): deleted with the instance
        self.vmac_ll: tuple | None = None  # IPv6 use_vmac: (macvlan index, address) the link-local copy asked for

    @property
    def key(self) -> tuple[str, str]:
        return (self.inst.interface, self.inst.family)

    @property
    def tx_key(self) -> tuple[str, str]:
        """The socket adverts leave from: the macvlan's with use_vmac (sending only), else the base's."""
        return (self.inst.advert_interface, self.inst.family)


def _unspecified(family: str) -> Address:
    return IPv4Address(0) if family == "ipv4" else IPv6Address(0)


# ---- the node -----------------------------------------------------------------------------------------------


class Node:
    def __init__(self, config: Config, now: float = 0.0):
        self.config = config
        self.routers: dict[int, _Router] = {}
        self.global_stats = Stats()  # drops no instance can be blamed for
        self._ids = itertools.count(1)
        self._by_link: dict[tuple[str, str], dict[int, _Router]] = {}  # (ifname, family) -> vrid -> router
        self._links: dict[str, LinkChanged] = {}
        self._addrs: dict[str, dict[Address, tuple[Interface, int]]] = {}  # ifname -> ip -> (address, flags)
        self._sockets: dict[tuple[str, str], int | None] = {}  # the index each open advert socket is bound to
        self._requested: dict[tuple[str, str], int] = {}  # OpenSocket asked for this index, no answer yet
        self._scripts_up: dict[str, bool | None] = {}
        self._groups: dict[str, list[_Router]] = {}
        self._dirty_groups: set[str] = set()
        self._group_states: dict[str, State] = {}  # what the notify FIFO last said of each sync group
        self._yielded: set[str] = set()  # groups with a member that gave MASTER up for a reason of its own
        self._heap: list[tuple[float, int, int]] = []  # (deadline, tie-break, router id); stale entries skipped
        self._seq = itertools.count()
        self._out: list[Routed] = []
        self._touched: dict[int, _Router] = {}
        self._status_dirty = False
        self._warned: dict[tuple[int, str], float] = {}
        self._heard: dict[bytes, tuple] = {}  # payload -> (src, dst, ttl, ifname, family, router, advert, differ)
        self._links_up: dict[str, bool] = {}
        self._primaries: dict[tuple[str, str], Address | None] = {}  # per (interface, family), from _addrs
        self._vip_router: dict[tuple[str, Address], _Router] = {}
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

    def receive(self, ifname: str, family: str, payload: bytes, src: Address, dst: Address, ttl: int,
                now: float) -> list[Routed]:
        """One received message: decoded, routed by VRID, checked against its instance, counted, then believed.

        A master re-sends the same bytes every interval: a message accepted once is remembered by its bytes
        (with the very address objects, TTL and link it came with), and its twin skips decoding and checks."""
        heard = self._heard.get(payload)
        if heard is not None and heard[0] is src and heard[1] is dst and heard[2] == ttl \
                and heard[3] == ifname and heard[4] == family:
            return self._believe(heard[5], heard[6], heard[7], src, now)
        routers = self._by_link.get((ifname, family), {})
        decoded = self._decode(routers, payload, src, dst, ttl)
        if decoded is None:
            return []
        r, result = decoded
        if src == r.primary:
            if payload in (p for _, p in r.cache.adverts(r.fsm.effective_priority)):
                return []  # our own advert, looped back (unicast to ourselves)
            # Another host sends from our address (cloned VMs share a MAC and so an EUI-64 link-local; a
            # duplicate IPv4 address): neither can tell the other's adverts from its own. Say so.
            r.stats.duplicate_address += 1
            self._warn(r, "duplicate_address", now, address=str(src),
                       detail="another host sends VRRP from this node's own source address")
            return self._finish(now)
        reason = check_advert(result, src, r.inst, r.vips)
        if reason is not None:
            r.stats.count_drop(reason)
            if reason is packet.DropReason.ADDRESS_LIST:
                self._warn(r, "address_list_mismatch", now, src=str(src), action="dropped (VRRPv2, RFC 3768 7.1)",
                           theirs=sorted(map(str, result.addresses)), ours=sorted(map(str, r.vips)))
            return self._finish(now) if self._out else []
        differ = result.version == 3 and addresses_differ(result, r.vips)
        if len(self._heard) >= MAX_HEARD:
            self._heard.clear()
        self._heard[payload] = (src, dst, ttl, ifname, family, r, result, differ)
        return self._believe(r, result, differ, src, now)

    def receive_ah(self, ifname: str, data: bytes, ip_header: bytes, src: Address, dst: Address, ttl: int,
                   now: float) -> list[Routed]:
        """An IPv4 datagram of protocol 51: an AH header (RFC 2402), then, if it protects VRRP, a message for a
        router with auth_type AH, whose digest, SPI and sequence number are checked as keepalived does."""
        ah = packet.parse_ah(data)
        routers = self._by_link.get((ifname, "ipv4"), {})
        if isinstance(ah, packet.Drop):
            target = routers.get(data[packet.AH_HEADER_LEN + 1]) if len(data) > packet.AH_HEADER_LEN + 1 else None
            (target.stats if target else self.global_stats).count_drop(ah.reason)
            return []
        if ah.next_header != packet.VRRP_PROTO:
            return []  # AH protecting something else: not ours to judge
        decoded = self._decode(routers, ah.message, src, dst, ttl)
        if decoded is None:
            return []
        r, result = decoded
        if src == r.primary:
            return []
        reason = check_advert(result, src, r.inst, r.vips, with_ah=True)
        if reason is None:
            unicast = bool(r.inst.unicast_peers)
            expected = packet.ah_digest(ip_header, data, ah.message, r.inst.auth_key, unicast)
            if not packet.digest_matches(expected, ah.digest) or ah.spi != int(src) or ah.sequence <= r.ah_sequence:
                reason = packet.DropReason.AUTH_FAILURE
        if reason is not None:
            r.stats.count_drop(reason)
            return []
        r.ah_sequence = ah.sequence
        return self._believe(r, result, False, src, now)  # VRRPv2: a differing address list was dropped above

    def _decode(self, routers: dict[int, _Router], message: bytes, src: Address, dst: Address,
                ttl: int) -> tuple[_Router, packet.Advert] | None:
        """The message decoded and routed by its VRID, or None: dropped and counted, on the instance whose VRID
        byte it carries, else router-wide."""
        if ttl != packet.REQUIRED_TTL:
            ttl = self._ttl_seen(routers, message, dst, ttl)
        result = packet.decode(message, src=src, dst=dst, ttl=ttl)
        if isinstance(result, packet.Drop):
            target = routers.get(message[1]) if len(message) > 1 else None
            (target.stats if target else self.global_stats).count_drop(result.reason)
            return None
        r = routers.get(result.vrid)
        if r is None:
            self.global_stats.count_drop(packet.DropReason.VRID)
            return None
        return r, result

    @staticmethod
    def _ttl_seen(routers: dict[int, _Router], message: bytes, dst: Address, ttl: int) -> int:
        """The TTL the RFC 5798 7.1 check is to see: a unicast advert for an instance whose peers are beyond a
        router (unicast_ttl below 255) passes whatever TTL is left; keepalived checks none for unicast."""
        r = routers.get(message[1]) if len(message) > 1 else None
        if r is not None and r.inst.unicast_peers and r.inst.unicast_ttl < packet.REQUIRED_TTL \
                and not dst.is_multicast and ttl > 0:
            return packet.REQUIRED_TTL
        return ttl

    def _believe(self, r: _Router, result: packet.Advert, differ: bool, src: Address, now: float) -> list[Routed]:
        stats = r.stats
        if differ:
            stats.address_list_errors += 1
            self._warn(r, "address_list_mismatch", now, src=str(src), action="accepted (RFC 5798 7.1)",
                       theirs=sorted(map(str, result.addresses)), ours=sorted(map(str, r.vips)))
        if result.priority == fsm.OWNER_PRIORITY and r.fsm.params.owner:
            self._warn(r, "owner_conflict", now, src=str(src), detail="both routers are configured as address "
                       "owner (priority 255); the lower primary address yields (RFC 9568 6.4.3)")
        stats.adverts_rx += 1
        if r.fsm.state is State.MASTER and result.priority >= r.fsm.effective_priority:
            stats.split_brain_seen += 1
        elif r.fsm.state is State.MASTER and result.priority and self.config.global_.notify_fifo:
            # keepalived's MASTER_RX_LOWER_PRI event: hosts may have followed the other node meanwhile.
            self._emit(r, FifoLine(fifo_line("INSTANCE", r.inst.name, "MASTER_RX_LOWER_PRI",
                                             r.fsm.effective_priority)))
        if result.priority == 0:
            stats.priority_zero_rx += 1
        if result.checksum_form is packet.ChecksumForm.MESSAGE and result.version == 3:
            stats.checksum_rfc9568_rx += 1
        effects = r.fsm.receive_advert(result, src, now) if r.fsm.state is not State.STOP else []
        if not effects and not self._out:
            # The common case, a backup hearing its master: nothing to do but keep the timer right (a
            # later deadline is found when the earlier entry comes due; an earlier one, Skew_Time after a
            # priority 0, is scheduled now).
            deadline = r.fsm.next_deadline()
            if deadline is not None and (r.scheduled is None or deadline < r.scheduled):
                self._schedule(r, deadline, now)
            return []
        self._apply(r, effects, now)
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

    def router(self, name: str) -> _Router | None:
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

    # -- facts of the host -----------------------------------------------------------------------------------

    def _link(self, event: LinkChanged, now: float) -> None:
        old = self._links.get(event.ifname)
        self._links[event.ifname] = event
        self._links_up[event.ifname] = event.index is not None and event.up
        if old is None or old.index != event.index:
            # A new interface, or the old one gone or re-created: what was on the old one is gone with it,
            # its sockets too (bound to the old index, deaf and mute: keepalived reopens them as well).
            self._addrs.pop(event.ifname, None)
            self._primaries = {k: v for k, v in self._primaries.items() if k[0] != event.ifname}
            for r in self.routers.values():
                if r.inst.vip_interface == event.ifname:
                    r.installed.clear()
                if r.inst.interface == event.ifname:
                    r.routed = ((), ())  # the kernel took the routes through the old interface with it
            for key, send_only in self._socket_keys():
                if key[0] == event.ifname:
                    self._requested.pop(key, None)
                    if self._sockets.pop(key, None) is not None and event.index is None:
                        self._emit(None, CloseSocket(*key))
                    self._open_socket(key, send_only)
        self._refresh_where(lambda r: r.inst.interface == event.ifname or r.inst.vmac == event.ifname
                            or any(t.name == event.ifname for t in r.inst.track_interface), now)
        if old is not None and old.index == event.index and old.mac != event.mac and event.index is not None:
            # A new MAC on the same interface (a bond failing over with fail_over_mac, a replaced NIC): hosts
            # still send to the old one. A master tells them at once, with frames built from the new MAC.
            for r in self.routers.values():
                if r.inst.interface == event.ifname and r.fsm.state is State.MASTER:
                    self._announce(r, self._frames(r), max(1, r.inst.garp_repeat))

    def _address(self, event: AddressChanged, now: float) -> None:
        table = self._addrs.setdefault(event.ifname, {})
        ip = event.address.ip
        if event.present:
            table[ip] = (event.address, event.flags)
        else:
            table.pop(ip, None)
            r = self._vip_router.get((event.ifname, ip))
            if r is not None and event.address in r.installed and r.fsm.state is State.MASTER:
                # Someone removed a VIP from under this master: put it back at once (resigning would leave
                # the address nowhere until the peer's Master_Down_Interval) and say so, in the log and
                # the counter, so that a network manager fighting us is seen.
                r.installed.discard(event.address)
                r.stats.vips_restored += 1
                self._install(r, (event.address,), now)
                self._announce(r, self._frames(r, {ip}), 1)
                self._emit(r, Log("warning", "vip_restored", {"instance": r.inst.name, "address": str(event.address)}))
        if ip in self._vip_ips:
            return  # a VIP is never a source address: no router's primary changes
        self._primaries = {k: v for k, v in self._primaries.items() if k[0] != event.ifname}
        self._refresh_where(lambda r: r.inst.interface == event.ifname or r.inst.vmac == event.ifname, now)

    def _socket(self, event: SocketChanged, now: float) -> None:
        key = (event.ifname, event.family)
        self._requested.pop(key, None)
        self._sockets[key] = event.index
        if event.error:
            self._emit(None, Log("error", "socket_failed", {"interface": event.ifname, "family": event.family,
                                                            "error": event.error}))
        self._refresh_where(lambda r: r.key == key or r.tx_key == key, now)

    def _socket_keys(self) -> list[tuple[tuple[str, str], bool]]:
        """Every advert socket wanted: (key, send only); a macvlan's (use_vmac) sends only."""
        keys = [(key, False) for key in self._by_link]
        return keys + [(k, True) for k in dict.fromkeys(r.tx_key for r in self.routers.values() if r.tx_key != r.key)]

    def _open_socket(self, key: tuple[str, str], send_only: bool = False) -> None:
        link = self._links.get(key[0])
        if link is None or link.index is None or self._requested.get(key) == link.index:
            return
        if self._sockets.get(key) == link.index:
            return
        if send_only and not self._vmac_ok(next(r for r in self.routers.values() if r.tx_key == key)):
            return  # not this daemon's macvlan (yet): nothing is sent from it
        self._requested[key] = link.index
        self._emit(None, OpenSocket(*key, send_only=send_only))

    def _primary(self, r: _Router) -> Address | None:
        """The source of the router's adverts: `unicast_src` / `mcast_src_ip` while it is on the interface,
        else the interface's."""
        configured = r.inst.source  # unicast_src, or mcast_src_ip
        if configured is not None:
            return configured if configured in self._addrs.get(r.inst.interface, {}) else None
        key = r.key
        if key not in self._primaries:
            self._primaries[key] = self._interface_primary(*key)
        return self._primaries[key]

    def _interface_primary(self, ifname: str, family: str) -> Address | None:
        """RFC 5798 5.1.1.1 / 5.1.2.1: the first primary IPv4 address (else any), or the IPv6 link-local; never
        a VIP of a non-owner instance here. A true owner's VIP is its own address, and may be its source."""
        usable = [(iface, flags) for ip, (iface, flags) in self._addrs.get(ifname, {}).items()
                  if ip not in self._vip_ips and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)]
        if family == "ipv6":
            return next((iface.ip for iface, _ in usable if iface.version == 6 and iface.ip.is_link_local), None)
        usable = [(iface, flags) for iface, flags in usable if iface.version == 4]
        primaries = [iface for iface, flags in usable if not flags & IFA_F_SECONDARY]
        chosen = (primaries or [iface for iface, _ in usable] or [None])[0]
        return chosen.ip if chosen is not None else None

    def _host_faults(self, r: _Router) -> set[FaultReason]:
        link = self._links.get(r.inst.interface)
        if link is None or link.index is None:
            return {fsm.NoInterface()}
        faults: set[FaultReason] = set()
        if not link.up and not r.inst.dont_track_primary:
            faults.add(fsm.LinkDown())
        if self._sockets.get(r.key) != link.index:
            faults.add(fsm.NoSocket())
        if r.inst.vmac is not None:
            if not self._vmac_ready(r):
                faults.add(fsm.NoVmac())
            elif r.tx_key != r.key and self._sockets.get(r.tx_key) != self._links[r.inst.vmac].index:
                faults.add(fsm.NoSocket())
        if r.primary is None:
            faults.add(fsm.NoAddress())
        return faults

    def _refresh_where(self, which, now: float) -> None:
        for r in list(self.routers.values()):
            if which(r):
                self._refresh(r, now)

    def _vmac_ok(self, r: _Router) -> bool:
        """The macvlan exists, with the virtual MAC (an interface of that name with another MAC is not ours)."""
        vmac = self._links.get(r.inst.vmac)
        return vmac is not None and vmac.index is not None and (vmac.mac or "") == r.inst.vmac_address

    def _vmac_ready(self, r: _Router) -> bool:
        """The macvlan is set up and up (and for IPv6 carries the base's link-local, the adverts' source)."""
        if not self._vmac_ok(r) or not self._links[r.inst.vmac].up:
            return False
        if r.inst.family == "ipv6" and r.primary is not None:
            return r.primary in self._addrs.get(r.inst.vmac, {})
        return True

    def _want_vmac(self, r: _Router) -> None:
        """use_vmac, as keepalived: the macvlan made when the base interface is there and it is not (again after
        the base is re-created, which takes it along), an existing one of the right MAC adopted and set up."""
        base = self._links.get(r.inst.interface)
        if r.inst.vmac is None or base is None or base.index is None or not self.started \
                or r.fsm.state is State.STOP:
            return
        vmac = self._links.get(r.inst.vmac)
        present = vmac is not None and vmac.index is not None
        asked = (base.index, vmac.index if present else None)
        if present and not self._vmac_ok(r):
            if r.vmac_asked != asked:
                r.vmac_asked = asked
                self._emit(r, Log("error", "vmac_name_taken", {"instance": r.inst.name, "interface": r.inst.vmac,
                                                                "mac": vmac.mac, "want": r.inst.vmac_address}))
            return
        if r.vmac_asked != asked and not (r.vmac_asked is not None and r.vmac_asked[1] is None and present):
            self._emit(r, SetUpVmac(r.inst.vmac, r.inst.interface, r.inst.vmac_address, create=not present))
            r.vmac_created = r.vmac_created or not present
        r.vmac_asked = asked
        if present and r.inst.family == "ipv6" and r.primary is not None \
                and r.primary not in self._addrs.get(r.inst.vmac, {}) and r.vmac_ll != (vmac.index, r.primary):
            # keepalived's way: the base's link-local on the macvlan too, the source of adverts sent from it
            r.vmac_ll = (vmac.index, r.primary)
            self._emit(r, AddAddresses(r.inst.vmac, (ip_interface(f"{r.primary}/64"),)))
        if present:
            self._open_socket(r.tx_key, send_only=r.tx_key != r.key)

    def _tear_down_vmac(self, r: _Router) -> None:
        if r.inst.vmac is not None and r.vmac_asked is not None:
            self._emit(r, TearDownVmac(r.inst.vmac, r.inst.interface, delete=r.vmac_created))
            r.vmac_asked, r.vmac_created = None, False

    def _refresh(self, r: _Router, now: float) -> None:
        """Bring the router in line with the facts: source address, FAULT reasons, effective priority."""
        primary = self._primary(r)
        if primary != r.primary:
            self._heard = {}  # our own address changed: what was a peer's advert may now be our own
            r.primary = primary
            src = primary or _unspecified(r.inst.family)
            r.cache = AdvertCache(r.inst, src)
            r.fsm.reconfigure(params_for(r.inst, src, r.fsm.params.sync_gated))
        self._want_vmac(r)
        verdict = evaluate(r.inst, self._links_up, self._scripts_up, self._scripts, self._tracked)
        wanted = self._host_faults(r) | verdict.faults
        current = {f for f in r.fsm.faults if isinstance(f, _HOST_FAULTS)}
        effects: list[fsm.Effect] = []
        for reason in sorted(wanted - current, key=lambda f: f.label):  # new reasons first: no BACKUP between
            effects += r.fsm.handle(fsm.FaultChanged(True, reason), now)
        for reason in sorted(current - wanted, key=lambda f: f.label):
            effects += r.fsm.handle(fsm.FaultChanged(False, reason), now)
        effects += r.fsm.handle(fsm.PriorityChanged(verdict.priority), now)
        if wanted != current and r.group is not None:
            self._dirty_groups.add(r.group)
        self._apply(r, effects, now)
        if self.started and not r.started and r.key not in self._requested:
            self._startup(r, now)

    # -- start, reload, scripts ------------------------------------------------------------------------------

    def _start(self, now: float) -> None:
        if self.started:
            raise fsm.ProtocolMisuse("start twice")
        self.started = True
        self._emit(None, PruneFilters(tuple(accept.table_name(r.inst) for r in self.routers.values()
                                            if accept.wants_rules(r.inst))))
        for r in list(self.routers.values()):
            self._filter(r, None, r.inst)  # before anything else in its queue: before it can hold an address
            self._remove_stale(r)
            self._refresh(r, now)

    def _startup(self, r: _Router, now: float) -> None:
        r.started = True
        self._apply(r, r.fsm.handle(fsm.Startup(), now), now)

    def _remove_stale(self, r: _Router) -> None:
        """SPEC 4: VIPs of an instance found at start-up were left by an earlier run (a crash): removed, unless
        the router is the address owner, whose addresses are its own."""
        if r.fsm.params.owner:
            return
        table = self._addrs.get(r.inst.vip_interface, {})
        stale = tuple(table[v.ip][0] for v in r.inst.addresses if v.ip in table)
        if stale:
            for iface in stale:
                table.pop(iface.ip, None)
            self._emit(r, RemoveAddresses(r.inst.vip_interface, stale))
            self._emit(r, Log("warning", "stale_vips_removed", {"instance": r.inst.name,
                                                                "addresses": [str(a) for a in stale]}))

    def _add(self, inst: Instance, now: float) -> _Router:
        r = _Router(next(self._ids), inst, now)
        self.routers[r.id] = r
        self._by_link.setdefault(r.key, {})[inst.vrid] = r
        self._open_socket(r.key)
        return r

    def _filter(self, r: _Router, old: Instance | None, new: Instance | None) -> None:
        """The instance's own nftables table (accept_mode = false) made, changed or deleted to follow `new`."""
        if new is not None and accept.wants_rules(new):
            if old is None or not accept.wants_rules(old) or accept.rules(old) != accept.rules(new):
                self._emit(r, FilterRules(accept.table_name(new), accept.rules(new)))
        elif old is not None and accept.wants_rules(old):
            self._emit(r, FilterRules(accept.table_name(old), accept.removal(accept.table_name(old))))

    def _index_vips(self) -> None:
        """Which router each VIP belongs to, and which addresses are never a source (non-owner VIPs)."""
        self._heard = {}  # what was accepted was accepted by the old configuration
        self._vip_router = {(r.inst.vip_interface, v.ip): r for r in self.routers.values() for v in r.inst.addresses}
        self._vip_ips = frozenset(v.ip for r in self.routers.values() if r.inst.priority != fsm.OWNER_PRIORITY
                                  for v in r.inst.addresses)
        self._primaries = {}
        self._scripts = {s.name: s for s in self.config.scripts}

    def _drop(self, r: _Router) -> None:
        del self.routers[r.id]
        if r.tx_key != r.key and all(other.tx_key != r.tx_key for other in self.routers.values()):
            self._requested.pop(r.tx_key, None)
            if self._sockets.pop(r.tx_key, None) is not None:
                self._emit(None, CloseSocket(*r.tx_key))
        on_link = self._by_link[r.key]
        del on_link[r.inst.vrid]
        if not on_link:
            del self._by_link[r.key]
            self._requested.pop(r.key, None)
            if self._sockets.pop(r.key, None) is not None:
                self._emit(None, CloseSocket(*r.key))

    def _regroup(self) -> None:
        """Sync-group membership from the config; a member of a group of one is not gated."""
        by_name = {r.inst.name: r for r in self.routers.values()}
        self._groups = {g.name: [by_name[n] for n in g.instances if n in by_name] for g in self.config.sync_groups}
        for r in self.routers.values():
            r.group = None
        for name, members in self._groups.items():
            for r in members:
                r.group = name
        for r in self.routers.values():
            gated = r.group is not None and len(self._groups[r.group]) > 1
            if gated != r.fsm.params.sync_gated:
                r.fsm.reconfigure(dataclasses.replace(r.fsm.params, sync_gated=gated))
        self._dirty_groups |= set(self._groups)

    def _want_scripts(self) -> None:
        used = {name for inst in self.config.instances for name in inst.track_script}
        self._scripts_up = {name: self._scripts_up.get(name) for name in used}
        self._emit(None, RunScripts(tuple(s for s in self.config.scripts if s.name in used)))

    def _want_tracked(self, old: Config | None = None) -> None:
        """The files and processes instances track: watched from now on (a changed one anew, from unknown)."""
        config = self.config
        files = tuple(f for f in config.track_files if any(ref.name == f.name for i in config.instances
                                                           for ref in i.track_file))
        processes = tuple(p for p in config.track_processes if any(ref.name == p.name for i in config.instances
                                                                   for ref in i.track_process))
        kept_files = {f.name for f in files if old is not None and f in old.track_files}
        kept_processes = {p.name for p in processes if old is not None and p in old.track_processes}
        self._file_values = {f.name: self._file_values.get(f.name) if f.name in kept_files else None for f in files}
        self._process_up = {p.name: self._process_up.get(p.name) if p.name in kept_processes else None
                            for p in processes}
        self._process_pending = {k: v for k, v in self._process_pending.items() if k in kept_processes}
        self._tracked = Tracked(self._file_values, self._process_up, {f.name: f for f in files},
                                {p.name: p for p in processes})
        if old is None or files != tuple(f for f in old.track_files if f.name in self._tracked_names(old, "file")):
            self._emit(None, WatchFiles(files))
        if old is None or processes != tuple(p for p in old.track_processes
                                             if p.name in self._tracked_names(old, "process")):
            self._emit(None, WatchProcesses(processes))

    @staticmethod
    def _tracked_names(config: Config, kind: str) -> set[str]:
        return {ref.name for i in config.instances for ref in getattr(i, f"track_{kind}")}

    def _process_count(self, name: str, count: int, now: float) -> None:
        """keepalived's quorum with fork_delay / terminate_delay: a change counts once it has held that long;
        the first count (the scan at start) counts at once."""
        track = self._tracked.processes.get(name)
        if track is None:
            return
        up = track.up(count)
        current = self._process_up.get(name)
        if current is None or (up != current and (track.fork_delay if up else track.terminate_delay) == 0):
            self._process_pending.pop(name, None)
            self._process_flip(name, up, now)
        elif up == current:
            self._process_pending.pop(name, None)  # back before its delay ran out: nothing happened
        elif name not in self._process_pending:
            self._process_pending[name] = (now + (track.fork_delay if up else track.terminate_delay), up)

    def _process_flip(self, name: str, up: bool, now: float) -> None:
        if self._process_up.get(name) is up:
            return
        self._process_up[name] = up
        self._emit(None, Log("info", "process_status", {"track_process": name, "up": up}))
        self._refresh_where(lambda r: any(ref.name == name for ref in r.inst.track_process), now)

    def _reconfigure(self, new: Config, now: float) -> None:
        old_global = self.config.global_
        restart_only = [k for k in RESTART_ONLY if getattr(old_global, k) != getattr(new.global_, k)]
        if restart_only:  # the old values stay in force: said once, not silently ignored
            self._emit(None, Log("warning", "reload_needs_restart", {
                "keys": restart_only, "detail": "[global] changes to these keys take effect at the next start"}))
            new = dataclasses.replace(new, global_=dataclasses.replace(
                new.global_, **{k: getattr(old_global, k) for k in restart_only}))
        # What identifies a router across a reload (SPEC 4), and its macvlan: a use_vmac change is a new router.
        by_key = {(*r.inst.key, r.inst.vmac, r.inst.vmac_xmit_base): r for r in self.routers.values()}
        wanted = {(*inst.key, inst.vmac, inst.vmac_xmit_base): inst for inst in new.instances}
        for key in by_key.keys() - wanted.keys():  # removed: released like a shutdown (priority 0)
            r = by_key[key]
            self._apply(r, r.fsm.handle(fsm.Shutdown(), now), now)
            self._filter(r, r.inst, None)
            self._tear_down_vmac(r)
            self._emit(r, Retire())
            self._drop(r)
        old_config = self.config
        scripts_changed = new.scripts != self.config.scripts or {i.track_script for i in new.instances} != {
            i.track_script for i in self.config.instances}
        self.config = new
        for key in by_key.keys() & wanted.keys():
            self._keep(by_key[key], wanted[key], now)
        for key in wanted.keys() - by_key.keys():
            self._filter(self._add(wanted[key], now), None, wanted[key])
        self._index_vips()
        self._regroup()
        if scripts_changed:
            self._want_scripts()
        self._want_tracked(old_config)
        for r in list(self.routers.values()):
            self._refresh(r, now)
        self._status_dirty = True

    def _keep(self, r: _Router, inst: Instance, now: float) -> None:
        """Same (interface, vrid, family): same state; a master's addresses are diffed, a VIP that stays is
        never touched (RFC 5798 leaves reloads to us; keepalived does the same)."""
        old = {v.ip: v for v in r.inst.addresses}
        new = {v.ip: v for v in inst.addresses}
        self._filter(r, r.inst, inst)  # the table first: a VIP added below is never accepted by mistake
        r.inst = inst
        r.vips = frozenset(v.ip for v in inst.virtual_ipaddress)
        r.frames = None
        src = r.primary or _unspecified(inst.family)
        r.cache = AdvertCache(inst, src)
        r.fsm.reconfigure(params_for(inst, src, r.fsm.params.sync_gated))
        if r.fsm.state is not State.MASTER:
            return
        reprefixed = [old[ip] for ip in old.keys() & new.keys() if old[ip] != new[ip] and old[ip] in r.installed]
        gone = [v for ip, v in old.items() if ip not in new and v in r.installed]
        if reprefixed:  # the kernel keys an IPv6 address by address alone: the old prefix must go first
            self._uninstall(r, reprefixed)
        added = [v for ip, v in new.items() if old.get(ip) != v]
        self._install(r, added, now)
        self._uninstall(r, gone)
        if added:
            self._announce(r, self._frames(r, {v.ip for v in added}), 1)
        self._route(r, inst.virtual_routes, inst.virtual_rules)
        self._apply(r, [fsm.SendAdvert(r.fsm.effective_priority)], now)

    # -- sync groups -------------------------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        """keepalived's vrrp_sync_group, as state-triggered transitions folded to a fixed point (h11's rule)."""
        for _ in range(MAX_SETTLE_ROUNDS):
            if not self._dirty_groups:
                self._group_lines()
                return
            dirty, self._dirty_groups = self._dirty_groups, set()
            for name in sorted(dirty):
                self._settle_group(name, self._groups.get(name, []), now)
        raise fsm.ProtocolMisuse(f"sync groups did not settle in {MAX_SETTLE_ROUNDS} rounds")

    def _group_lines(self) -> None:
        """keepalived writes `GROUP "name" STATE 0` when a sync group as a whole changes state; the line goes
        through its first member's queue, behind that member's own transition."""
        if not self.config.global_.notify_fifo:
            return
        for name, members in self._groups.items():
            if len(members) < 2:
                continue
            state = group_state([r.fsm.state for r in members])
            if state is not None and self._group_states.get(name) is not state:
                self._group_states[name] = state
                self._emit(members[0], FifoLine(fifo_line("GROUP", name, state.value, 0)))

    def _settle_group(self, name: str, members: list[_Router], now: float) -> None:
        held = fsm.SyncHeld(name)
        # One member in FAULT for a reason of its own holds every other member in FAULT.
        faulty = {r.id for r in members if any(not isinstance(f, fsm.SyncHeld) for f in r.fsm.faults)}
        for r in members:
            hold = bool(faulty - {r.id})
            if hold != (held in r.fsm.faults):
                self._apply(r, r.fsm.handle(fsm.FaultChanged(hold, held), now), now)
        # A member that gave MASTER up (a higher priority master) takes its masters along to BACKUP.
        if name in self._yielded:
            self._yielded.discard(name)
            for r in members:
                if r.fsm.state is State.MASTER:
                    self._apply(r, r.fsm.handle(fsm.SyncTo(State.BACKUP, f"sync_group:{name}"), now), now)
        # MASTER only together: once every member is MASTER or wants to be (keepalived: prefer BACKUP to
        # thrashing when the members' peers disagree).
        wanting = [r for r in members if r.fsm.wants_master]
        if wanting and all(r.fsm.state is State.MASTER or r.fsm.wants_master for r in members):
            for r in wanting:
                self._apply(r, r.fsm.handle(fsm.SyncTo(State.MASTER, f"sync_group:{name}"), now), now)

    # -- carrying effects out ------------------------------------------------------------------------------

    def _warn(self, r: _Router, event: str, now: float, **fields) -> None:
        """A warning about what a router hears, at most once a minute per router and kind: a misconfigured
        peer sends the same thing every advert interval, and the counter tells how often."""
        key = (r.id, event)
        last = self._warned.get(key)
        if last is not None and now - last < WARN_INTERVAL_S:
            return
        self._warned[key] = now
        self._emit(r, Log("warning", event, {"instance": r.inst.name, "vrid": r.inst.vrid, **fields}))

    def _emit(self, r: _Router | None, effect: Effect) -> None:
        self._out.append(Routed(r.id if r is not None else None, effect))

    def _schedule(self, r: _Router, deadline: float, now: float) -> None:
        """Put the router in the heap at `deadline`, or, for a backup whose Master_Down_Timer is still far off,
        at the last COARSE_S boundary before it. A live master's adverts push that timer on and on: every
        backup would otherwise wake the daemon once per Master_Down_Interval, each at its own moment; on the
        grid they share their wake-ups, and the last check before the deadline is exact."""
        if deadline - now > 2 * COARSE_S and r.fsm.state is State.BACKUP:
            deadline = (deadline // COARSE_S) * COARSE_S
        r.scheduled = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), r.id))

    def _apply(self, r: _Router, effects: Iterable[fsm.Effect], now: float) -> None:
        """The router's state-machine effects, made concrete: bytes, addresses, frames, jobs."""
        self._touched[r.id] = r
        for effect in effects:
            match effect:
                case fsm.SendAdvert(priority=priority):
                    self._transmit(r, priority)
                case fsm.AddAddresses():
                    self._install(r, r.inst.addresses, now)
                    self._route(r, r.inst.virtual_routes, r.inst.virtual_rules)
                case fsm.RemoveAddresses():
                    self._route(r, (), ())
                    self._uninstall(r, list(r.installed))
                case fsm.Announce(count=count, delayed=delayed):
                    if self._links.get(r.inst.vip_interface, LinkChanged("", None)).index is not None:
                        r.stats.garp_delays += delayed
                        self._announce(r, self._frames(r), count)
                case fsm.StateChanged(old=old, new=new, reason=reason):
                    self._state_changed(r, old, new, reason, now)

    def _transmit(self, r: _Router, priority: int) -> None:
        link = self._links.get(r.inst.advert_interface)
        if r.primary is None or link is None or link.index is None or self._sockets.get(r.tx_key) != link.index:
            return  # no socket or no source to send from (the router is in FAULT, or on its way there)
        packets = r.cache.adverts(priority)
        r.stats.adverts_tx += len(packets)
        if priority == 0:
            r.stats.priority_zero_tx += len(packets)
        ttl = r.inst.unicast_ttl if r.inst.unicast_peers else packet.REQUIRED_TTL
        if r.inst.auth_type == "AH":
            self._emit(r, Transmit(r.inst.advert_interface, r.inst.family, r.primary,
                                   self._with_ah(r, packets, ttl), True))
            return
        self._emit(r, Transmit(r.inst.advert_interface, r.inst.family, r.primary, packets, ttl=ttl))

    def _with_ah(self, r: _Router, packets: tuple[tuple[Address, bytes], ...], ttl: int) -> tuple[tuple[Address, bytes], ...]:
        """Each message inside its own AH datagram: the next sequence number, a fresh IP id (keepalived's)."""
        out = []
        for dst, message in packets:
            r.ah_sequence = min(r.ah_sequence + 1, 0xFFFFFFFF)
            r.ip_id = r.ip_id % 0xFFFF + 1
            out.append((dst, packet.ah_datagram(message, src=r.primary, dst=dst, key=r.inst.auth_key,
                                                sequence=r.ah_sequence, ip_id=r.ip_id, ttl=ttl,
                                                unicast=bool(r.inst.unicast_peers))))
        return tuple(out)

    def _announce(self, r: _Router, frames: tuple[bytes, ...], repeat: int) -> None:
        r.stats.announcements_tx += len(frames) * repeat
        interval = r.inst.garp_interval if r.inst.family == "ipv4" else r.inst.gna_interval
        self._emit(r, Announce(r.inst.vip_interface, frames, repeat, interval))

    def _install(self, r: _Router, vips: Iterable[Interface], now: float) -> None:
        """Add what is not there yet; an address already present that we did not add is not ours to own."""
        table = self._addrs.setdefault(r.inst.vip_interface, {})
        added = tuple(v for v in vips if v.ip not in table or v in r.installed)
        added = tuple(v for v in added if v not in r.installed)
        if not added or self._links.get(r.inst.vip_interface, LinkChanged("", None)).index is None:
            return
        for v in added:
            table[v.ip] = (v, 0)
        r.installed.update(added)
        self._emit(r, AddAddresses(r.inst.vip_interface, added))

    def _route(self, r: _Router, routes: tuple, rules: tuple) -> None:
        """Make the installed virtual routes and rules these: the ones to go removed (before the addresses
        they may use), the new ones added (after them); a route already there stays untouched."""
        old_routes, old_rules = r.routed
        gone = (tuple(x for x in old_routes if x not in routes), tuple(x for x in old_rules if x not in rules))
        new = (tuple(x for x in routes if x not in old_routes), tuple(x for x in rules if x not in old_rules))
        r.routed = (routes, rules)
        if (gone[0] or gone[1]) and self._links.get(r.inst.interface, LinkChanged("", None)).index is not None:
            self._emit(r, RemoveRoutes(r.inst.interface, *gone))
        if new[0] or new[1]:
            self._emit(r, AddRoutes(r.inst.interface, *new))

    def _uninstall(self, r: _Router, vips: Iterable[Interface]) -> None:
        removed = tuple(v for v in vips if v in r.installed)
        if not removed:
            return
        r.installed.difference_update(removed)
        table = self._addrs.get(r.inst.vip_interface, {})
        for v in removed:
            table.pop(v.ip, None)
        if self._links.get(r.inst.vip_interface, LinkChanged("", None)).index is not None:
            self._emit(r, RemoveAddresses(r.inst.vip_interface, removed))

    def _frames(self, r: _Router, only: set[Address] | None = None) -> tuple[bytes, ...]:
        """The announcements, from the interface's MAC, or with use_vmac the virtual MAC (RFC 5798 7.3)."""
        link = self._links[r.inst.interface]
        mac = r.inst.vmac_address if r.inst.vmac else (link.mac or "00:00:00:00:00:00")
        link_local = next((ip for ip, (_, flags) in self._addrs.get(r.inst.interface, {}).items()
                           if ip.version == 6 and ip.is_link_local and not flags & IFA_F_TENTATIVE), None)
        basis = (mac, link_local, link.forwarding)
        if r.frames is None or r.frames[0] != basis:
            source = link_local or eui64_link_local(mac)
            frames = tuple(garp_frame(v.ip, mac) if v.version == 4 else na_frame(v.ip, mac, source, link.forwarding)
                           for v in r.inst.addresses)
            r.frames = (basis, frames)
        if only is None:
            return r.frames[1]
        return tuple(f for v, f in zip(r.inst.addresses, r.frames[1]) if v.ip in only)

    def _state_changed(self, r: _Router, old: State, new: State, reason: str, now: float) -> None:
        r.since = now
        if new is State.MASTER:
            r.stats.master_transitions += 1
        elif old is State.MASTER:
            r.stats.master_releases += 1
        if r.group is not None:
            self._dirty_groups.add(r.group)
            if old is State.MASTER and new is State.BACKUP and not reason.startswith("sync"):
                self._yielded.add(r.group)
        priority = r.fsm.effective_priority
        self._emit(r, StateChanged(r.inst.name, r.inst.vrid, r.inst.family, old, new, reason, priority))
        if old is State.MASTER and reason == "higher_priority_master":
            # Another master on this link: a split brain has just healed, and hosts may have followed the
            # other node's announcements for the VIPs this node still holds too (a dual-master pair after a
            # partition). They hear from us again now, not when their neighbour entries expire.
            for other in self._by_link.get(r.key, {}).values():
                if other is not r and other.fsm.state is State.MASTER:
                    self._announce(other, self._frames(other), max(1, other.inst.garp_repeat))
        jobs = jobs_for(r.inst, new, priority)
        if jobs:
            self._emit(r, Notify(jobs))
        if self.config.global_.notify_fifo:  # after the commands are started, as keepalived writes it
            self._emit(r, FifoLine(fifo_line("INSTANCE", r.inst.name, new.value, priority)))
        self._status_dirty = True

    def _failed(self, event: EffectFailed) -> None:
        r = self.routers.get(event.router)
        stats = r.stats if r is not None else self.global_stats
        match event.effect:
            case Transmit(packets=packets):
                stats.send_errors += 1
                stats.adverts_tx -= len(packets) if r is not None else 0
            case AddAddresses(addresses=addresses):
                if event.exists and r is not None:
                    r.installed.difference_update(addresses)  # there before us: not ours to remove later
                else:
                    stats.vip_add_errors += 1
            case RemoveAddresses():
                stats.vip_remove_errors += 1
            case AddRoutes(routes=routes, rules=rules):
                if event.exists and r is not None:  # there before us: not ours to remove later
                    r.routed = (tuple(x for x in r.routed[0] if x not in routes),
                                tuple(x for x in r.routed[1] if x not in rules))
                elif not event.exists:
                    stats.route_add_errors += 1
            case RemoveRoutes():
                stats.route_remove_errors += 1
            case FilterRules():
                stats.filter_errors += 1
            case Announce():
                stats.announce_errors += 1

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
