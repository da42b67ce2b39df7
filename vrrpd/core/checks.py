"""The RFC 5798 7.1 receive checks that need the instance (the codec has already checked the packet itself)."""

from __future__ import annotations

from daemonkit.net import Address
from vrrpd.config import Instance
from vrrpd.core.packet import Advert, DropReason


def check_advert(advert: Advert, src: Address, instance: Instance, vips: frozenset[Address]) -> DropReason | None:
    """Why `instance` must drop `advert` from `src`, or None to accept it; `vips` is the instance's address set."""
    if advert.version != instance.version:
        return DropReason.VERSION
    if instance.unicast_peers and src not in instance.unicast_peers:
        return DropReason.PEER
    if instance.version == 2 and advert.adver_int_cs != instance.advert_interval_cs:
        return DropReason.ADV_INTERVAL  # RFC 3768 7.1: v2 routers must agree on the interval
    if advert.priority != 255 and frozenset(advert.addresses) != vips:
        return DropReason.ADDRESS_LIST  # RFC 5798 7.1: drop unless sent by the address owner
    return None
