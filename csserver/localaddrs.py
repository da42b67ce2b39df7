"""The IP addresses on this host's interfaces, kept fresh from netlink events: no system call per request.

`LocalAddresses.start()` subscribes to RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR first and dumps the
current addresses second, then applies every event queued since the subscription in order: whatever
happened around the dump, the last word on each address is the kernel's latest. The kernel pushes the
events (nothing polls); listeners hear of every change, which is how csserver drops what it believed about
contexts whose VIP came or went. The netlink messages are daemonkit.rtnl's; if news are lost (a receive
buffer overrun) the watcher dumps again.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address

import structlog

from daemonkit import rtnl

Address = IPv4Address | IPv6Address
Listener = Callable[[frozenset, frozenset], None]  # (added, removed)
RESTART_DELAY_S = 0.5

log = structlog.get_logger("csserver")


class AddressTable:
    """Addresses by (address, interface index): one address on two interfaces stays local until both go."""

    def __init__(self) -> None:
        self._entries: set[tuple[Address, int]] = set()
        self.addresses: frozenset[Address] = frozenset()

    def replace(self, entries: Iterable[tuple[Address, int]]) -> tuple[frozenset, frozenset]:
        self._entries = set(entries)
        return self._refresh()

    def apply(self, event: str, address: Address, index: int) -> tuple[frozenset, frozenset]:
        """Apply one RTM_NEWADDR / RTM_DELADDR; the (added, removed) addresses."""
        if event == "RTM_NEWADDR":
            self._entries.add((address, index))
        elif event == "RTM_DELADDR":
            self._entries.discard((address, index))
        return self._refresh()

    def _refresh(self) -> tuple[frozenset, frozenset]:
        before = self.addresses
        self.addresses = frozenset(address for address, _ in self._entries)
        return self.addresses - before, before - self.addresses


class StaticAddresses:
    """A fixed (or test-driven) set of local addresses with the same interface as LocalAddresses."""

    def __init__(self, addresses: Iterable[Address | str] = ()):
        self.addresses: frozenset[Address] = frozenset(ipaddress.ip_address(a) for a in addresses)
        self._listeners: list[Listener] = []

    def __contains__(self, address: object) -> bool:
        return address in self.addresses

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def set(self, addresses: Iterable[Address | str]) -> None:
        new = frozenset(ipaddress.ip_address(a) for a in addresses)
        added, removed = new - self.addresses, self.addresses - new
        self.addresses = new
        if added or removed:
            for listener in list(self._listeners):
                listener(frozenset(added), frozenset(removed))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class LocalAddresses(StaticAddresses):
    """The host's addresses from netlink; `start()` inside the running loop, `stop()` at shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self._table = AddressTable()
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None

    async def start(self) -> None:
        """Return once the first dump is in: from then on `addresses` is current."""
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._watch(), name="csserver-localaddrs")
        await asyncio.shield(self._ready)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _publish(self, change: tuple[frozenset, frozenset]) -> None:
        added, removed = change
        self.addresses = self._table.addresses
        if added or removed:
            log.info("local_addresses_changed", added=sorted(map(str, added)), removed=sorted(map(str, removed)))
            for listener in list(self._listeners):
                listener(added, removed)

    async def _watch(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the event stream broke: resubscribe and dump again
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(OSError(f"cannot read local addresses from netlink: {exc}"))
                    return
                log.warning("local_addresses_resync", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(RESTART_DELAY_S)

    async def _follow(self) -> None:
        queued: asyncio.Queue = asyncio.Queue()
        events = rtnl.Watch(rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR, lambda *news: queued.put_nowait(news))
        dumper = rtnl.Rtnl()
        events.open()
        try:
            dumper.open()
            try:
                dumped = await dumper.addresses()
            finally:
                dumper.close()
            self._publish(self._table.replace((a.address.ip, a.index) for a in dumped))
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            while True:
                kind, body = await queued.get()
                if kind is None:
                    raise OSError("netlink address news were lost")
                addr = rtnl.parse_addr(body)
                if addr is not None:
                    event = "RTM_NEWADDR" if kind == rtnl.RTM_NEWADDR else "RTM_DELADDR"
                    self._publish(self._table.apply(event, addr.address.ip, addr.index))
        finally:
            events.close()
