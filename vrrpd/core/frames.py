"""Gratuitous ARP (IPv4) and unsolicited neighbour advertisement (IPv6) frames that point the LAN at a new master.

RFC 5798 6.4.2 / 6.4.1: on becoming master, broadcast a gratuitous ARP request for each IPv4 VIP and send
an unsolicited Neighbor Advertisement with the Override flag for each IPv6 VIP, so switches and hosts
forget the old master's MAC at once. Frames are packed with `struct` (the daemon never loads scapy; the
tests hold these bytes to scapy's Ether/ARP and Ether/IPv6/ICMPv6ND_NA build); sending them is
`vrrpd.io.announce`'s job.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from vrrpd.core.packet import internet_checksum, pseudo_sum

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = "33:33:00:00:00:01"
ND_HOP_LIMIT = 255  # RFC 4861 7.1.2: receivers drop NAs with any other hop limit
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
ARP_REQUEST = 1  # RFC 826 ar$op
ARPHRD_ETHER = 1
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136  # RFC 4861 4.4
ND_OPT_TARGET_LLADDR = 2  # RFC 4861 4.6.1
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000  # RFC 4861 4.4; S stays clear here

_ETHER = struct.Struct("!6s6sH")  # destination, source, EtherType
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa (RFC 826)
_IPV6 = struct.Struct("!IHBB16s16s")  # version/class/flow, payload length, next header, hop limit, src, dst
_NA = struct.Struct("!BBHI16sBB6s")  # type, code, checksum, R/S/O flags, target, option type, length (x8 bytes), MAC


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def garp_frame(vip: IPv4Address, mac: str) -> bytes:
    """ARP request with sender = target = VIP, broadcast (RFC 5227 3 "ARP Announcement")."""
    hw = _mac_bytes(mac)
    arp = _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, ARP_REQUEST, hw, vip.packed, bytes(6), vip.packed)
    return _ETHER.pack(_mac_bytes(BROADCAST_MAC), hw, ETH_P_ARP) + arp


def na_frame(vip: IPv6Address, mac: str, link_local: IPv6Address, router: bool = False) -> bytes:
    """Unsolicited NA to all nodes (RFC 4861 7.2.6): Override set, Solicited clear, target link-layer option.

    RFC 5798 6.4.2 sets the Router flag because a virtual router routes; a node that does not forward
    (a VIP for a service) leaves it clear so neighbours do not take it for a router, as keepalived does.
    """
    hw = _mac_bytes(mac)
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    unsummed = _NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags, vip.packed, ND_OPT_TARGET_LLADDR, 1, hw)
    # RFC 4443 2.3: the ICMPv6 checksum covers the IPv6 pseudo-header (RFC 8200 8.1).
    checksum = internet_checksum(unsummed, pseudo_sum(link_local, ALL_NODES, len(unsummed), IPPROTO_ICMPV6))
    icmp = unsummed[:2] + checksum.to_bytes(2, "big") + unsummed[4:]
    ipv6 = _IPV6.pack(6 << 28, len(icmp), IPPROTO_ICMPV6, ND_HOP_LIMIT, link_local.packed, ALL_NODES.packed)
    return _ETHER.pack(_mac_bytes(ALL_NODES_MAC), hw, ETH_P_IPV6) + ipv6 + icmp


def eui64_link_local(mac: str) -> IPv6Address:
    """fe80::/64 address the kernel derives from `mac` (RFC 4291 appendix A), used when none is assigned."""
    octets = bytearray(int(x, 16) for x in mac.split(":"))
    octets[0] ^= 0x02
    interface_id = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return IPv6Address(b"\xfe\x80" + bytes(6) + interface_id)
