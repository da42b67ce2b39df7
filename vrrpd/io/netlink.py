"""The netlink edge: the host's links and addresses as Node events, and the Node's address changes carried out.

At start the links and addresses are dumped while news of the link and address groups queue behind the dump,
so whatever happened around it, the last word on each is the kernel's latest. The kernel names interfaces by
index; events are handed on by name, from this edge's own index -> name table, so an interface deleted,
re-created (a new index) or renamed reaches the Node as the facts it is (the old name gone, the new one there).
News lost to a full receive buffer are made good by dumping again and handing on what differs.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from daemonkit import log as logging
from daemonkit import rtnl
from daemonkit.net import Address, Interface
from vrrpd.config_routing import ROUTE_TYPES, SCOPES
from vrrpd.core import events as n

ADDRESS_GROUPS = rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR


def forwarding(ifname: str) -> bool:
    """Whether `ifname` forwards IPv6 (this process's network namespace): the NA router flag."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/forwarding") as sysctl:
            return sysctl.read().strip() == "1"
    except OSError:
        return False


def _rule_body(rule) -> bytes:
    return rtnl.rule_body(rule.family, rule.table, src=rule.from_, dst=rule.to, priority=rule.priority,
                          iifname=rule.iif, oifname=rule.oif)


class Netlink:
    """One daemon's rtnetlink: `start(emit)` hands every fact to `emit` as Node events, then keeps doing so."""

    def __init__(self) -> None:
        self.rtnl = rtnl.Rtnl()
        self._watch = rtnl.Watch(ADDRESS_GROUPS, self._news)
        self._emit: Callable[[list], None] = lambda events: None
        self._names: dict[int, str] = {}  # index -> name of every interface now
        self._links: dict[str, rtnl.Link] = {}
        self._addrs: dict[tuple[int, Address], tuple[Interface, int]] = {}  # (index, ip) -> (address, flags)
        self._queued: list[tuple[int, bytes]] | None = None  # news that arrived during a dump
        self._resync: asyncio.Task | None = None
        self._log = logging.get("vrrpd.netlink")

    async def start(self, emit: Callable[[list], None]) -> None:
        self._emit = emit
        self.rtnl.open()
        self._watch.open()
        await self._dump()

    def close(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
        self._watch.close()
        self.rtnl.close()

    def index(self, ifname: str) -> int | None:
        link = self._links.get(ifname)
        return link.index if link else None

    # -- the Node's address changes ---------------------------------------------------------------------------

    async def add(self, ifname: str, address: Interface) -> None:
        """Add `address`; OSError(EEXIST) when it is there already, ENODEV when the interface is gone. IPv6
        skips DAD (IFA_F_NODAD): the election, not DAD, decides who holds a VIP, and it must answer at once."""
        index = self._index_or_raise(ifname)
        await self.rtnl.add_address(index, address, rtnl.IFA_F_NODAD if address.version == 6 else 0)

    async def remove(self, ifname: str, address: Interface) -> bool:
        """Remove `address`; False when it was not there (or the interface is gone)."""
        index = self.index(ifname)
        if index is None:
            return False
        try:
            await self.rtnl.remove_address(index, address)
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    async def add_route(self, route, ifname: str) -> None:
        """Add a virtual route (vrrpd.config_routing.Route; its dev, else `ifname`); OSError(EEXIST) when it is
        there already, ENODEV when its interface is not."""
        await self.rtnl.add_route(self._route_body(route, ifname))

    async def remove_route(self, route, ifname: str) -> bool:
        """Remove a virtual route; False when it was not there (or its interface is gone, and the route with it)."""
        try:
            await self.rtnl.remove_route(self._route_body(route, ifname))
        except OSError as exc:
            if exc.errno in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    async def add_rule(self, rule) -> None:
        """Add a virtual rule (vrrpd.config_routing.Rule); OSError(EEXIST) when it is there already."""
        await self.rtnl.add_rule(_rule_body(rule))

    async def remove_rule(self, rule) -> bool:
        try:
            await self.rtnl.remove_rule(_rule_body(rule))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

    def _route_body(self, route, ifname: str) -> bytes:
        """A route without dev goes out of the instance's interface when it has no next hop; with one, the
        kernel finds the interface (as `ip route add ... via` does); other types have no interface at all."""
        index = None
        if route.type == "unicast" and (route.dev is not None or route.via is None):
            index = self._index_or_raise(route.dev or ifname)
        scope = None if route.scope is None else SCOPES[route.scope]
        return rtnl.route_body(route.family, route.to, gateway=route.via, oif=index, prefsrc=route.src,
                               table=route.table, metric=route.metric, scope=scope, kind=ROUTE_TYPES[route.type],
                               more_gateways=route.also_via)

    def _index_or_raise(self, ifname: str) -> int:
        index = self.index(ifname)
        if index is None:
            raise OSError(errno.ENODEV, f"no interface {ifname}")
        return index

    # -- facts --------------------------------------------------------------------------------------------

    async def _dump(self) -> None:
        self._queued = []
        try:
            links = await self.rtnl.links()
            addrs = await self.rtnl.addresses()
        finally:
            queued, self._queued = self._queued, None
        events: list = []
        seen = {link.name for link in links}
        for name in [name for name in self._links if name not in seen]:
            events += self._link_gone(self._links[name].index)
        for link in links:
            events += self._link_news(link)
        now = {(a.index, a.address.ip): (a.address, a.flags) for a in addrs if a.index in self._names}
        for key, (address, flags) in self._addrs.items():
            if key not in now:
                events.append(n.AddressChanged(self._names.get(key[0], ""), address, False, flags))
        for key, (address, flags) in now.items():
            if self._addrs.get(key) != (address, flags):
                events.append(n.AddressChanged(self._names[key[0]], address, True, flags))
        self._addrs = now
        self._emit([e for e in events if not isinstance(e, n.AddressChanged) or e.ifname])
        for kind, body in queued:
            self._news(kind, body)

    def _news(self, kind: int | None, body: bytes) -> None:
        if kind is None:
            self._log.warning("netlink_events_lost", action="resync")
            if self._resync is None or self._resync.done():
                self._resync = asyncio.get_running_loop().create_task(self._resync_now())
            return
        if self._queued is not None:
            self._queued.append((kind, body))
            return
        events: list = []
        if kind in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
            link = rtnl.parse_link(body)
            if link is not None:
                events = self._link_news(link) if kind == rtnl.RTM_NEWLINK else self._link_gone(link.index)
        elif kind in (rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR):
            addr = rtnl.parse_addr(body)
            name = self._names.get(addr.index) if addr is not None else None
            if name is not None:
                present = kind == rtnl.RTM_NEWADDR
                if present:
                    self._addrs[(addr.index, addr.address.ip)] = (addr.address, addr.flags)
                else:
                    self._addrs.pop((addr.index, addr.address.ip), None)
                events = [n.AddressChanged(name, addr.address, present, addr.flags)]
        if events:
            self._emit(events)

    async def _resync_now(self) -> None:
        try:
            await self._dump()
        except OSError as exc:
            self._log.error("netlink_resync_failed", error=str(exc))

    def _link_news(self, link: rtnl.Link) -> list:
        events = []
        old_name = self._names.get(link.index)
        if old_name is not None and old_name != link.name:
            events += self._link_gone(link.index)  # renamed: the old name is gone
        previous = self._links.get(link.name)
        if previous is not None and previous.index != link.index:
            self._drop_index(previous.index)  # re-created under the same name
        self._names[link.index] = link.name
        self._links[link.name] = link
        events.append(n.LinkChanged(link.name, link.index, link.up, link.mac, forwarding(link.name)))
        return events

    def _link_gone(self, index: int) -> list:
        name = self._names.get(index)
        if name is None:
            return []
        self._drop_index(index)
        return [n.LinkChanged(name, None)]

    def _drop_index(self, index: int) -> None:
        name = self._names.pop(index, None)
        if name is not None and self._links.get(name, None) is not None and self._links[name].index == index:
            del self._links[name]
        self._addrs = {key: value for key, value in self._addrs.items() if key[0] != index}
