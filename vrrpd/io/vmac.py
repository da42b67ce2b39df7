"""The use_vmac edge: the Node's macvlans made, set up and deleted, as keepalived sets its VMACs up.

A macvlan in bridge mode (FRR's choice: in private mode the kernel hands a frame whose source MAC is the
macvlan's own, a peer's advert from the same virtual MAC, to the macvlan alone, and the base interface where
vrrpd listens would never hear it), without IPv6 addresses of its own (both nodes would make the same
link-local from the same MAC), and the sysctls keepalived sets: on the macvlan arp_ignore=1, accept_local=1,
rp_filter=0 (ARP answered only for the VIPs on it); on the base arp_ignore=1 and arp_filter=1 (the base
never answers for the VIPs with its own MAC) and arp_announce=2 (a reply from a VIP leaves by the base, and
the ARP request it needs must not name the VIP as its sender: hosts would learn the base's MAC for it),
given back when the last macvlan on it goes.
"""

from __future__ import annotations

import errno

from daemonkit import rtnl
from daemonkit import log as logging

VMAC_SYSCTLS = {"arp_ignore": "1", "accept_local": "1", "rp_filter": "0"}
BASE_SYSCTLS = {"arp_ignore": "1", "arp_filter": "1", "arp_announce": "2"}


def _sysctl_path(ifname: str, key: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{ifname}/{key}"


def read_sysctl(ifname: str, key: str) -> str | None:
    try:
        with open(_sysctl_path(ifname, key)) as fh:
            return fh.read().strip()
    except OSError:
        return None


def write_sysctl(ifname: str, key: str, value: str) -> None:
    with open(_sysctl_path(ifname, key), "w") as fh:
        fh.write(value)


class Vmacs:
    def __init__(self, netlink):
        self.netlink = netlink  # vrrpd.io.netlink.Netlink: its requests and its index of the links
        self._saved: dict[str, dict[str, str]] = {}  # base -> its sysctls before the first macvlan on it
        self._on_base: dict[str, set[str]] = {}  # base -> the macvlans set up on it
        self._log = logging.get("vrrpd.vmac")

    async def set_up(self, name: str, base: str, mac: str, create: bool) -> None:
        """OSError(EEXIST, ...) when asked to make it and an interface of that name is there already."""
        base_index = self.netlink.index(base)
        if base_index is None:
            raise OSError(errno.ENODEV, f"no interface {base}")
        if create:
            await self.netlink.rtnl.add_link(rtnl.macvlan_body(name, base_index, mac))
        link = await self.netlink.rtnl.link(name)
        if link is None:
            raise OSError(errno.ENODEV, f"{name} is gone again")
        await self.netlink.rtnl.set_link(rtnl.link_set_body(link.index, no_ipv6_addresses=True))
        for key, value in VMAC_SYSCTLS.items():
            write_sysctl(name, key, value)
        if base not in self._saved:
            self._saved[base] = {key: old for key in BASE_SYSCTLS if (old := read_sysctl(base, key)) is not None}
        for key, value in BASE_SYSCTLS.items():
            write_sysctl(base, key, value)
        self._on_base.setdefault(base, set()).add(name)
        await self.netlink.rtnl.set_link(rtnl.link_set_body(link.index, up=True))
        self._log.info("vmac_set_up", interface=name, base=base, mac=mac, made=create)

    async def tear_down(self, name: str, base: str, delete: bool) -> None:
        if delete:
            link = await self.netlink.rtnl.link(name)
            if link is not None:
                try:
                    await self.netlink.rtnl.delete_link(link.index)
                except OSError as exc:
                    if exc.errno != errno.ENODEV:
                        raise
        users = self._on_base.get(base, set())
        users.discard(name)
        if not users and base in self._saved:
            for key, value in self._saved.pop(base).items():
                try:
                    write_sysctl(base, key, value)
                except OSError:
                    pass  # the base interface is gone: nothing to give back
