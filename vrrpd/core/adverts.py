"""An instance's adverts as bytes: built once per (priority, destination), re-sent until something in them changes."""

from __future__ import annotations

from daemonkit.net import Address
from vrrpd.config import Instance
from vrrpd.core import packet
from vrrpd.core.fsm import RouterParams
from vrrpd.core.packet import Advert


def params_for(instance: Instance, primary: Address, sync_gated: bool = False) -> RouterParams:
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
        garp_master_delay_cs=round(instance.garp_master_delay * 100),
        garp_refresh_repeat=instance.garp_master_refresh_repeat,
        garp_lower_prio_repeat=instance.garp_lower_prio_repeat,
        sync_gated=sync_gated,
    )


class AdvertCache:
    """The (destination, bytes) pairs one send at a priority makes, from `src` (the checksum covers it)."""

    def __init__(self, instance: Instance, src: Address):
        self.instance = instance
        self.src = src
        self._adverts: dict[int, tuple[tuple[Address, bytes], ...]] = {}

    def destinations(self) -> tuple[Address, ...]:
        if self.instance.unicast_peers:
            return self.instance.unicast_peers
        return (packet.MCAST_V4,) if self.instance.family == "ipv4" else (packet.MCAST_V6,)

    def adverts(self, priority: int) -> tuple[tuple[Address, bytes], ...]:
        found = self._adverts.get(priority)
        if found is None:
            advert = Advert(
                version=self.instance.version,
                vrid=self.instance.vrid,
                priority=priority,
                adver_int_cs=self.instance.advert_interval_cs,
                addresses=tuple(vip.ip for vip in self.instance.virtual_ipaddress),
                **_auth_fields(self.instance),
            )
            found = self._adverts[priority] = tuple(
                (dst, packet.encode(advert, src=self.src, dst=dst)) for dst in self.destinations())
        return found


def _auth_fields(instance: Instance) -> dict:
    """RFC 2338 5.3.6 / 5.3.10: the type in the header; the password in the data for PASS, zeros otherwise
    (AH carries its digest in the AH header)."""
    if instance.version != 2:
        return {}
    code = packet.AUTH_CODES[instance.auth_type]
    return {"auth_type": code, "auth_data": instance.auth_key if code == packet.AUTH_PASS else bytes(8)}
