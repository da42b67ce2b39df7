"""One configured instance at run time: its state machine, counters, cached adverts and receive checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv6Address

from vrrpd.core import packet
from vrrpd.config import Instance
from vrrpd.core.fsm import RouterParams, State, VirtualRouter
from vrrpd.core.packet import Advert, DropReason

Address = IPv4Address | IPv6Address


@dataclass(slots=True)
class Stats:
    """Per-instance counters, named after the RFC 6527 VRRPv3 MIB (SPEC section 5)."""

    master_transitions: int = 0
    adverts_rx: int = 0
    adverts_tx: int = 0
    priority_zero_rx: int = 0
    priority_zero_tx: int = 0
    ttl_errors: int = 0
    version_errors: int = 0
    checksum_errors: int = 0
    checksum_rfc9568_rx: int = 0
    invalid_type: int = 0
    packet_length_errors: int = 0
    address_list_errors: int = 0
    vrid_errors: int = 0
    adv_interval_errors: int = 0
    auth_errors: int = 0
    peer_errors: int = 0

    def count_drop(self, reason: DropReason) -> None:
        name = reason.value
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


STAT_NAMES = tuple(f.name for f in fields(Stats))


def check_advert(advert: Advert, src: Address, instance: Instance) -> DropReason | None:
    """RFC 5798 7.1 checks that need the instance: version, unicast peer, interval (v2), address list."""
    if advert.version != instance.version:
        return DropReason.VERSION
    if instance.unicast_peers and src not in instance.unicast_peers:
        return DropReason.PEER
    if instance.version == 2 and advert.adver_int_cs != instance.advert_interval_cs:
        return DropReason.ADV_INTERVAL  # RFC 3768 7.1: v2 routers must agree on the interval
    if advert.priority != 255 and set(advert.addresses) != {vip.ip for vip in instance.virtual_ipaddress}:
        return DropReason.ADDRESS_LIST  # RFC 5798 7.1: drop unless sent by the address owner
    return None


def params_for(instance: Instance, primary: Address) -> RouterParams:
    return RouterParams(
        vrid=instance.vrid,
        priority=instance.priority,
        advert_interval_cs=instance.advert_interval_cs,
        primary_address=primary,
        version=instance.version,
        preempt=instance.preempt,
        preempt_delay_cs=instance.preempt_delay_cs,
        garp_repeat=instance.garp_repeat,
        garp_refresh_cs=round(instance.garp_refresh * 100),
    )


class AdvertCache:
    """Adverts are built once per (priority, destination) and re-sent as bytes until something in them changes."""

    def __init__(self, instance: Instance, src: Address):
        self.instance = instance
        self.src = src
        self._bytes: dict[tuple[int, Address], bytes] = {}
        self._adverts: dict[int, tuple[tuple[Address, bytes], ...]] = {}

    def destinations(self) -> tuple[Address, ...]:
        if self.instance.unicast_peers:
            return self.instance.unicast_peers
        return (packet.MCAST_V4,) if self.instance.family == "ipv4" else (packet.MCAST_V6,)

    def get(self, priority: int, dst: Address) -> bytes:
        key = (priority, dst)
        data = self._bytes.get(key)
        if data is None:
            advert = Advert(
                version=self.instance.version,
                vrid=self.instance.vrid,
                priority=priority,
                adver_int_cs=self.instance.advert_interval_cs,
                addresses=tuple(vip.ip for vip in self.instance.virtual_ipaddress),
            )
            data = self._bytes[key] = packet.encode(advert, src=self.src, dst=dst)
        return data

    def adverts(self, priority: int) -> tuple[tuple[Address, bytes], ...]:
        """(destination, bytes) of every advert one send at `priority` makes; looked up once per interval."""
        adverts = self._adverts.get(priority)
        if adverts is None:
            adverts = self._adverts[priority] = tuple((dst, self.get(priority, dst)) for dst in self.destinations())
        return adverts


def utc_now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Router:
    """Ties the pure state machine to one instance's configuration and bookkeeping (no I/O here)."""

    def __init__(self, instance: Instance, primary: Address):
        self.instance = instance
        self.primary = primary
        self.fsm = VirtualRouter(params_for(instance, primary))
        self.stats = Stats()
        self.cache = AdvertCache(instance, primary)
        self.socket_key = (instance.interface, instance.family)  # the runtime's AdvertSocket for this router
        self.since = utc_now_iso()
        self.addresses_installed = False

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def state(self) -> State:
        return self.fsm.state

    def reconfigure(self, instance: Instance, primary: Address) -> None:
        """Hot reload with the same (interface, vrid, family): keep the state, refresh settings and cache."""
        self.instance = instance
        self.primary = primary
        self.fsm.with_params(params_for(instance, primary))
        self.cache = AdvertCache(instance, primary)
        self.socket_key = (instance.interface, instance.family)

    def status(self) -> dict:
        inst = self.instance
        master = self.fsm.master_address
        if self.state is State.MASTER:
            master = self.primary
        return {
            "name": inst.name,
            "interface": inst.interface,
            "vrid": inst.vrid,
            "family": inst.family,
            "version": inst.version,
            "state": self.state.value,
            "priority": inst.priority,
            "effective_priority": self.fsm.effective_priority,
            "master_address": str(master) if master is not None else None,
            "advert_interval": inst.advert_interval,
            "master_adver_interval": self.fsm.master_adver_interval_cs / 100,
            "virtual_ipaddress": [str(v) for v in inst.virtual_ipaddress],
            "since": self.since,
            "stats": self.stats.as_dict(),
        }
