"""The RFC 5798 7.1 receive checks that need the instance (the codec has already checked the packet itself)."""

from __future__ import annotations

from daemonkit.net import Address
from vrrpd.config import Instance
from vrrpd.core import packet
from vrrpd.core.packet import Advert, DropReason

def check_advert(advert: Advert, src: Address, instance: Instance, vips: frozenset[Address],
                 with_ah: bool = False) -> DropReason | None:
    """Why `instance` must drop `advert` from `src`, or None to accept it; `vips` is the instance's address set.

    A VRRPv3 advert whose address list differs from ours is accepted (RFC 5798 7.1: MAY verify, SHOULD log;
    keepalived and FRR accept it), so that a rolling change of the VIP lists, one node after the other, never
    splits the pair; `addresses_differ` tells the caller to count and log it. VRRPv2 keeps RFC 3768 7.1's
    drop (unless the sender is the address owner).

    VRRPv2 authentication as keepalived checks it (RFC 2338 7.1): an AH header where we expect none or none
    where we expect AH, or another type in the header, is a mismatch; a wrong PASS password a failure (the AH
    digest is checked by the caller, who has the IP header). `with_ah`: the message came inside AH."""
    if advert.version != instance.version:
        return DropReason.VERSION
    if advert.version == 2:
        wanted = packet.AUTH_CODES[instance.auth_type]
        if with_ah != (wanted == packet.AUTH_AH) or advert.auth_type != wanted:
            return DropReason.AUTH_MISMATCH
        if wanted == packet.AUTH_PASS and not packet.digest_matches(advert.auth_data, instance.auth_key):
            return DropReason.AUTH_FAILURE
    if instance.unicast_peers and src not in instance.unicast_peers:
        return DropReason.PEER
    if instance.version == 2 and advert.adver_int_cs != instance.advert_interval_cs:
        return DropReason.ADV_INTERVAL  # RFC 3768 7.1: v2 routers must agree on the interval
    if instance.version == 2 and advert.priority != 255 and addresses_differ(advert, vips):
        return DropReason.ADDRESS_LIST
    return None


def addresses_differ(advert: Advert, vips: frozenset[Address]) -> bool:
    return frozenset(advert.addresses) != vips
