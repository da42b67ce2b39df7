"""The wire formats vrrpd builds without scapy, held to scapy as the oracle.

The VRRP codec: keepalived's own bytes, scapy's build and dissection, tshark's verdict on ours, every drop
reason, and fuzzing. The GARP / unsolicited NA frames of `vrrpd.announce`: scapy's build and tshark's decoding.
And the daemon itself never imports scapy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, IPOption_Router_Alert
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Raw

from vrrpd.core.frames import garp_frame, na_frame
from vrrpd.core.packet import (
    MCAST_V4,
    MCAST_V6,
    Advert,
    ChecksumForm,
    Drop,
    DropReason,
    decode,
    encode,
    internet_checksum,
    parse_ipv4,
    pseudo_sum,
)

V4 = IPv4Address
V6 = IPv6Address
SRC4 = V4("192.0.2.1")
SRC6 = V6("fe80::1")
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MUTATE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- golden bytes: adverts sent by keepalived 2.2.7 (Debian) ---------------------------------------------


@dataclass(frozen=True)
class Golden:
    name: str
    src: str
    dst: str
    message_hex: str  # the bytes after the IP header, as captured
    advert: Advert


# Captured with tests/golden/capture-keepalived.sh (keepalived in one namespace, tshark in the other).
GOLDEN = [
    Golden("v3-ipv4-multicast", "192.0.2.1", "224.0.0.18", "3133960200641107c0000264c0000265",
           Advert(3, 51, 150, 100, (V4("192.0.2.100"), V4("192.0.2.101")), ChecksumForm.PSEUDO)),
    Golden("v3-ipv4-unicast", "192.0.2.1", "192.0.2.2", "31367801007d0f62c0000268",
           Advert(3, 54, 120, 125, (V4("192.0.2.104"),), ChecksumForm.PSEUDO)),
    Golden("v3-ipv6", "fe80::34b2:83ff:fe3c:86ed", "ff02::12",
           "3134c802004b6d00" "20010db8000000000000000000000100" "20010db8000000000000000000000101",
           Advert(3, 52, 200, 75, (V6("2001:db8::100"), V6("2001:db8::101")), ChecksumForm.PSEUDO)),
    Golden("v2-ipv4", "192.0.2.1", "224.0.0.18", "213564010002b860c00002660000000000000000",
           Advert(2, 53, 100, 200, (V4("192.0.2.102"),), ChecksumForm.MESSAGE)),
]


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.name)
def test_keepalived_advert_decodes_to_the_exact_advert(golden: Golden):
    data = bytes.fromhex(golden.message_hex)
    result = decode(data, src=ip_address(golden.src), dst=ip_address(golden.dst), ttl=255)
    assert result == golden.advert


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.name)
def test_encode_reproduces_keepalived_bytes(golden: Golden):
    data = encode(golden.advert, src=ip_address(golden.src), dst=ip_address(golden.dst))
    assert data.hex() == golden.message_hex


def test_v2_encoding_ignores_the_checksum_form_field():
    # The runtime builds adverts with the default form; VRRPv2 always checksums the message only.
    v2 = GOLDEN[3]
    data = encode(replace(v2.advert, checksum_form=ChecksumForm.PSEUDO), src=SRC4, dst=MCAST_V4)
    assert data.hex() == v2.message_hex


# ---- reference checksum (RFC 1071 fold), independent of the codec's own arithmetic ------------------------


def rfc1071_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(src, dst, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + bytes([0, 112]) + length.to_bytes(2, "big")  # RFC 768 layout
    return src.packed + dst.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, 112])  # RFC 8200 8.1


def with_checksum(message: bytes, src=None, dst=None) -> bytes:
    """`message` with its checksum field filled: over a pseudo-header when src/dst are given, else the message."""
    zeroed = message[:6] + b"\0\0" + message[8:]
    prefix = pseudo_header(src, dst, len(message)) if src is not None else b""
    value = ~rfc1071_sum(prefix + zeroed) & 0xFFFF
    return zeroed[:6] + value.to_bytes(2, "big") + zeroed[8:]


def verifies(message: bytes, prefix: bytes = b"") -> bool:
    return rfc1071_sum(prefix + message) == 0xFFFF


def v3_message(vrid=51, priority=100, adver_cs=100, addresses=(V4("192.0.2.100"),), count=None, ver_type=0x31,
               src=SRC4, dst=MCAST_V4, message_only=False) -> bytes:
    body = b"".join(a.packed for a in addresses)
    count = len(addresses) if count is None else count
    header = bytes([ver_type, vrid, priority, count]) + adver_cs.to_bytes(2, "big") + b"\0\0"
    return with_checksum(header + body) if message_only else with_checksum(header + body, src, dst)


def v2_message(vrid=53, priority=100, adver_s=1, authtype=0, addresses=(V4("192.0.2.100"),), count=None,
               auth=bytes(8)) -> bytes:
    count = len(addresses) if count is None else count
    header = bytes([0x21, vrid, priority, count, authtype, adver_s, 0, 0])
    return with_checksum(header + b"".join(a.packed for a in addresses) + auth)


# ---- each drop reason, from a crafted packet --------------------------------------------------------------


def test_crafted_packets_are_sane():
    assert decode(v3_message(), src=SRC4, dst=MCAST_V4, ttl=255) == Advert(3, 51, 100, 100, (V4("192.0.2.100"),))
    assert isinstance(decode(v2_message(), src=SRC4, dst=MCAST_V4, ttl=255), Advert)


V6_VIP = (V6("2001:db8::100"),)
DROPS = [
    ("ttl-64", v3_message(), SRC4, 64, DropReason.TTL),
    ("ttl-254-v2", v2_message(), SRC4, 254, DropReason.TTL),
    ("empty", b"", SRC4, 255, DropReason.LENGTH),
    ("7-bytes", v3_message()[:7], SRC4, 255, DropReason.LENGTH),
    ("version-1", v3_message(ver_type=0x11), SRC4, 255, DropReason.VERSION),
    ("version-4", v3_message(ver_type=0x41), SRC4, 255, DropReason.VERSION),
    ("v2-over-ipv6", with_checksum(v2_message(addresses=()), SRC6, MCAST_V6), SRC6, 255, DropReason.VERSION),
    ("type-0", v3_message(ver_type=0x30), SRC4, 255, DropReason.TYPE),
    ("type-2", v3_message(ver_type=0x32), SRC4, 255, DropReason.TYPE),
    ("bad-checksum", v3_message()[:6] + b"\x12\x34" + v3_message()[8:], SRC4, 255, DropReason.CHECKSUM),
    ("v2-bad-checksum", v2_message()[:-1] + b"\x01", SRC4, 255, DropReason.CHECKSUM),
    ("ipv6-message-only-checksum", v3_message(addresses=V6_VIP, message_only=True), SRC6, 255, DropReason.CHECKSUM),
    ("v2-pseudo-checksum", with_checksum(v2_message(), SRC4, MCAST_V4), SRC4, 255, DropReason.CHECKSUM),
    ("count-0", v3_message(addresses=()), SRC4, 255, DropReason.ADDRESS_LIST),
    ("count-0-v2", v2_message(addresses=()), SRC4, 255, DropReason.ADDRESS_LIST),
    ("count-says-more", v3_message(count=2), SRC4, 255, DropReason.LENGTH),
    ("count-says-fewer", v3_message(addresses=(V4("192.0.2.100"), V4("192.0.2.101")), count=1), SRC4, 255,
     DropReason.LENGTH),
    ("ipv6-count-vs-ipv4-length", v3_message(addresses=(SRC4, SRC4, SRC4, SRC4), src=SRC6, dst=MCAST_V6),
     SRC6, 255, DropReason.LENGTH),
    ("v2-no-auth-data", v2_message(auth=b""), SRC4, 255, DropReason.LENGTH),
    ("adver-int-0", v3_message(adver_cs=0), SRC4, 255, DropReason.ADV_INTERVAL),
    ("adver-int-0-reserved-bits-set", v3_message(adver_cs=0xF000), SRC4, 255, DropReason.ADV_INTERVAL),
    ("v2-adver-int-0", v2_message(adver_s=0), SRC4, 255, DropReason.ADV_INTERVAL),
    ("v2-auth-type-3", v2_message(authtype=3), SRC4, 255, DropReason.AUTH_INVALID),
    ("v2-auth-type-255", v2_message(authtype=255), SRC4, 255, DropReason.AUTH_INVALID),
    ("vrid-0", v3_message(vrid=0), SRC4, 255, DropReason.VRID),
    ("v2-vrid-0", v2_message(vrid=0), SRC4, 255, DropReason.VRID),
]


@pytest.mark.parametrize(("data", "src", "ttl", "reason"), [d[1:] for d in DROPS], ids=[d[0] for d in DROPS])
def test_each_failed_check_is_a_typed_drop(data, src, ttl, reason):
    dst = MCAST_V4 if src.version == 4 else MCAST_V6
    result = decode(data, src=src, dst=dst, ttl=ttl)
    assert isinstance(result, Drop) and result.reason is reason, result
    assert result.detail


def test_checks_run_in_rfc_order():
    # A packet that fails everything reports the first check of RFC 5798 7.1: the TTL.
    garbage = bytes([0x12, 0, 0, 0, 9, 0, 0, 0])
    assert decode(garbage, src=SRC4, dst=MCAST_V4, ttl=1).reason is DropReason.TTL
    assert decode(garbage, src=SRC4, dst=MCAST_V4, ttl=255).reason is DropReason.VERSION
    assert decode(b"\x35" + garbage[1:], src=SRC4, dst=MCAST_V4, ttl=255).reason is DropReason.TYPE
    assert decode(b"\x31" + garbage[1:], src=SRC4, dst=MCAST_V4, ttl=255).reason is DropReason.CHECKSUM


def test_rfc9568_message_only_checksum_is_accepted_and_reported():
    data = v3_message(vrid=7, priority=90, message_only=True)
    result = decode(data, src=SRC4, dst=MCAST_V4, ttl=255)
    assert result == Advert(3, 7, 90, 100, (V4("192.0.2.100"),), ChecksumForm.MESSAGE)


def test_pseudo_header_checksum_binds_the_destination():
    # keepalived's unicast advert checksums 192.0.2.2 as destination: the same bytes to multicast are invalid.
    unicast = GOLDEN[1]
    result = decode(bytes.fromhex(unicast.message_hex), src=SRC4, dst=MCAST_V4, ttl=255)
    assert isinstance(result, Drop) and result.reason is DropReason.CHECKSUM


def test_reserved_bits_are_ignored_on_receipt():
    # RFC 5798 5.2.6: the 4 bits before Max Adver Int are sent as 0 and ignored on receipt.
    result = decode(v3_message(adver_cs=0xA000 | 300), src=SRC4, dst=MCAST_V4, ttl=255)
    assert isinstance(result, Advert) and result.adver_int_cs == 300


def test_all_zero_and_all_ones_checksums_are_equivalent():
    # RFC 1071: 0x0000 and 0xFFFF are both "zero" in one's complement; a receiver must accept either.
    # Choose the low word of the address so that the message sums to 0xFFFF with a checksum field of 0.
    header = bytes([0x31, 1, 100, 1, 0, 100, 0, 0])
    rest = rfc1071_sum(pseudo_header(SRC4, MCAST_V4, 12) + header + bytes([192, 0, 0, 0]))
    message = header + bytes([192, 0]) + (0xFFFF - rest).to_bytes(2, "big")
    assert message[6:8] == b"\0\0" and verifies(message, pseudo_header(SRC4, MCAST_V4, 12))
    flipped = message[:6] + b"\xff\xff" + message[8:]
    for data in (message, flipped):
        result = decode(data, src=SRC4, dst=MCAST_V4, ttl=255)
        assert isinstance(result, Advert) and result.checksum_form is ChecksumForm.PSEUDO


def test_decode_accepts_any_bytes_like():
    data = bytes.fromhex(GOLDEN[2].message_hex)
    src, dst = ip_address(GOLDEN[2].src), MCAST_V6
    expected = decode(data, src=src, dst=dst, ttl=255)
    assert decode(bytearray(data), src=src, dst=dst, ttl=255) == expected
    assert decode(memoryview(data), src=src, dst=dst, ttl=255) == expected


# ---- encode refuses what it cannot represent --------------------------------------------------------------

VIP4 = (V4("192.0.2.100"),)
BAD_ADVERTS = [
    ("v2-over-ipv6", Advert(2, 1, 100, 100, (V6("2001:db8::1"),)), SRC6, MCAST_V6),
    ("v2-fractional-seconds", Advert(2, 1, 100, 150, VIP4), SRC4, MCAST_V4),
    ("v2-256-seconds", Advert(2, 1, 100, 25600, VIP4), SRC4, MCAST_V4),
    ("v3-interval-4096", Advert(3, 1, 100, 4096, VIP4), SRC4, MCAST_V4),
    ("v3-interval-0", Advert(3, 1, 100, 0, VIP4), SRC4, MCAST_V4),
    ("version-4", Advert(4, 1, 100, 100, VIP4), SRC4, MCAST_V4),
    ("vrid-0", Advert(3, 0, 100, 100, VIP4), SRC4, MCAST_V4),
    ("vrid-256", Advert(3, 256, 100, 100, VIP4), SRC4, MCAST_V4),
    ("priority-256", Advert(3, 1, 256, 100, VIP4), SRC4, MCAST_V4),
    ("no-addresses", Advert(3, 1, 100, 100, ()), SRC4, MCAST_V4),
    ("256-addresses", Advert(3, 1, 100, 100, tuple(V4(0xC0000200 + i % 256) for i in range(256))), SRC4, MCAST_V4),
    ("mixed-addresses", Advert(3, 1, 100, 100, (V4("192.0.2.1"), V6("2001:db8::1"))), SRC4, MCAST_V4),
    ("ipv6-addresses-from-ipv4", Advert(3, 1, 100, 100, (V6("2001:db8::1"),)), SRC4, MCAST_V4),
    ("mixed-src-dst", Advert(3, 1, 100, 100, VIP4), SRC4, MCAST_V6),
    ("ipv6-message-only", Advert(3, 1, 100, 100, (V6("2001:db8::1"),), ChecksumForm.MESSAGE), SRC6, MCAST_V6),
]


@pytest.mark.parametrize(("advert", "src", "dst"), [b[1:] for b in BAD_ADVERTS], ids=[b[0] for b in BAD_ADVERTS])
def test_encode_refuses_an_unrepresentable_advert(advert, src, dst):
    with pytest.raises(ValueError):
        encode(advert, src=src, dst=dst)


def test_255_addresses_round_trip():
    advert = Advert(3, 9, 100, 100, tuple(V4(0xC0000200 + i) for i in range(255)))
    data = encode(advert, src=SRC4, dst=MCAST_V4)
    assert len(data) == 8 + 4 * 255
    assert decode(data, src=SRC4, dst=MCAST_V4, ttl=255) == advert


# ---- properties: round trips, scapy's build and dissection, fuzzing ---------------------------------------


@st.composite
def adverts_with_path(draw) -> tuple[Advert, IPv4Address | IPv6Address, IPv4Address | IPv6Address]:
    kind = draw(st.sampled_from(["v3-ipv4", "v3-ipv6", "v2-ipv4"]))
    family = 6 if kind == "v3-ipv6" else 4
    version = 2 if kind == "v2-ipv4" else 3
    if version == 2:
        interval_cs, form = draw(st.integers(1, 255)) * 100, ChecksumForm.MESSAGE
    else:
        interval_cs = draw(st.integers(1, 4095))
        form = ChecksumForm.PSEUDO if family == 6 else draw(st.sampled_from(ChecksumForm))
    advert = Advert(
        version=version,
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        adver_int_cs=interval_cs,
        addresses=tuple(draw(st.lists(st.ip_addresses(v=family), min_size=1, max_size=12))),
        checksum_form=form,
    )
    src = draw(st.ip_addresses(v=family))
    dst = draw(st.one_of(st.just(MCAST_V4 if family == 4 else MCAST_V6), st.ip_addresses(v=family)))
    return advert, src, dst


def ip_packet(message: bytes, src, dst):
    if src.version == 4:
        return IP(src=str(src), dst=str(dst), proto=112, ttl=255) / Raw(message)
    return IPv6(src=str(src), dst=str(dst), nh=112, hlim=255) / Raw(message)


@SLOW
@given(adverts_with_path())
def test_every_valid_advert_round_trips(case):
    advert, src, dst = case
    data = encode(advert, src=src, dst=dst)
    assert decode(data, src=src, dst=dst, ttl=255) == advert


@SLOW
@given(adverts_with_path())
def test_scapy_dissects_our_bytes_to_the_same_fields(case):
    advert, src, dst = case
    data = encode(advert, src=src, dst=dst)
    wire = ip_packet(data, src, dst)
    dissected = (IP if src.version == 4 else IPv6)(bytes(wire)).payload
    assert isinstance(dissected, VRRPv3 if advert.version == 3 else VRRP)
    assert (dissected.version, dissected.type, dissected.vrid, dissected.priority, dissected.ipcount) == (
        advert.version, 1, advert.vrid, advert.priority, len(advert.addresses))
    assert dissected.adv == (advert.adver_int_cs if advert.version == 3 else advert.adver_int_cs // 100)
    assert [ip_address(a) for a in dissected.addrlist] == list(advert.addresses)
    prefix = pseudo_header(src, dst, len(data)) if advert.checksum_form is ChecksumForm.PSEUDO else b""
    assert verifies(data, prefix)
    if advert.version == 2:
        assert (dissected.authtype, dissected.auth1, dissected.auth2) == (0, 0, 0)


@SLOW
@given(adverts_with_path())
def test_encode_equals_scapys_own_build(case):
    advert, src, dst = case
    addrlist = [str(a) for a in advert.addresses]
    if advert.version == 2:
        expected = bytes(VRRP(vrid=advert.vrid, priority=advert.priority, adv=advert.adver_int_cs // 100,
                              addrlist=addrlist))
    else:
        under = IP(src=str(src), dst=str(dst)) if src.version == 4 else IPv6(src=str(src), dst=str(dst))
        layer = VRRPv3(vrid=advert.vrid, priority=advert.priority, adv=advert.adver_int_cs, addrlist=addrlist)
        if advert.checksum_form is ChecksumForm.MESSAGE:
            layer.chksum = 0
            layer.chksum = ~rfc1071_sum(bytes(under / layer)[len(under):]) & 0xFFFF
        expected = bytes(under / layer)[len(under):]
    assert encode(advert, src=src, dst=dst) == expected


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([SRC4, SRC6]), st.sampled_from([255, 255, 255, 64, 0]))
def test_decode_never_raises_on_arbitrary_bytes(data, src, ttl):
    dst = MCAST_V4 if src.version == 4 else MCAST_V6
    assert_well_formed(decode(data, src=src, dst=dst, ttl=ttl), src)


@MUTATE
@given(adverts_with_path(), st.lists(st.tuples(st.integers(0, 1100), st.integers(0, 255)), max_size=4),
       st.integers(-12, 12), st.booleans())
def test_decode_never_raises_on_mutated_adverts(case, edits, resize, refill_checksum):
    advert, src, dst = case
    data = bytearray(encode(advert, src=src, dst=dst))
    for index, value in edits:
        if data:
            data[index % len(data)] = value
    data = data[:len(data) + resize] if resize < 0 else data + bytes(resize)
    if refill_checksum and len(data) >= 8:
        data = bytearray(with_checksum(bytes(data), src, dst))
    assert_well_formed(decode(bytes(data), src=src, dst=dst, ttl=255), src)


def assert_well_formed(result, src) -> None:
    assert isinstance(result, Advert | Drop)
    if isinstance(result, Drop):
        assert isinstance(result.reason, DropReason) and result.detail
        return
    assert result.version in (2, 3) and 1 <= result.vrid <= 255 and result.adver_int_cs > 0
    assert result.addresses and all(a.version == src.version for a in result.addresses)
    assert result.family == ("ipv4" if src.version == 4 else "ipv6")


@FUZZ
@given(st.sampled_from([SRC4, SRC6]), st.binary(min_size=0, max_size=40), st.integers(0, 0xFFFF),
       st.sampled_from(["pseudo", "message", "random"]))
def test_checksum_verdict_matches_rfc1071(src, body, random_checksum, fill):
    dst = MCAST_V4 if src.version == 4 else MCAST_V6
    data = bytes([0x31, 1, 100, 1, 0, 100]) + random_checksum.to_bytes(2, "big") + body
    if fill == "pseudo":
        data = with_checksum(data, src, dst)
    elif fill == "message":
        data = with_checksum(data)
    result = decode(data, src=src, dst=dst, ttl=255)
    pseudo_ok = verifies(data, pseudo_header(src, dst, len(data)))
    message_ok = src.version == 4 and verifies(data)
    assert (isinstance(result, Drop) and result.reason is DropReason.CHECKSUM) == (not pseudo_ok and not message_ok)
    if isinstance(result, Advert):
        assert result.checksum_form is (ChecksumForm.PSEUDO if pseudo_ok else ChecksumForm.MESSAGE)


@FUZZ
@given(st.binary(min_size=1, max_size=64), st.sampled_from([None, 58, 112]), st.sampled_from([SRC4, SRC6]))
def test_internet_checksum_fills_a_field_that_verifies(data, protocol, src):
    # The field `encode` and the announce frames write must make the RFC 1071 sum come out as 0xFFFF.
    dst = MCAST_V4 if src.version == 4 else MCAST_V6
    data = bytes([data[0] | 0x10]) + data[1:]  # never all-zero words: a VRRP/ICMPv6 header never is
    data = data + bytes(2 + len(data) % 2)  # room for the checksum field at an even offset
    at = len(data) - 2
    prefix = b"" if protocol is None else (
        src.packed + dst.packed + bytes([0, protocol]) + len(data).to_bytes(2, "big") if src.version == 4
        else src.packed + dst.packed + len(data).to_bytes(4, "big") + bytes([0, 0, 0, protocol]))
    pseudo = 0 if protocol is None else pseudo_sum(src, dst, len(data), protocol)
    filled = data[:at] + internet_checksum(data, pseudo).to_bytes(2, "big")
    assert verifies(filled, prefix)


# ---- the IPv4 header that raw IPv4 sockets hand over ------------------------------------------------------


def test_parse_ipv4_returns_addresses_ttl_and_the_vrrp_message():
    message = bytes.fromhex(GOLDEN[0].message_hex)
    packet = bytes(IP(src="192.0.2.1", dst="224.0.0.18", proto=112, ttl=255) / Raw(message))
    assert parse_ipv4(packet) == (SRC4, MCAST_V4, 255, message)
    src, dst, ttl, payload = parse_ipv4(packet)
    assert decode(payload, src=src, dst=dst, ttl=ttl) == GOLDEN[0].advert


def test_parse_ipv4_honours_options_and_total_length():
    message = v2_message()
    wire = bytes(IP(src="192.0.2.9", dst="224.0.0.18", proto=112, ttl=7, options=[IPOption_Router_Alert()])
                 / Raw(message))
    assert wire[0] & 0x0F == 6
    assert parse_ipv4(wire + bytes(6)) == (V4("192.0.2.9"), MCAST_V4, 7, message)  # trailing padding cut off


def _ipv4(**fields) -> bytes:
    header = {"src": "192.0.2.1", "dst": "224.0.0.18", "proto": 112, "ttl": 255} | fields
    return bytes(IP(**header) / Raw(v3_message()))


IPV4_DROPS = [
    ("empty", b"", DropReason.LENGTH),
    ("19-bytes", _ipv4()[:19], DropReason.LENGTH),
    ("ip-version-6", bytes([0x65]) + _ipv4()[1:], DropReason.LENGTH),
    ("ihl-4", bytes([0x44]) + _ipv4()[1:], DropReason.LENGTH),
    ("ihl-past-the-end", bytes([0x4F]) + _ipv4()[1:], DropReason.LENGTH),
    ("total-length-past-the-end", _ipv4(len=100), DropReason.LENGTH),
    ("total-length-inside-header", _ipv4(len=12), DropReason.LENGTH),
    ("udp", _ipv4(proto=17), DropReason.TYPE),
]


@pytest.mark.parametrize(("packet", "reason"), [d[1:] for d in IPV4_DROPS], ids=[d[0] for d in IPV4_DROPS])
def test_parse_ipv4_drops_a_malformed_header(packet, reason):
    result = parse_ipv4(packet)
    assert isinstance(result, Drop) and result.reason is reason


@FUZZ
@given(st.binary(max_size=80))
def test_parse_ipv4_never_raises(data):
    result = parse_ipv4(data)
    assert isinstance(result, Drop) or (len(result) == 4 and isinstance(result[3], bytes))


# ---- gratuitous ARP and unsolicited NA frames (vrrpd.announce), held to scapy and tshark -------------------

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@SLOW
@given(st.ip_addresses(v=4), macs)
def test_garp_frame_equals_scapys_build(vip, mac):
    expected = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(
        op="who-has", hwsrc=mac, psrc=str(vip), hwdst="00:00:00:00:00:00", pdst=str(vip))
    assert garp_frame(vip, mac) == bytes(expected)


@SLOW
@given(st.ip_addresses(v=6), macs, st.ip_addresses(v=6), st.booleans())
def test_na_frame_equals_scapys_build_with_its_icmpv6_checksum(vip, mac, link_local, router):
    expected = (Ether(dst="33:33:00:00:00:01", src=mac)
                / IPv6(src=str(link_local), dst="ff02::1", hlim=255)
                / ICMPv6ND_NA(tgt=str(vip), R=int(router), S=0, O=1)
                / ICMPv6NDOptDstLLAddr(lladdr=mac))
    assert na_frame(vip, mac, link_local, router) == bytes(expected)
