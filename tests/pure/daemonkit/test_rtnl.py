"""The rtnetlink codec on bytes: messages split, links and addresses parsed, an address request round-trips."""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_interface

from daemonkit import rtnl


def message(kind: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body + bytes(-len(body) % 4)


def link_body(index: int, flags: int, name: bytes, mac: bytes | None = None) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + rtnl.attribute(rtnl.IFLA_IFNAME, name + b"\0")
    return body + (rtnl.attribute(rtnl.IFLA_ADDRESS, mac) if mac else b"")


def test_links_up_down_and_their_mac():
    up, no_carrier = rtnl.IFF_UP | rtnl.IFF_RUNNING, rtnl.IFF_UP
    data = (message(rtnl.RTM_NEWLINK, link_body(2, up, b"eth0", bytes.fromhex("020000000001")))
            + message(rtnl.RTM_NEWLINK, link_body(2, no_carrier, b"eth0"))
            + message(rtnl.RTM_DELLINK, link_body(3, up, b"eth1")))
    parsed = [(kind, rtnl.parse_link(body)) for kind, _, _, body in rtnl.messages(data)]
    assert parsed == [(rtnl.RTM_NEWLINK, rtnl.Link(2, "eth0", up, "02:00:00:00:00:01")),
                      (rtnl.RTM_NEWLINK, rtnl.Link(2, "eth0", no_carrier, None)),
                      (rtnl.RTM_DELLINK, rtnl.Link(3, "eth1", up, None))]
    assert [link.up for _, link in parsed] == [True, False, True]


def test_address_requests_parse_back_to_what_was_asked():
    for text, flags in (("192.0.2.100/24", 0), ("2001:db8::100/64", rtnl.IFA_F_NODAD)):
        address = ip_interface(text)
        parsed = rtnl.parse_addr(rtnl.addr_body(7, address, flags))
        assert parsed == rtnl.Addr(7, address, flags)


def test_ipv4_local_wins_over_the_peer_address_and_the_32_bit_flags_win():
    body = struct.pack("=BBBBi", socket.AF_INET, 32, 0, 0, 5)
    body += rtnl.attribute(rtnl.IFA_ADDRESS, bytes([198, 51, 100, 9]))  # the peer of a point-to-point link
    body += rtnl.attribute(rtnl.IFA_LOCAL, bytes([192, 0, 2, 1]))
    body += rtnl.attribute(rtnl.IFA_FLAGS, struct.pack("=I", 0x300))
    assert rtnl.parse_addr(body) == rtnl.Addr(5, ip_interface("192.0.2.1/32"), 0x300)


def test_garbage_and_truncation_never_raise():
    assert rtnl.messages(b"\x00" * 7) == []
    assert rtnl.messages(struct.pack("=IHHII", 4, 16, 0, 0, 0)) == []  # a length shorter than the header
    assert rtnl.messages(struct.pack("=IHHII", 400, 16, 0, 0, 0)) == []  # longer than the datagram
    assert rtnl.parse_link(b"\x01\x02") is None and rtnl.parse_addr(b"") is None
    assert rtnl.parse_addr(struct.pack("=BBBBi", socket.AF_INET, 24, 0, 0, 1)) is None  # no address at all
