"""Nodes on a fake LAN and a fake clock: the kernel's part (links, addresses, sockets) played by a dict.

`Host` answers a Node's effects as the runtime and the kernel would: OpenSocket with SocketChanged, address
changes into its own address table (and back to the Node as netlink would echo them), adverts delivered to
every other host on the LAN. Nothing here sleeps: `Lan.run_until(t)` steps the clock from deadline to deadline.
"""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface, ip_interface

from vrrpd.config import parse
from vrrpd.core import events as n
from vrrpd.core.node import Node
from vrrpd.core.fsm import State


def config(instances: str, extra: str = ""):
    return parse(extra + instances, "t.toml")


class Raw(str):
    """A TOML value written as is (an inline table, say)."""


def instance(name="VI_1", vrid=51, priority=100, vips=("192.0.2.100/24",), interval=1.0, **kw) -> str:
    lines = [f'name = "{name}"', 'interface = "eth0"', f"vrid = {vrid}", f"priority = {priority}",
             f"advert_interval = {interval}", "virtual_ipaddress = [" + ", ".join(f'"{v}"' for v in vips) + "]"]
    for key, value in kw.items():
        if isinstance(value, Raw):
            pass
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str):
            value = f'"{value}"'
        elif isinstance(value, (list, tuple)):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        lines.append(f"{key} = {value}")
    return "[[instance]]\n" + "\n".join(lines) + "\n\n"


class Host:
    """One daemon's Node plus the kernel state it would see: interfaces, addresses, open sockets."""

    def __init__(self, lan: Lan | None, name: str, cfg, address: str = "192.0.2.1/24",
                 ifname: str = "eth0", index: int = 2, up: bool = True, link_local: str | None = "fe80::1/64"):
        self.lan = lan
        self.name = name
        self.node = Node(cfg, lan.now if lan else 0.0)
        self.index = {ifname: index} if index else {}
        self.up = {ifname: up}
        self.macs: dict[str, str] = {}  # interfaces with a MAC of their own (a macvlan's)
        self.addresses: dict[str, dict] = {ifname: {}}
        self.sockets: dict[tuple[str, str], int] = {}
        self.effects: list[n.Routed] = []  # everything the Node ever asked for, in order
        self.sent: list[tuple[float, n.Transmit]] = []
        self.failing_sends = 0
        self.feed_all(self.node_facts(ifname, address, link_local))
        if lan is not None:
            lan.hosts.append(self)

    @property
    def now(self) -> float:
        return self.lan.now if self.lan else 0.0

    def node_facts(self, ifname, address, link_local) -> list:
        events = [self.link_event(ifname)]
        for text in (address, link_local):
            if text and ifname in self.index:
                iface = ip_interface(text)
                self.addresses[ifname][iface.ip] = iface
                events.append(n.AddressChanged(ifname, iface, True))
        return events

    def link_event(self, ifname: str) -> n.LinkChanged:
        index = self.index.get(ifname)
        return n.LinkChanged(ifname, index, self.up.get(ifname, False) and index is not None,
                             self.macs.get(ifname, f"02:00:00:00:00:{index or 0:02x}"))

    def feed(self, event) -> list[n.Routed]:
        return self.feed_all([event])

    def feed_all(self, events) -> list[n.Routed]:
        out: list[n.Routed] = []
        pending = list(events)
        while pending:
            routed = self.node.handle(pending.pop(0), self.now)
            out += routed
            pending += self.carry_out(routed)
        return out

    def carry_out(self, routed: list[n.Routed]) -> list:
        """What the runtime and the kernel do with the effects; returns the events they cause."""
        self.effects += routed
        events = []
        for router, effect in routed:
            match effect:
                case n.OpenSocket(ifname=ifname, family=family):
                    index = self.index.get(ifname)
                    if index is None:
                        events.append(n.SocketChanged(ifname, family, None, "no such device"))
                    else:
                        self.sockets[(ifname, family)] = index
                        events.append(n.SocketChanged(ifname, family, index))
                case n.CloseSocket(ifname=ifname, family=family):
                    self.sockets.pop((ifname, family), None)
                case n.SetUpVmac(name=name, mac=mac, create=create):
                    if create:  # the kernel makes it (index after every other), up, with that MAC
                        self.index[name] = max(self.index.values(), default=1) + 1
                        self.macs[name] = mac
                        self.addresses[name] = {}
                    self.up[name] = True
                    events.append(self.link_event(name))
                case n.TearDownVmac(name=name, delete=True):
                    self.index.pop(name, None)
                    self.addresses.pop(name, None)
                    events.append(self.link_event(name))
                case n.AddAddresses(ifname=ifname, addresses=addresses):
                    for a in addresses:
                        if a.ip in self.addresses.setdefault(ifname, {}):
                            events.append(n.EffectFailed(router, n.AddAddresses(ifname, (a,)), "exists", True))
                        else:
                            self.addresses[ifname][a.ip] = a
                            events.append(n.AddressChanged(ifname, a, True))
                case n.RemoveAddresses(ifname=ifname, addresses=addresses):
                    for a in addresses:
                        if self.addresses.get(ifname, {}).pop(a.ip, None) is not None:
                            events.append(n.AddressChanged(ifname, a, False))
                case n.Transmit():
                    if self.failing_sends:
                        self.failing_sends -= 1
                        events.append(n.EffectFailed(router, effect, "ENOBUFS"))
                    elif self.sockets.get((effect.ifname, effect.family)) == self.index.get(effect.ifname) \
                            and self.up.get(effect.ifname):
                        self.sent.append((self.now, effect))
                        if self.lan is not None:
                            self.lan.deliver(self, effect)
        return events

    # -- the host's life ---------------------------------------------------------------------------------------

    def set_link(self, up: bool, ifname: str = "eth0") -> list[n.Routed]:
        self.up[ifname] = up
        return self.feed(self.link_event(ifname))

    def delete_interface(self, ifname: str = "eth0") -> list[n.Routed]:
        self.index.pop(ifname, None)
        self.addresses[ifname] = {}
        self.sockets = {k: v for k, v in self.sockets.items() if k[0] != ifname}
        return self.feed(self.link_event(ifname))

    def create_interface(self, index: int, ifname: str = "eth0", address: str | None = None,
                         link_local: str | None = None) -> list[n.Routed]:
        self.index[ifname] = index
        self.up[ifname] = True
        self.addresses[ifname] = {}
        return self.feed_all(self.node_facts(ifname, address, link_local))

    def add_address(self, text: str, ifname: str = "eth0", flags: int = 0) -> list[n.Routed]:
        iface = ip_interface(text)
        self.addresses.setdefault(ifname, {})[iface.ip] = iface
        return self.feed(n.AddressChanged(ifname, iface, True, flags))

    def remove_address(self, text: str, ifname: str = "eth0") -> list[n.Routed]:
        iface = ip_interface(text)
        self.addresses.get(ifname, {}).pop(iface.ip, None)
        return self.feed(n.AddressChanged(ifname, iface, False))

    def start(self) -> list[n.Routed]:
        return self.feed(n.Start())

    def stop(self) -> list[n.Routed]:
        return self.feed(n.Stop())

    def holds(self, vip: str, ifname: str = "eth0") -> bool:
        return ip_interface(vip).ip in self.addresses.get(ifname, {})

    def state(self, name: str = "VI_1") -> State:
        return self.node.router(name).fsm.state

    def transitions(self) -> list[tuple[str, str, str]]:
        return [(e.effect.name, e.effect.old.value, e.effect.new.value) for e in self.effects
                if isinstance(e.effect, n.StateChanged)]

    def of_type(self, kind) -> list:
        return [e.effect for e in self.effects if isinstance(e.effect, kind)]


