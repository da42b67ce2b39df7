"""Netlink glue: interface facts, virtual IP addresses added and removed, and link up/down events.

Everything here is called from inside the daemon's asyncio loop. pyroute2 0.9's synchronous `IPRoute`
runs its own event loop and fails inside a running one ("This event loop is already running"), so requests
go through `AsyncIPRoute`. Link events come from a separate netlink socket subscribed to RTMGRP_LINK and
read with `loop.add_reader`: the kernel pushes them, nothing polls. Errors reach callers as `OSError`
(pyroute2's NetlinkError is not one), so the runtime's `except OSError` catches every failure here.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_interface

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from daemonkit import log as logging

Address = IPv4Address | IPv6Address
Interface = IPv4Interface | IPv6Interface

REQUEST_TIMEOUT = 5.0  # seconds for one netlink request; a kernel answer takes about a millisecond
IFF_UP, IFF_RUNNING = 0x1, 0x40
IFA_F_NODAD, IFA_F_SECONDARY = 0x02, 0x80
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTMGRP_LINK = 0x1
IFLA_IFNAME = 3
_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")


def _family(family: str) -> int:
    try:
        return _FAMILIES[family]
    except KeyError:
        raise ValueError(f"family must be 'ipv4' or 'ipv6', not {family!r}") from None


def _is_up(flags: int) -> bool:
    """Administratively up and with carrier (IFF_RUNNING mirrors operstate UP/UNKNOWN)."""
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def parse_link_events(data: bytes) -> list[tuple[str, bool]]:
    """(ifname, up) for each RTM_NEWLINK / RTM_DELLINK in one netlink datagram (a deleted link is down)."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type = _NLMSGHDR.unpack_from(data, offset)[:2]
        if length < _NLMSGHDR.size:
            break
        body = data[offset + _NLMSGHDR.size : offset + length]
        if msg_type in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= _IFINFOMSG.size:
            flags = _IFINFOMSG.unpack_from(body)[3]
            ifname = _ifname_attr(body)
            if ifname is not None:
                events.append((ifname, msg_type == RTM_NEWLINK and _is_up(flags)))
        offset += (length + 3) & ~3
    return events


