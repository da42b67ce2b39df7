"""rtnetlink (RFC 3549, linux/rtnetlink.h), the few messages both daemons need, packed with `struct`.

Links and addresses are dumped, watched and (addresses) added and removed. A library for this (pyroute2)
costs a daemon about 11 MB of resident memory and its own event loop; these few messages cost a page of code.
`Rtnl` asks over one socket, any number of requests at once, matched to their answers by sequence number;
`Watch` hears what the kernel pushes to the link and address groups (nothing polls). Every failure reaches the
caller as OSError with the kernel's errno.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_interface

from daemonkit.net import Address, Interface

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWRULE, RTM_DELRULE = 32, 33
RTA_DST, RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE = 1, 2, 4, 5, 6, 7, 9, 15
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_TABLE, FRA_OIFNAME = 1, 2, 3, 6, 15, 17
RTN_UNICAST, RTPROT_STATIC, RT_TABLE_MAIN, RT_TABLE_COMPAT = 1, 4, 254, 252
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
FR_ACT_TO_TBL = 1
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_AF_SPEC = 1, 3, 5, 18, 26
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_MACVLAN_MODE, MACVLAN_MODE_PRIVATE, MACVLAN_MODE_BRIDGE = 1, 1, 4
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFF_UP, IFF_RUNNING = 0x1, 0x40
IFA_F_NODAD, IFA_F_SECONDARY, IFA_F_TENTATIVE = 0x02, 0x80, 0x40
REQUEST_TIMEOUT_S = 5.0  # for one request; the kernel answers in about a millisecond
RECV_BUFFER = 1 << 20

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
_FIB_RULE = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, reserved x2, action, flags
_ERRNO = struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    flags: int
    mac: str | None

    @property
    def up(self) -> bool:
        """Administratively up and with carrier (IFF_RUNNING mirrors operstate UP/UNKNOWN)."""
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_RUNNING)


@dataclass(frozen=True, slots=True)
class Addr:
    index: int
    address: Interface
    flags: int  # IFA_F_*, the 32-bit IFA_FLAGS when the kernel gives it


# ---- the codec --------------------------------------------------------------------------------------------


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, body) of each message in one datagram; a truncated tail is ignored."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        out.append((kind, flags, seq, data[offset + _NLMSGHDR.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def attributes(body: bytes, offset: int) -> dict[int, bytes]:
    """The rtattrs after a fixed header of `offset` bytes, by type (a repeated type keeps its first value)."""
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        attrs.setdefault(kind & 0x3FFF, body[offset + _RTATTR.size:offset + length])  # without NLA_F_* bits
        offset += (length + 3) & ~3
    return attrs


def attribute(kind: int, value: bytes) -> bytes:
    header = _RTATTR.pack(_RTATTR.size + len(value), kind)
    return header + value + bytes(-len(value) % 4)


def parse_link(body: bytes) -> Link | None:
    if len(body) < _IFINFOMSG.size:
        return None
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    attrs = attributes(body, _IFINFOMSG.size)
    name = attrs.get(IFLA_IFNAME)
    if name is None:
        return None
    mac = attrs.get(IFLA_ADDRESS)
    return Link(index, name.split(b"\0", 1)[0].decode(errors="replace"), flags,
                ":".join(f"{b:02x}" for b in mac) if mac and len(mac) == 6 else None)


def parse_addr(body: bytes) -> Addr | None:
    if len(body) < _IFADDRMSG.size:
        return None
    family, prefixlen, flags, _, index = _IFADDRMSG.unpack_from(body)
    attrs = attributes(body, _IFADDRMSG.size)
    # IPv4 names the local address IFA_LOCAL; IFA_ADDRESS is the peer's on point-to-point links.
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if family == socket.AF_INET and raw is not None and len(raw) == 4:
        ip: Address = IPv4Address(raw)
    elif family == socket.AF_INET6 and raw is not None and len(raw) == 16:
        ip = IPv6Address(raw)
    else:
        return None
    if IFA_FLAGS in attrs and len(attrs[IFA_FLAGS]) >= 4:
        flags = struct.unpack_from("=I", attrs[IFA_FLAGS])[0]
    return Addr(index, ip_interface(f"{ip}/{prefixlen}"), flags)


def addr_body(index: int, address: Interface, flags: int = 0) -> bytes:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = _IFADDRMSG.pack(family, address.network.prefixlen, flags & 0xFF, 0, index)
    body += attribute(IFA_LOCAL, address.ip.packed) + attribute(IFA_ADDRESS, address.ip.packed)
    if flags:
        body += attribute(IFA_FLAGS, struct.pack("=I", flags))
    return body


_RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops (weight - 1), interface index


def route_body(family: int, dst, *, gateway=None, oif: int | None = None, prefsrc=None, table: int | None = None,
               metric: int | None = None, scope: int | None = None, kind: int = RTN_UNICAST,
               more_gateways: tuple = ()) -> bytes:
    """An rtmsg for a route of type `kind` (RTN_*) to network `dst` (ipaddress network), as `ip route` sends it;
    with `more_gateways`, a multipath route over `gateway` and them (`nexthop via A nexthop via B`)."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    table = RT_TABLE_MAIN if table is None else table
    if scope is None:
        scope = RT_SCOPE_UNIVERSE if gateway is not None or kind != RTN_UNICAST else RT_SCOPE_LINK
    body = _RTMSG.pack(af, dst.prefixlen, 0, 0, table if table < 256 else RT_TABLE_COMPAT, RTPROT_STATIC, scope,
                       kind, 0)
    body += attribute(RTA_DST, dst.network_address.packed) + attribute(RTA_TABLE, struct.pack("=I", table))
    if gateway is not None and more_gateways:
        hops = b""
        for hop in (gateway, *more_gateways):
            via = attribute(RTA_GATEWAY, hop.packed)
            hops += _RTNEXTHOP.pack(_RTNEXTHOP.size + len(via), 0, 0, oif or 0) + via
        body += attribute(RTA_MULTIPATH, hops)
        oif = None
    elif gateway is not None:
        body += attribute(RTA_GATEWAY, gateway.packed)
    if oif is not None:
        body += attribute(RTA_OIF, struct.pack("=i", oif))
    if prefsrc is not None:
        body += attribute(RTA_PREFSRC, prefsrc.packed)
    if metric is not None:
        body += attribute(RTA_PRIORITY, struct.pack("=I", metric))
    return body