class Lan:
    """Hosts whose adverts reach one another at once, on one link, while their link is up."""

    def __init__(self):
        self.hosts: list[Host] = []
        self.now = 0.0
        self.cut: set[str] = set()  # hosts whose adverts neither leave nor arrive (a partition)
        self.blocked: set[tuple[str, str]] = set()  # (sender, receiver): one direction of a partition

    def deliver(self, sender: Host, tx: n.Transmit) -> None:
        if sender.name in self.cut:
            return
        for other in self.hosts:
            if other is sender or other.name in self.cut or not other.up.get(tx.ifname):
                continue
            if (sender.name, other.name) in self.blocked:
                continue
            if other.sockets.get((tx.ifname, tx.family)) != other.index.get(tx.ifname):
                continue  # a stale socket hears nothing
            for dst, payload in tx.packets:
                if tx.header_included:  # a whole IPv4 datagram with AH, as the AH socket hands it over
                    header_len = (payload[0] & 0x0F) * 4
                    routed = other.node.receive_ah(tx.ifname, payload[header_len:], payload[:header_len], tx.src,
                                                   dst, payload[8], self.now)
                else:
                    routed = other.node.receive(tx.ifname, tx.family, payload, tx.src, dst, 255, self.now)
                other.feed_all(other.carry_out(routed))

    def run_until(self, end: float) -> None:
        for _ in range(100_000):  # bounded: a runaway exchange fails the test instead of hanging it
            due = [(d, i) for i, h in enumerate(self.hosts) if (d := h.node.next_deadline()) is not None]
            if not due or min(due)[0] > end:
                self.now = end
                return
            self.now, i = min(due)
            host = self.hosts[i]
            host.feed_all(host.carry_out(host.node.handle_timer(self.now)))
        raise AssertionError("the LAN never went quiet: an unbounded exchange of effects")


def v4(text: str) -> IPv4Interface:
    return IPv4Interface(text)


def v6(text: str) -> IPv6Interface:
    return IPv6Interface(text)
