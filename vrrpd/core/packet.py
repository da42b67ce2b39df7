"""VRRP advertisement codec (RFC 5798 VRRPv3, RFC 3768 VRRPv2): bytes in, an Advert or a typed Drop out; no I/O.

`encode` packs the VRRP message (no IP header) and `decode` validates a received one in the order of RFC 5798
section 7.1, never raising for any bytes: peer garbage becomes a `Drop` whose reason is the status-JSON
counter it increments (SPEC section 5, RFC 6527). Both are plain `struct` code sharing one header layout and
one checksum arithmetic, so the daemon never loads scapy (about 25 MB of RSS); the tests hold both to
scapy's VRRP / VRRPv3 build and dissection and to keepalived's captured bytes.

Checksums (RFC 5798 5.2.8): VRRPv3 covers an IPv4/IPv6 pseudo-header, as keepalived and FRR send it for
IPv4 too; RFC 9568 5.2.8 leaves IPv4 out of the pseudo-header, so for IPv4 VRRPv3 both forms are accepted
and the decoded Advert says which one matched. VRRPv2 (RFC 3768 5.3.8) covers the message only.
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

Address = IPv4Address | IPv6Address

VRRP_PROTO = 112
MCAST_V4 = IPv4Address("224.0.0.18")
MCAST_V6 = IPv6Address("ff02::12")

REQUIRED_TTL = 255  # RFC 5798 7.1: TTL / hop limit must be 255 (the sender is on-link)
ADVERTISEMENT = 1  # the only VRRP packet type (RFC 5798 5.2.2)
HEADER_LEN = 8  # version/type .. checksum
V2_AUTH_LEN = 8  # RFC 3768 5.3.10: authentication data, zero for auth type 0
MAX_ADVER_INT_CS = 0x0FFF  # RFC 5798 5.2.7: 12 bits of centiseconds
MAX_V2_ADVER_INT_S = 255  # RFC 3768 5.3.7: one byte of seconds
MAX_ADDRESSES = 255  # "Count IPvX Addr" is one byte
_ADDRLEN = {4: 4, 6: 16}

# ver/type, vrid, priority, count, (v2: auth type | v3: rsvd + high adver bits), (adver low byte), checksum
_HEADER = struct.Struct("!BBBBBBH")


class ChecksumForm(str, enum.Enum):
    """Which bytes the checksum covers."""

    PSEUDO = "pseudo"  # RFC 5798 5.2.8: IPv4/IPv6 pseudo-header + message (VRRPv3)
    MESSAGE = "message"  # message only: RFC 9568 for IPv4 VRRPv3, and always for VRRPv2


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRP advertisement, as sent or as received and validated.

    `adver_int_cs` is centiseconds in both versions (VRRPv2's whole seconds times 100). For VRRPv2 and for
    IPv6 the checksum form is implied by the protocol; `encode` ignores it for VRRPv2.
    """

    version: int
    vrid: int
    priority: int
    adver_int_cs: int
    addresses: tuple[Address, ...]
    checksum_form: ChecksumForm = ChecksumForm.PSEUDO

    @property
    def family(self) -> str:
        """"ipv4" or "ipv6", from the address list (ValueError when it is empty)."""
        if not self.addresses:
            raise ValueError("an advert without addresses has no family")
        return "ipv4" if self.addresses[0].version == 4 else "ipv6"


class DropReason(str, enum.Enum):
    """Why a received packet was dropped; the value is the counter name (SPEC section 5, RFC 6527)."""

    TTL = "ttl_errors"
    VERSION = "version_errors"
    CHECKSUM = "checksum_errors"
    TYPE = "invalid_type"
    LENGTH = "packet_length_errors"
    ADDRESS_LIST = "address_list_errors"
    VRID = "vrid_errors"
    ADV_INTERVAL = "adv_interval_errors"
    AUTH = "auth_errors"
    PEER = "peer_errors"


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason
    detail: str


# ---- encode -------------------------------------------------------------------------------------------