def rule_body(family: int, table: int, *, src=None, dst=None, priority: int | None = None,
              iifname: str | None = None, oifname: str | None = None) -> bytes:
    """A fib_rule_hdr for `from src to dst [iif] [oif] [priority] lookup table`, as `ip rule` would send it."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    body = _FIB_RULE.pack(af, dst.prefixlen if dst is not None else 0, src.prefixlen if src is not None else 0, 0,
                          table if table < 256 else RT_TABLE_COMPAT, 0, 0, FR_ACT_TO_TBL, 0)
    body += attribute(FRA_TABLE, struct.pack("=I", table))
    if src is not None:
        body += attribute(FRA_SRC, src.network_address.packed)
    if dst is not None:
        body += attribute(FRA_DST, dst.network_address.packed)
    if priority is not None:
        body += attribute(FRA_PRIORITY, struct.pack("=I", priority))
    for kind, name in ((FRA_IIFNAME, iifname), (FRA_OIFNAME, oifname)):
        if name is not None:
            body += attribute(kind, name.encode() + b"\0")
    return body


def macvlan_body(name: str, link: int, mac: str, mode: int = MACVLAN_MODE_BRIDGE) -> bytes:
    """An ifinfomsg creating macvlan `name` (down) on interface `link` with address `mac`:
    `ip link add NAME link LINK address MAC type macvlan mode bridge`."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    body += attribute(IFLA_IFNAME, name.encode() + b"\0") + attribute(IFLA_LINK, struct.pack("=I", link))
    body += attribute(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
    data = attribute(IFLA_MACVLAN_MODE, struct.pack("=I", mode))
    return body + attribute(IFLA_LINKINFO, attribute(IFLA_INFO_KIND, b"macvlan") + attribute(IFLA_INFO_DATA, data))


def link_set_body(index: int, *, up: bool | None = None, no_ipv6_addresses: bool = False) -> bytes:
    """An ifinfomsg changing interface `index`: up or down, and/or `addrgenmode none` (no link-local of its
    own; a kernel takes that only once the interface exists, not in the message that makes it)."""
    flags, change = (IFF_UP if up else 0), (IFF_UP if up is not None else 0)
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if no_ipv6_addresses:
        inet6 = attribute(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))
        body += attribute(IFLA_AF_SPEC, attribute(socket.AF_INET6, inet6))
    return body