def _ifname_attr(body: bytes) -> str | None:
    offset = _IFINFOMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            return None
        if kind == IFLA_IFNAME:
            return body[offset + _RTATTR.size : offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3
    return None


class Netlink:
    """rtnetlink for one daemon: open() once inside the loop, close() at shutdown."""

    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None
        self._watch: socket.socket | None = None
        self._callback: Callable[[str, bool], None] | None = None
        self._known: dict[str, bool] = {}
        self._resync: asyncio.Task | None = None

    async def open(self) -> None:
        self._ipr = AsyncIPRoute()

    async def close(self) -> None:
        if self._watch is not None:
            asyncio.get_running_loop().remove_reader(self._watch.fileno())
            self._watch.close()
            self._watch = None
        if self._resync is not None:
            self._resync.cancel()
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _request(self, call: Callable[[AsyncIPRoute], Awaitable]):
        """await call(ipr) with a deadline, pyroute2's errors turned into OSError."""
        if self._ipr is None:
            raise OSError(errno.ENOTCONN, "Netlink.open() was not awaited")
        try:
            return await asyncio.wait_for(call(self._ipr), REQUEST_TIMEOUT)
        except NetlinkError as exc:
            raise OSError(exc.code, exc.args[1] if len(exc.args) > 1 else str(exc)) from None
        except asyncio.TimeoutError:
            raise OSError(errno.ETIMEDOUT, "netlink request timed out") from None

    async def _link(self, ifname: str):
        """The RTM_NEWLINK message of `ifname`, or None when there is no such interface."""
        try:
            links = await self._request(lambda ipr: ipr.link("get", ifname=ifname))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return links[0] if links else None

    # ---- interface facts ----------------------------------------------------------------------------

    async def ifindex(self, ifname: str) -> int | None:
        link = await self._link(ifname)
        return link["index"] if link else None

    async def link_is_up(self, ifname: str) -> bool:
        link = await self._link(ifname)
        return link is not None and _is_up(link["flags"])

    async def mac(self, ifname: str) -> str:
        link = await self._link(ifname)
        if link is None:
            raise OSError(errno.ENODEV, f"no interface {ifname}")
        return link.get("address")

    async def _index_or_raise(self, ifname: str) -> int:
        index = await self.ifindex(ifname)
        if index is None:
            raise OSError(errno.ENODEV, f"no interface {ifname}")
        return index

    async def _address_messages(self, ifname: str, family: str) -> list:
        index = await self._index_or_raise(ifname)

        async def dump(ipr):
            return [m async for m in await ipr.addr("dump", index=index, family=_family(family))]

        return await self._request(dump)

    async def addresses(self, ifname: str, family: str) -> list[Interface]:
        """The `family` addresses on `ifname` with their prefix lengths, in the kernel's order."""
        return [_interface(m) for m in await self._address_messages(ifname, family)]

    async def primary_address(self, ifname: str, family: str, exclude=()) -> Address | None:
        """The source of our adverts (RFC 5798 5.1.1.1 / 5.1.2.1): IPv4, the first primary (not secondary)
        address that is not in `exclude` (the VIPs), else the first other one; IPv6, the link-local."""
        messages = await self._address_messages(ifname, family)
        candidates = [m for m in messages if _interface(m).ip not in set(exclude)]
        if family == "ipv6":
            return next((_interface(m).ip for m in candidates if _interface(m).ip.is_link_local), None)
        primaries = [m for m in candidates if not _flags(m) & IFA_F_SECONDARY]
        chosen = (primaries or candidates or [None])[0]
        return _interface(chosen).ip if chosen is not None else None

    # ---- virtual addresses --------------------------------------------------------------------------

    async def add_address(self, ifname: str, iface: Interface) -> bool:
        """Add `iface` to `ifname`; False when it was already there. IPv6 skips DAD (IFA_F_NODAD): the
        VIP must answer at once, and the VRRP election, not DAD, decides who holds it."""
        iface = ip_interface(iface)
        index = await self._index_or_raise(ifname)
        kw = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if iface.version == 6:
            kw["flags"] = IFA_F_NODAD
        try:
            await self._request(lambda ipr: ipr.addr("add", **kw))
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise
        return True

    async def remove_address(self, ifname: str, iface: Interface) -> bool:
        """Remove `iface` from `ifname`; False when it was not there (or the interface is gone)."""
        iface = ip_interface(iface)
        index = await self.ifindex(ifname)
        if index is None:
            return False
        try:
            await self._request(
                lambda ipr: ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # ---- link events --------------------------------------------------------------------------------

    def watch_links(self, callback: Callable[[str, bool], None]) -> None:
        """Call `callback(ifname, up)` in the running loop whenever a link's up/carrier state changes."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._watch, self._callback = sock, callback
        loop.add_reader(sock.fileno(), self._on_link_readable)

    def _on_link_readable(self) -> None:
        if self._watch is None:
            return
        while True:
            try:
                data = self._watch.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped events: ask for the truth again
                    logging.get("vrrpd.netlink").warning("link_events_lost", action="resync")
                    self._schedule_resync()
                    continue
                logging.get("vrrpd.netlink").error("link_watch_failed", error=str(exc))
                return
            for ifname, up in parse_link_events(data):
                self._emit(ifname, up)

    def _emit(self, ifname: str, up: bool) -> None:
        if self._known.get(ifname) == up or self._callback is None:
            return
        self._known[ifname] = up
        self._callback(ifname, up)

    def _schedule_resync(self) -> None:
        if self._resync is None or self._resync.done():
            self._resync = asyncio.get_running_loop().create_task(self._resync_links())

    async def _resync_links(self) -> None:
        async def dump(ipr):
            return [m async for m in await ipr.link("dump")]

        try:
            links = await self._request(dump)
        except OSError as exc:
            logging.get("vrrpd.netlink").error("link_resync_failed", error=str(exc))
            return
        for link in links:
            self._emit(link.get("ifname"), _is_up(link["flags"]))


def _flags(message) -> int:
    """IFA_FLAGS (32 bits) when present, else the 8-bit ifa_flags."""
    return message.get_attr("IFA_FLAGS") or message["flags"]


def _interface(message) -> Interface:
    # IPv4 names the local address IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point links).
    address = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
    return ip_interface(f"{address}/{message['prefixlen']}")
