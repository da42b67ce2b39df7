"""Single values of vrrpd's configuration, checked the same wherever they appear: interface names, VIPs, peers."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address

from daemonkit.net import Address, Interface, ip_address_or_none
from daemonkit.tomlcheck import Table, quote


def is_interface_name(name: str) -> bool:
    """Linux's rule (dev_valid_name): 1..15 bytes, no '/', ':' or whitespace, not '.' or '..'.

    An "eth0:1" is an address label, not an interface."""
    return (
        0 < len(name.encode()) <= 15 and name not in (".", "..")
        and not any(ch in "/:" or ch.isspace() or not ch.isprintable() for ch in name)
    )  # fmt: skip


def parse_vip(text: str) -> Interface | str:
    """A VIP as ADDRESS[/PREFIX] (no prefix: /32 or /128, as keepalived); a str explains a bad one."""
    if "%" in text:
        return f"{quote(text)}: a zone index (%...) is not allowed; the instance's interface is used"
    try:
        vip = ipaddress.ip_interface(text.strip())
    except ValueError:
        return f"{quote(text)} is not an IP address with an optional /prefix"
    bad = vip.ip.is_multicast or vip.ip.is_unspecified or vip.ip.is_loopback
    if bad or vip.ip == IPv4Address("255.255.255.255"):
        return f"{vip.ip} cannot be a virtual address (multicast, unspecified, loopback or broadcast)"
    return vip


def peer_address(t: Table, key: str, text: str, want: int | None, sub: tuple) -> Address | None:
    address = ip_address_or_none(text.strip())
    if address is None:
        t.problem(key, f"{quote(text)} is not an IP address", sub)
    elif address.is_multicast or address.is_unspecified:
        t.problem(key, f"{address} must be a unicast address", sub)
    elif want is not None and address.version != want:
        t.problem(key, f"{address} is IPv{address.version} but the virtual addresses are IPv{want}", sub)
    else:
        return address
    return None
