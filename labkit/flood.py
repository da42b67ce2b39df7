"""A hostile host: sends a bounded, rate-limited stream of malformed and spoofed VRRP adverts at a target.

Run inside a lab namespace: `python -m labkit.flood SRC DST COUNT SECONDS`. Prints, as JSON, how many
packets of each kind it sent, keyed by the counter the target must charge them to.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from ipaddress import IPv4Address

VRID, UNKNOWN_VRID = 51, 99
VIP = IPv4Address("192.0.2.100")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vrrp(src: IPv4Address, dst: IPv4Address, *, version=3, type_=1, vrid=VRID, priority=200, count=1,
         addresses=(VIP,), extra=b"", fix_checksum=True) -> bytes:
    body = struct.pack("!BBBBH", (version << 4) | type_, vrid, priority, count, 20)
    message = body + b"\0\0" + b"".join(a.packed for a in addresses) + extra
    if fix_checksum:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 112, len(message))
        csum = checksum(pseudo + message)
        message = message[:6] + struct.pack("!H", csum) + message[8:]
    return message


def ip_packet(src: IPv4Address, dst: IPv4Address, payload: bytes, ttl: int = 255) -> bytes:
    # Linux fills in the header checksum and total length for IP_HDRINCL sockets.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, 112, 0, src.packed, dst.packed) + payload


def kinds(src: IPv4Address, dst: IPv4Address) -> dict[str, bytes]:
    """One packet per attack, keyed by the counter it must land in."""
    good = vrrp(src, dst)
    bad_sum = good[:6] + bytes([good[6] ^ 0xFF, good[7]]) + good[8:]
    return {
        "ttl_errors": ip_packet(src, dst, good, ttl=64),
        "checksum_errors": ip_packet(src, dst, bad_sum),
        "version_errors": ip_packet(src, dst, vrrp(src, dst, version=4)),
        "invalid_type": ip_packet(src, dst, vrrp(src, dst, type_=2)),
        "packet_length_errors/truncated": ip_packet(src, dst, good[:6]),
        "packet_length_errors/overlong": ip_packet(src, dst, vrrp(src, dst, extra=b"\xde\xad\xbe\xef")),
        "packet_length_errors/count_lies": ip_packet(src, dst, vrrp(src, dst, count=3)),
        "peer_errors": ip_packet(src, dst, vrrp(src, dst, priority=255)),
        "router.vrid_errors": ip_packet(src, dst, vrrp(src, dst, vrid=UNKNOWN_VRID)),
    }


def flood(src: str, dst: str, count: int, seconds: float) -> dict[str, int]:
    packets = list(kinds(IPv4Address(src), IPv4Address(dst)).items())
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sent = {name: 0 for name, _ in packets}
    start = time.monotonic()
    rate = count / (seconds * 0.8)  # aim to finish with a fifth of the time to spare
    for i in range(count):
        if time.monotonic() - start > seconds:
            break  # bounded in time as well as count
        due = start + i / rate
        if (lag := due - time.monotonic()) > 0:
            time.sleep(lag)
        name, data = packets[i % len(packets)]
        sock.sendto(data, (dst, 0))
        sent[name] += 1
    sock.close()
    return sent


if __name__ == "__main__":
    source, target, total, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(flood(source, target, total, limit)))