def link_index_body(index: int) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)


def macvlan_supported() -> str | None:
    """Why this kernel cannot make macvlans (None: it can), asked without making one: a macvlan without a
    lower interface is refused with EINVAL by a kernel that knows the kind, EOPNOTSUPP by one that does not."""
    probe = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attribute(IFLA_IFNAME, b"vrrpd-probe\0") + attribute(
        IFLA_LINKINFO, attribute(IFLA_INFO_KIND, b"macvlan"))
    message = _NLMSGHDR.pack(_NLMSGHDR.size + len(probe), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
                             | NLM_F_EXCL, 1, 0) + probe
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(REQUEST_TIMEOUT_S)
        sock.bind((0, 0))
        sock.send(message)
        for kind, _, _, body in messages(sock.recv(65536)):
            if kind == NLMSG_ERROR and len(body) >= 4:
                code = -_ERRNO.unpack_from(body)[0]
                if code == errno.EOPNOTSUPP:
                    return "this kernel has no macvlan (CONFIG_MACVLAN)"
                if code in (errno.EPERM, errno.EACCES):
                    return "no permission to make interfaces (CAP_NET_ADMIN)"
                if code == 0:  # made after all (cannot happen without a lower interface): do not leave it
                    return "the macvlan probe made an interface; remove vrrpd-probe"
                return None
    return None


# ---- the socket both use ----------------------------------------------------------------------------------


