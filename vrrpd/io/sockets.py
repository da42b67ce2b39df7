"""Raw IP protocol 112 sockets: send and receive VRRP advertisements on one interface and address family.

One `AdvertSocket` per (interface, family). It is bound to its interface (SO_BINDTODEVICE), joins the
VRRP group (224.0.0.18 / ff02::12) on that interface only, and sends with TTL / hop limit 255 (RFC 5798
5.1.1.3 / 5.1.2.3) from exactly the source address the caller gives, because the checksum covers it.
Receiving hands back each message with the source, destination, TTL / hop limit and ingress interface the
RFC 5798 7.1 checks need; the checks themselves are the Node's.

An IPv4 socket hears only the groups it joined itself (IP_MULTICAST_ALL off). Linux has no such filter for
IPv6 raw sockets that are not bound to an address: they hear every protocol-112 multicast their interface
accepts, which the codec and the VRID lookup sort out.

The kernel never computes or verifies the IPv6 checksum here (IPV6_CHECKSUM off): `vrrpd.core.packet` does, so
that a bad checksum is counted instead of silently dropped.

An IPv4 packet whose IP header cannot be parsed (the kernel validates headers first, so this should never
happen) is skipped and counted in `AdvertSocket.malformed`; there is no instance to blame it on.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from typing import NamedTuple
from ipaddress import IPv4Address, IPv6Address, ip_address

from vrrpd.core.packet import IPPROTO_AH, MCAST_V4, MCAST_V6, REQUIRED_TTL, VRRP_PROTO, Drop, parse_ipv4

Address = IPv4Address | IPv6Address

# Linux constants the socket module does not export on every Python build (linux/in.h, linux/in6.h).
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
SO_ATTACH_FILTER = 26  # asm-generic/socket.h
IPV6_CHECKSUM_OFF = -1

RECV_BUFFER = 4 << 20  # a burst of hundreds of adverts (peers in phase) while the loop is busy must not drop
NETWORK_CONTROL = 0xC0  # IP precedence 6, as keepalived and FRR send adverts: not dropped first under QoS
MAX_REMEMBERED = 1024  # remembered (dst, src) pairs; a daemon uses a handful, so this only bounds odd callers
RECV_BUFSIZE = 65535  # an IPv6 VRRP message is at most 8 + 255 * 16 bytes; never truncate anything
_CMSG_SPACE = socket.CMSG_SPACE(32) * 3
_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)  # a plain int: IntFlag arithmetic per packet is slow
_IN_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst (source on send), ipi_addr (dst on recv)
_IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex


class _Program:
    """A classic BPF program for SO_ATTACH_FILTER (struct sock_fprog), kept alive with its instructions."""

    def __init__(self, instructions: list[tuple[int, int, int, int]]):
        self._code = b"".join(struct.pack("=HBBI", *ins) for ins in instructions)
        self._buffer = ctypes.create_string_buffer(self._code)
        self.program = struct.pack("HP", len(instructions), ctypes.addressof(self._buffer))  # native layout


_DROP_ALL = _Program([(0x06, 0, 0, 0)])  # BPF_RET | BPF_K, 0: keep no byte of any packet

_ADDRESSES: dict[bytes | str, Address] = {}  # a LAN has few senders: their address objects are made once


def _address(raw: bytes | str) -> Address:
    """The address of packed bytes, or of a socket-module string ("fe80::1%eth0": the zone is dropped)."""
    found = _ADDRESSES.get(raw)
    if found is None:
        if len(_ADDRESSES) >= MAX_REMEMBERED:
            _ADDRESSES.clear()
        found = _ADDRESSES[raw] = IPv6Address(raw) if isinstance(raw, bytes) else ip_address(raw.split("%", 1)[0])
    return found


class Received(NamedTuple):
    """One received VRRP message (the bytes after the IP header) and the IP facts RFC 5798 7.1 checks (a
    tuple: a thousand are made a second on a busy backup)."""

    payload: bytes
    src: Address
    dst: Address
    ttl: int  # IPv4 TTL or IPv6 hop limit as received
    ifindex: int  # interface the packet arrived on
    ip_header: bytes | None = None  # IPv4 with AH: the IP header (the digest covers it); payload is AH + VRRP


class AdvertSocket:
    """A raw VRRP socket bound to one interface and one family ("ipv4" | "ipv6"); non-blocking."""

    def __init__(self, ifname: str, family: str, *, join_multicast: bool = True, send_only: bool = False):
        if family not in ("ipv4", "ipv6"):
            raise ValueError(f"family must be 'ipv4' or 'ipv6', not {family!r}")
        self.ifname = ifname
        self.family = family
        self.ifindex = socket.if_nametoindex(ifname)
        self.malformed = 0  # IPv4 packets skipped because their IP header did not parse
        self._ancillary: dict[tuple, tuple] = {}  # control-message bytes -> (hop limit, destination, ifindex)
        self._sent_to: dict[tuple[int, int], tuple] = {}  # (id(dst), id(src)) -> (dst, src, sendmsg arguments)
        af = socket.AF_INET if family == "ipv4" else socket.AF_INET6
        self._sock = socket.socket(af, socket.SOCK_RAW, VRRP_PROTO)
        # IPv4 only: VRRPv2 with auth_type AH (RFC 2338 5.3.6.3) arrives as IP protocol 51 and is sent as whole
        # datagrams built by the Node (IP_HDRINCL), as keepalived does. Both are opened with the socket so that
        # an instance switched to AH by a reload needs no new socket.
        self._ah: socket.socket | None = None
        self._hdrincl: socket.socket | None = None
        self.send_only = send_only
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            if send_only:  # a filter that keeps nothing: what the interface hears is read on the base
                self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _DROP_ALL.program)
            else:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            if family == "ipv4":
                self._setup_ipv4(self._sock, join_multicast)
                if not send_only:
                    self._ah = socket.socket(af, socket.SOCK_RAW, IPPROTO_AH)
                    self._ah.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                    self._setup_ipv4(self._ah, join_multicast)
                    self._ah.setblocking(False)
                self._hdrincl = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IPPROTO_RAW: IP_HDRINCL
                self._hdrincl.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                self._setup_ipv4(self._hdrincl, False)
                self._hdrincl.setblocking(False)
            else:
                self._setup_ipv6(join_multicast)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def _setup_ipv4(self, sock: socket.socket, join_multicast: bool) -> None:
        mreqn = struct.pack("=4s4si", MCAST_V4.packed, bytes(4), self.ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, NETWORK_CONTROL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        # Only the groups this socket joined, not every group some other socket on the host joined.
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if join_multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)

    def _setup_ipv6(self, join_multicast: bool) -> None:
        sock = self._sock
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, IPV6_CHECKSUM_OFF)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, NETWORK_CONTROL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        if join_multicast:
            mreq = struct.pack("=16sI", MCAST_V6.packed, self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)

    def fileno(self) -> int:
        return self._sock.fileno()

    def filenos(self) -> tuple[int, ...]:
        """Every descriptor to watch for reading (VRRP, and for IPv4 also AH); none when sending only."""
        if self.send_only:
            return ()
        return (self._sock.fileno(),) + ((self._ah.fileno(),) if self._ah is not None else ())

    def send_datagram(self, datagram: bytes, dst: Address) -> None:
        """Send a whole IPv4 datagram the caller built (AH authentication); the kernel adds only the checksum."""
        if self._hdrincl is None:
            raise OSError(errno.EAFNOSUPPORT, "whole datagrams are IPv4 only")
        sent = self._hdrincl.sendto(datagram, (str(dst), 0))
        if sent != len(datagram):
            raise OSError(errno.EMSGSIZE, f"sent {sent} of {len(datagram)} bytes")

    # ---- sending ----------------------------------------------------------------------------------

    def send(self, payload: bytes, dst: Address, src: Address, ttl: int = REQUIRED_TTL) -> None:
        """Send one VRRP message to `dst` from exactly `src`; any failure (EAGAIN, ENETDOWN...) is OSError."""
        # sendmsg's arguments are built once per (dst, src) pair: a master re-sends the same pair every advert
        # interval, and building them (address parsing, struct packing) cost more than the sendmsg call.
        # Keyed by identity, because hashing an ipaddress object formats it as hex; the entry holds both
        # objects, so their ids cannot be reused while it exists, and a different but equal object just
        # builds one more entry.
        entry = self._sent_to.get((id(dst), id(src), ttl))
        if entry is None or entry[0] is not dst or entry[1] is not src:
            entry = self._remember(dst, src, ttl)
        sent = self._sock.sendmsg((payload,), *entry[2])
        if sent != len(payload):
            raise OSError(errno.EMSGSIZE, f"sent {sent} of {len(payload)} bytes")

    def _remember(self, dst: Address, src: Address, ttl: int) -> tuple:
        """(dst, src, sendmsg's ancillary data, flags and address), remembered for the next send; a TTL other
        than the socket's 255 (unicast_ttl) goes as a control message of its own."""
        if self.family == "ipv4":
            info = _IN_PKTINFO.pack(self.ifindex, IPv4Address(src).packed, bytes(4))
            ancillary = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
            if ttl != REQUIRED_TTL:
                ancillary.append((socket.IPPROTO_IP, socket.IP_TTL, struct.pack("=i", ttl)))
            args = (ancillary, 0, (str(dst), 0))
        else:
            info = _IN6_PKTINFO.pack(IPv6Address(src).packed, self.ifindex)
            ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
            if ttl != REQUIRED_TTL:
                ancillary.append((socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("=i", ttl)))
            args = (ancillary, 0, (str(dst), 0, 0, self.ifindex))
        if len(self._sent_to) >= MAX_REMEMBERED:
            self._sent_to.clear()
        entry = self._sent_to[(id(dst), id(src), ttl)] = (dst, src, args)
        return entry

    # ---- receiving --------------------------------------------------------------------------------

    def recv_all(self, max_packets: int = 64) -> list[Received]:
        """Every message waiting (up to `max_packets`), without blocking.

        A receive error after some messages were read returns those; the next call raises it.
        """
        out: list[Received] = []
        if self._ah is not None:
            out += self._recv_ah(max_packets)
        while len(out) < max_packets:
            try:
                data, ancillary, flags, address = self._sock.recvmsg(RECV_BUFSIZE, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if out:
                    break
                raise
            if flags & _TRUNCATED:
                self.malformed += 1
                continue
            received = self._ipv4(data, ancillary) if self.family == "ipv4" else self._ipv6(data, ancillary, address)
            if received is None:
                self.malformed += 1
            else:
                out.append(received)
        return out

    def _recv_ah(self, max_packets: int) -> list[Received]:
        out: list[Received] = []
        while len(out) < max_packets:
            try:
                data, ancillary, flags, _ = self._ah.recvmsg(RECV_BUFSIZE, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            if flags & _TRUNCATED:
                self.malformed += 1
                continue
            received = self._ipv4(data, ancillary, IPPROTO_AH)
            if received is None:
                self.malformed += 1
            else:
                out.append(received._replace(ip_header=bytes(data[:(data[0] & 0x0F) * 4])))
        return out

    def _ipv4(self, data: bytes, ancillary, protocol: int = VRRP_PROTO) -> Received | None:
        parsed = parse_ipv4(data, protocol)
        if isinstance(parsed, Drop):
            return None
        src, dst, ttl, payload = parsed
        ifindex = self.ifindex
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
                ifindex = _IN_PKTINFO.unpack_from(value)[0]
        return Received(payload, src, dst, ttl, ifindex)

    def _ipv6(self, data: bytes, ancillary, address) -> Received | None:
        # The control messages of one stream of adverts are the same bytes every time: parsed once.
        key = tuple([entry[2] for entry in ancillary])
        facts = self._ancillary.get(key)
        if facts is None:
            facts = self._ancillary_facts(ancillary)
            if len(self._ancillary) >= MAX_REMEMBERED:
                self._ancillary.clear()
            self._ancillary[key] = facts
        hop_limit, dst, ifindex = facts
        if dst is None or hop_limit < 0:
            return None  # both were asked for; without them the RFC 5798 7.1 checks cannot be made
        return Received(data, _address(address[0]), dst, hop_limit, ifindex)

    def _ancillary_facts(self, ancillary) -> tuple[int, Address | None, int]:
        hop_limit, dst, ifindex = -1, None, self.ifindex
        for level, kind, value in ancillary:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hop_limit = struct.unpack_from("=i", value)[0]
            elif kind == socket.IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
                packed, ifindex = _IN6_PKTINFO.unpack_from(value)
                dst = _address(packed)
        return hop_limit, dst, ifindex

    def close(self) -> None:
        for sock in (self._sock, self._ah, self._hdrincl):
            if sock is not None:
                sock.close()

    def __enter__(self) -> AdvertSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