def encode(advert: Advert, *, src: Address, dst: Address) -> bytes:
    """The VRRP message for `advert` sent from `src` to `dst` (no IP header); ValueError if not encodable.

    The mirror of `decode`: the same header layout, and a checksum that `decode` verifies (RFC 5798 5.2.8).
    """
    _check_encodable(advert, src, dst)
    version, count = advert.version, len(advert.addresses)
    if version == 2:
        # RFC 3768 5.3: auth type 0, the interval in whole seconds, then 8 zero bytes of auth data.
        header = (version << 4 | ADVERTISEMENT, advert.vrid, advert.priority, count, 0, advert.adver_int_cs // 100)
        trailer = bytes(V2_AUTH_LEN)
    else:
        # RFC 5798 5.2.6 / 5.2.7: 4 reserved bits (0), then 12 bits of Max Adver Int in centiseconds.
        adver = advert.adver_int_cs
        header = (version << 4 | ADVERTISEMENT, advert.vrid, advert.priority, count, adver >> 8, adver & 0xFF)
        trailer = b""
    unsummed = _HEADER.pack(*header, 0) + b"".join(a.packed for a in advert.addresses) + trailer
    pseudo = version == 3 and advert.checksum_form is ChecksumForm.PSEUDO
    value = internet_checksum(unsummed, pseudo_sum(src, dst, len(unsummed)) if pseudo else 0)
    return unsummed[:6] + value.to_bytes(2, "big") + unsummed[8:]


def _check_encodable(advert: Advert, src: Address, dst: Address) -> None:
    version = advert.version
    if version not in (2, 3):
        raise ValueError(f"VRRP version {version} is neither 2 nor 3")
    if not 1 <= advert.vrid <= 255:
        raise ValueError(f"vrid {advert.vrid} is outside 1..255")
    if not 0 <= advert.priority <= 255:
        raise ValueError(f"priority {advert.priority} is outside 0..255")
    if not 1 <= len(advert.addresses) <= MAX_ADDRESSES:
        raise ValueError(f"{len(advert.addresses)} addresses: an advert carries 1..{MAX_ADDRESSES}")
    family = type(src)
    if family not in (IPv4Address, IPv6Address) or type(dst) is not family:
        raise ValueError(f"src {src!r} and dst {dst!r} must be addresses of one family")
    if any(type(a) is not family for a in advert.addresses):
        raise ValueError("mixed families: every address must be of the family of src")
    if version == 2:
        _check_v2(advert, src)
    else:
        _check_v3(advert, src)


def _check_v2(advert: Advert, src: Address) -> None:
    if src.version != 4:
        raise ValueError("VRRPv2 is IPv4 only (RFC 3768)")
    seconds, rest_cs = divmod(advert.adver_int_cs, 100)
    if rest_cs or not 1 <= seconds <= MAX_V2_ADVER_INT_S:
        raise ValueError(f"VRRPv2 interval {advert.adver_int_cs} cs is not 1..255 whole seconds")


def _check_v3(advert: Advert, src: Address) -> None:
    if not 1 <= advert.adver_int_cs <= MAX_ADVER_INT_CS:
        raise ValueError(f"VRRPv3 interval {advert.adver_int_cs} cs is outside 1..{MAX_ADVER_INT_CS}")
    if src.version == 6 and advert.checksum_form is not ChecksumForm.PSEUDO:
        raise ValueError("an IPv6 VRRPv3 checksum always covers the pseudo-header")


# ---- decode -------------------------------------------------------------------------------------------


def decode(data: bytes, *, src: Address, dst: Address, ttl: int) -> Advert | Drop:
    """Validate a received VRRP message (RFC 5798 7.1, RFC 3768 7.1); the family is that of `src`.

    A count of addresses that disagrees with the message length is LENGTH (the packet is not complete);
    a count of zero is ADDRESS_LIST (complete, but carries no address list).
    """
    if ttl != REQUIRED_TTL:
        return Drop(DropReason.TTL, f"ttl/hop limit {ttl}, want {REQUIRED_TTL}")
    size = len(data)
    if size < HEADER_LEN:
        return Drop(DropReason.LENGTH, f"{size} bytes, shorter than the {HEADER_LEN}-byte header")
    ver_type, vrid, priority, count, byte4, byte5, _ = _HEADER.unpack_from(data)
    version = ver_type >> 4
    family = src.version
    if version != 3 and (version != 2 or family != 4):
        return Drop(DropReason.VERSION, f"version {version} over IPv{family}")
    if ver_type & 0x0F != ADVERTISEMENT:
        return Drop(DropReason.TYPE, f"type {ver_type & 0x0F}")
    form = _checksum_form(data, version, src, dst)
    if form is None:
        return Drop(DropReason.CHECKSUM, f"checksum {data[6:8].hex()} matches no form")
    if count == 0:
        return Drop(DropReason.ADDRESS_LIST, "address count 0")
    addrlen = _ADDRLEN[family]
    expected = HEADER_LEN + count * addrlen + (V2_AUTH_LEN if version == 2 else 0)
    if size != expected:
        return Drop(DropReason.LENGTH, f"{size} bytes, {count} IPv{family} addresses need {expected}")
    adver_int_cs = byte5 * 100 if version == 2 else (byte4 & 0x0F) << 8 | byte5
    if adver_int_cs == 0:
        return Drop(DropReason.ADV_INTERVAL, "advertisement interval 0")
    if version == 2 and byte4 != 0:
        return Drop(DropReason.AUTH, f"auth type {byte4}, only 0 (none) is supported")
    if vrid == 0:
        return Drop(DropReason.VRID, "vrid 0")
    addresses = _addresses(bytes(data[HEADER_LEN:HEADER_LEN + count * addrlen]), family)
    return Advert(version, vrid, priority, adver_int_cs, addresses, form)


@functools.lru_cache(maxsize=1024)
def _addresses(packed: bytes, family: int) -> tuple[Address, ...]:
    """The address list; cached, since a LAN repeats the same few lists every advert interval."""
    if family == 4:
        return tuple(IPv4Address(a) for a in struct.unpack(f"!{len(packed) // 4}I", packed))
    return tuple(IPv6Address(int.from_bytes(packed[i:i + 16], "big")) for i in range(0, len(packed), 16))


def _checksum_form(data: bytes, version: int, src: Address, dst: Address) -> ChecksumForm | None:
    message_sum = _sum_mod(data)
    if version == 2:
        return ChecksumForm.MESSAGE if message_sum == 0 else None
    if (message_sum + pseudo_sum(src, dst, len(data))) % 0xFFFF == 0:
        return ChecksumForm.PSEUDO
    if src.version == 4 and message_sum == 0:
        return ChecksumForm.MESSAGE  # RFC 9568 5.2.8
    return None


def _sum_mod(data: bytes) -> int:
    """The RFC 1071 sum of `data` modulo 0xFFFF.

    Read as one big-endian integer, the bytes are the sum of word_i * 65536**i, and 65536 = 1 (mod 0xFFFF),
    so the integer is congruent to the one's complement sum of its 16-bit words. A message with a good
    checksum sums to 0xFFFF, i.e. 0 here; that is exact because the sums seen here are never of all-zero
    words (the pseudo-header carries protocol 112, and the version checked before is not 0).
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def pseudo_sum(src: Address, dst: Address, length: int, protocol: int = VRRP_PROTO) -> int:
    """The pseudo-header term of `internet_checksum` for `length` bytes of `protocol` after the IP header."""
    # IPv4 (RFC 768 style) and IPv6 (RFC 8200 8.1) pseudo-headers hold the same terms, at different widths,
    # and width does not matter modulo 0xFFFF (see _sum_mod).
    return int(src) + int(dst) + length + protocol


def internet_checksum(data: bytes, pseudo: int = 0) -> int:
    """The RFC 1071 checksum field for `data` (its own checksum bytes zero) plus a pseudo-header sum.

    The one's complement sum F of non-zero words lies in 1..0xFFFF and is congruent to the sum modulo
    0xFFFF (see _sum_mod), so F is that remainder, or 0xFFFF when it is 0; the field is ~F.
    """
    remainder = (_sum_mod(data) + pseudo) % 0xFFFF
    return 0xFFFF - remainder if remainder else 0


# ---- IPv4 header (raw IPv4 sockets deliver it) --------------------------------------------------------


def parse_ipv4(packet: bytes) -> tuple[IPv4Address, IPv4Address, int, bytes] | Drop:
    """(src, dst, ttl, VRRP message) from an IPv4 packet as a raw socket hands it over.

    A header that is not IPv4 or whose IHL / total length do not fit the bytes is LENGTH; a protocol other
    than 112 is TYPE (not a VRRP packet at all).
    """
    size = len(packet)
    if size < 20:
        return Drop(DropReason.LENGTH, f"{size} bytes, shorter than an IPv4 header")
    if packet[0] >> 4 != 4:
        return Drop(DropReason.LENGTH, f"IP version {packet[0] >> 4} in an IPv4 header")
    header_len = (packet[0] & 0x0F) * 4
    total_len = int.from_bytes(packet[2:4], "big")
    if not 20 <= header_len <= total_len <= size:
        return Drop(DropReason.LENGTH, f"IHL {header_len} and total length {total_len} in {size} bytes")
    if packet[9] != VRRP_PROTO:
        return Drop(DropReason.TYPE, f"IP protocol {packet[9]}, not {VRRP_PROTO}")
    return _v4(packet[12:16]), _v4(packet[16:20]), packet[8], bytes(packet[header_len:total_len])


@functools.lru_cache(maxsize=1024)
def _v4(packed: bytes) -> IPv4Address:
    """An IPv4 address object per packed address: a LAN has few senders, made once each."""
    return IPv4Address(packed)
