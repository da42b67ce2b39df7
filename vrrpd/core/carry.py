"""The Node's effects made concrete: advert bytes, addresses and routes installed and removed, announcement
frames, state changes told, failed effects counted, the timer heap."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from daemonkit.net import Address, Interface
from vrrpd.core import fsm, packet
from vrrpd.core.events import (
    AddAddresses, AddRoutes, Announce, Effect, EffectFailed, FifoLine, FilterRules, LinkChanged, Log, Notify,
    RemoveAddresses, RemoveRoutes, Routed, StateChanged, Transmit,
)
from vrrpd.core.frames import eui64_link_local, garp_frame, na_frame
from vrrpd.core.fsm import State
from vrrpd.core.notify import fifo_line, jobs_for
from vrrpd.core.router import Router

IFA_F_SECONDARY, IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x80, 0x40, 0x08
COARSE_S = 0.05  # the grid a backup's far-off Master_Down_Timer is checked on (see _schedule)
WARN_INTERVAL_S = 60.0  # a repeated warning about what a peer sends is logged at most this often


class Carrying:
    """A part of `Node` (vrrpd.core.node), which holds all the state; one concern per file, as the node's sections."""

    def _warn(self, r: Router, event: str, now: float, **fields) -> None:
        """A warning about what a router hears, at most once a minute per router and kind: a misconfigured
        peer sends the same thing every advert interval, and the counter tells how often."""
        key = (r.id, event)
        last = self._warned.get(key)
        if last is not None and now - last < WARN_INTERVAL_S:
            return
        self._warned[key] = now
        self._emit(r, Log("warning", event, {"instance": r.inst.name, "vrid": r.inst.vrid, **fields}))

    def _emit(self, r: Router | None, effect: Effect) -> None:
        self._out.append(Routed(r.id if r is not None else None, effect))

    def _schedule(self, r: Router, deadline: float, now: float) -> None:
        """Put the router in the heap at `deadline`, or, for a backup whose Master_Down_Timer is still far off,
        at the last COARSE_S boundary before it. A live master's adverts push that timer on and on: every
        backup would otherwise wake the daemon once per Master_Down_Interval, each at its own moment; on the
        grid they share their wake-ups, and the last check before the deadline is exact."""
        if deadline - now > 2 * COARSE_S and r.fsm.state is State.BACKUP:
            deadline = (deadline // COARSE_S) * COARSE_S
        r.scheduled = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), r.id))

    def _apply(self, r: Router, effects: Iterable[fsm.Effect], now: float) -> None:
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

    def _transmit(self, r: Router, priority: int) -> None:
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

    def _with_ah(self, r: Router, packets: tuple[tuple[Address, bytes], ...], ttl: int) -> tuple[tuple[Address, bytes], ...]:
        """Each message inside its own AH datagram: the next sequence number, a fresh IP id (keepalived's)."""
        out = []
        for dst, message in packets:
            r.ah_sequence = min(r.ah_sequence + 1, 0xFFFFFFFF)
            r.ip_id = r.ip_id % 0xFFFF + 1
            out.append((dst, packet.ah_datagram(message, src=r.primary, dst=dst, key=r.inst.auth_key,
                                                sequence=r.ah_sequence, ip_id=r.ip_id, ttl=ttl,
                                                unicast=bool(r.inst.unicast_peers))))
        return tuple(out)

    def _announce(self, r: Router, frames: tuple[bytes, ...], repeat: int) -> None:
        r.stats.announcements_tx += len(frames) * repeat
        interval = r.inst.garp_interval if r.inst.family == "ipv4" else r.inst.gna_interval
        self._emit(r, Announce(r.inst.vip_interface, frames, repeat, interval))

    def _install(self, r: Router, vips: Iterable[Interface], now: float) -> None:
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

    def _route(self, r: Router, routes: tuple, rules: tuple) -> None:
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

    def _uninstall(self, r: Router, vips: Iterable[Interface]) -> None:
        removed = tuple(v for v in vips if v in r.installed)
        if not removed:
            return
        r.installed.difference_update(removed)
        table = self._addrs.get(r.inst.vip_interface, {})
        for v in removed:
            table.pop(v.ip, None)
        if self._links.get(r.inst.vip_interface, LinkChanged("", None)).index is not None:
            self._emit(r, RemoveAddresses(r.inst.vip_interface, removed))

    def _frames(self, r: Router, only: set[Address] | None = None) -> tuple[bytes, ...]:
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

    def _state_changed(self, r: Router, old: State, new: State, reason: str, now: float) -> None:
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
