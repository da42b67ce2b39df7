"""The Node's facts of the host: links, addresses and sockets in; each router's source address, FAULT reasons
and macvlan (use_vmac) kept in line with them."""

from __future__ import annotations

from ipaddress import ip_interface

from daemonkit.net import Address
from vrrpd.core import fsm
from vrrpd.core.adverts import AdvertCache, params_for
from vrrpd.core.events import (
    AddAddresses, AddressChanged, CloseSocket, LinkChanged, Log, OpenSocket, SetUpVmac, SocketChanged, TearDownVmac,
)
from vrrpd.core.fsm import FaultReason, State
from vrrpd.core.router import Router, unspecified
from vrrpd.core.tracking import evaluate

IFA_F_SECONDARY, IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x80, 0x40, 0x08


class HostFacts:
    """A part of `Node` (vrrpd.core.node), which holds all the state; one concern per file, as the node's sections."""

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

    def _primary(self, r: Router) -> Address | None:
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

    def _host_faults(self, r: Router) -> set[FaultReason]:
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

    def _vmac_ok(self, r: Router) -> bool:
        """The macvlan exists, with the virtual MAC (an interface of that name with another MAC is not ours)."""
        vmac = self._links.get(r.inst.vmac)
        return vmac is not None and vmac.index is not None and (vmac.mac or "") == r.inst.vmac_address

    def _vmac_ready(self, r: Router) -> bool:
        """The macvlan is set up and up (and for IPv6 carries the base's link-local, the adverts' source)."""
        if not self._vmac_ok(r) or not self._links[r.inst.vmac].up:
            return False
        if r.inst.family == "ipv6" and r.primary is not None:
            return r.primary in self._addrs.get(r.inst.vmac, {})
        return True

    def _want_vmac(self, r: Router) -> None:
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

    def _tear_down_vmac(self, r: Router) -> None:
        if r.inst.vmac is not None and r.vmac_asked is not None:
            self._emit(r, TearDownVmac(r.inst.vmac, r.inst.interface, delete=r.vmac_created))
            r.vmac_asked, r.vmac_created = None, False

    def _refresh(self, r: Router, now: float) -> None:
        """Bring the router in line with the facts: source address, FAULT reasons, effective priority."""
        primary = self._primary(r)
        if primary != r.primary:
            self._heard = {}  # our own address changed: what was a peer's advert may now be our own
            r.primary = primary
            src = primary or unspecified(r.inst.family)
            r.cache = AdvertCache(r.inst, src)
            r.fsm.reconfigure(params_for(r.inst, src, r.fsm.params.sync_gated))
        self._want_vmac(r)
        verdict = evaluate(r.inst, self._links_up, self._scripts_up, self._scripts, self._tracked)
        wanted = self._host_faults(r) | verdict.faults
        current = {f for f in r.fsm.faults if not isinstance(f, fsm.SyncHeld)}  # the facts decide all but the group's
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