class _Socket:
    """One non-blocking rtnetlink socket subscribed to `groups` (0: requests only), read whenever readable:
    each datagram goes to `_received`, a receive error to `_lost` (which says whether to read on)."""

    groups = 0

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def open(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((0, self.groups))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._lost(exc):
                    continue
                return
            self._received(data)

    def _received(self, data: bytes) -> None:
        raise NotImplementedError

    def _lost(self, exc: OSError) -> bool:
        raise NotImplementedError


# ---- asking -----------------------------------------------------------------------------------------------


class Rtnl(_Socket):
    """Requests over one rtnetlink socket; open() inside the running loop, close() when done."""

    def __init__(self) -> None:
        super().__init__()
        self._seq = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future, list]] = {}

    def close(self) -> None:
        super().close()
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(OSError(errno.ECONNABORTED, "netlink socket closed"))
        self._pending.clear()

    async def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; its answers (type, body), after the ack or the end of the dump. OSError on failure."""
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "Rtnl.open() was not called")
        seq = next(self._seq)
        future = asyncio.get_running_loop().create_future()
        self._pending[seq] = (future, [])
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0)
        try:
            self._sock.send(header + body)
            return await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise OSError(errno.ETIMEDOUT, "netlink request timed out") from None
        finally:
            self._pending.pop(seq, None)

    def _lost(self, exc: OSError) -> bool:
        # ENOBUFS: an answer was lost; every waiting request fails (and may be retried) at once.
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(OSError(exc.errno, exc.strerror))
        return exc.errno == errno.ENOBUFS

    def _received(self, data: bytes) -> None:
        for kind, flags, seq, body in messages(data):
            waiting = self._pending.get(seq)
            if waiting is None or waiting[0].done():
                continue
            future, parts = waiting
            if kind == NLMSG_ERROR:
                code = -_ERRNO.unpack_from(body)[0] if len(body) >= 4 else errno.EPROTO
                if code:
                    future.set_exception(OSError(code, os.strerror(code)))
                else:
                    future.set_result(parts)
            elif kind == NLMSG_DONE:
                future.set_result(parts)
            else:
                parts.append((kind, body))
                if not flags & NLM_F_MULTI:
                    future.set_result(parts)

    # -- the requests --------------------------------------------------------------------------------------

    async def links(self) -> list[Link]:
        answers = await self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        return [link for kind, body in answers if kind == RTM_NEWLINK and (link := parse_link(body))]

    async def link(self, name: str) -> Link | None:
        """The interface of that name now, or None."""
        try:
            answers = await self.request(RTM_GETLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                                         + attribute(IFLA_IFNAME, name.encode() + b"\0"))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return next((link for kind, body in answers if kind == RTM_NEWLINK and (link := parse_link(body))), None)

    async def addresses(self) -> list[Addr]:
        answers = await self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        return [addr for kind, body in answers if kind == RTM_NEWADDR and (addr := parse_addr(body))]

    async def add_address(self, index: int, address: Interface, flags: int = 0) -> None:
        """Add `address` to interface `index`; OSError(EEXIST) when it is already there."""
        await self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, addr_body(index, address, flags))

    async def remove_address(self, index: int, address: Interface) -> None:
        """Remove `address`; OSError(EADDRNOTAVAIL) when it is not there."""
        await self.request(RTM_DELADDR, NLM_F_ACK, addr_body(index, address))

    async def add_link(self, body: bytes) -> None:
        """Create the interface of `macvlan_body`; OSError(EEXIST) when the name is taken."""
        await self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    async def set_link(self, body: bytes) -> None:
        """Change an interface as `link_set_body` says."""
        await self.request(RTM_NEWLINK, NLM_F_ACK, body)

    async def delete_link(self, index: int) -> None:
        """Delete interface `index`; OSError(ENODEV) when there is none."""
        await self.request(RTM_DELLINK, NLM_F_ACK, link_index_body(index))

    async def add_route(self, body: bytes) -> None:
        """Add the route of `route_body`; OSError(EEXIST) when it is there already."""
        await self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    async def remove_route(self, body: bytes) -> None:
        """Remove the route of `route_body`; OSError(ESRCH) when there is none."""
        await self.request(RTM_DELROUTE, NLM_F_ACK, body)

    async def add_rule(self, body: bytes) -> None:
        """Add the rule of `rule_body`; OSError(EEXIST) when it is there already."""
        await self.request(RTM_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    async def remove_rule(self, body: bytes) -> None:
        """Remove the rule of `rule_body`; OSError(ENOENT) when there is none."""
        await self.request(RTM_DELRULE, NLM_F_ACK, body)


# ---- hearing ----------------------------------------------------------------------------------------------


class Watch(_Socket):
    """The kernel's link and address news: `callback(kind, body)` per message, or `callback(None, b"")` when
    news were lost (the receive buffer overran): the caller then asks for the whole truth again."""

    def __init__(self, groups: int, callback: Callable[[int | None, bytes], None]):
        super().__init__()
        self.groups = groups
        self.callback = callback

    def _lost(self, exc: OSError) -> bool:
        if exc.errno == errno.ENOBUFS:
            self.callback(None, b"")
            return True
        raise exc

    def _received(self, data: bytes) -> None:
        for kind, _, _, body in messages(data):
            self.callback(kind, body)
