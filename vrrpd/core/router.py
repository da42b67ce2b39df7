"""One virtual router's bookkeeping inside the Node: its instance, state machine, counters and what it installed."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from daemonkit.net import Address, Interface
from vrrpd.config import Instance
from vrrpd.core import fsm
from vrrpd.core.adverts import AdvertCache, params_for
from vrrpd.core.stats import Stats


class Router:
    __slots__ = ("id", "inst", "vips", "fsm", "stats", "cache", "primary", "installed", "since", "frames",
                 "group", "scheduled", "started", "ah_sequence", "ip_id", "routed", "vmac_asked", "vmac_created",
                 "vmac_ll")

    def __init__(self, router_id: int, inst: Instance, now: float):
        self.id = router_id
        self.inst = inst
        self.vips = frozenset(v.ip for v in inst.virtual_ipaddress)
        self.fsm = fsm.VirtualRouter(params_for(inst, unspecified(inst.family)))
        self.stats = Stats()
        self.cache = AdvertCache(inst, unspecified(inst.family))
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


def unspecified(family: str) -> Address:
    return IPv4Address(0) if family == "ipv4" else IPv6Address(0)
