"""An instance's virtual_routes and virtual_rules (keepalived's): checked at load like the rest of vrrpd.config.

They are installed when the instance becomes master, after its addresses (a route may name a VIP as its
source), and removed before them when it leaves MASTER.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from daemonkit.net import Address, ip_address_or_none
from daemonkit.tomlcheck import Table, describe, quote

Network = IPv4Network | IPv6Network
SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}  # rtnetlink's RT_SCOPE_*
ROUTE_TYPES = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}  # rtnetlink's RTN_*
MAX_U32 = 0xFFFFFFFF
RESERVED_TABLES = {0, 253, 254, 255}  # unspec, default, main, local: not a VIP's to fill or empty
MAX_ROUTES = 1000


@dataclass(frozen=True, slots=True)
class Route:
    to: Network
    via: Address | None = None
    dev: str | None = None  # None: the instance's interface
    src: Address | None = None
    table: int | None = None  # None: main
    metric: int | None = None
    scope: str | None = None  # None: the kernel's choice (link without via, global with)
    type: str = "unicast"  # or blackhole, unreachable, prohibit (no next hop, no device)
    also_via: tuple[Address, ...] = ()  # more next hops: a multipath route (via = [a, b], keepalived's "or")

    @property
    def family(self) -> int:
        return self.to.version

    def __str__(self) -> str:
        via = " or ".join(map(str, (self.via, *self.also_via))) if self.via is not None else None
        parts = ([self.type] if self.type != "unicast" else []) + [str(self.to)] + [f"{k} {v}" for k, v in (("via", via), ("dev", self.dev), ("src", self.src),
                                                          ("table", self.table), ("metric", self.metric),
                                                          ("scope", self.scope)) if v is not None]
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Rule:
    table: int
    from_: Network | None = None
    to: Network | None = None
    priority: int | None = None
    iif: str | None = None
    oif: str | None = None

    @property
    def family(self) -> int:
        return (self.from_ or self.to).version

    def __str__(self) -> str:
        parts = [f"{k} {v}" for k, v in (("from", self.from_), ("to", self.to), ("iif", self.iif),
                                         ("oif", self.oif), ("priority", self.priority)) if v is not None]
        return " ".join(parts + [f"table {self.table}"])


def network(text: str) -> Network | str:
    """ADDRESS[/PREFIX] as a network (host bits must be clear); a str explains a bad one."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        return f"{quote(text)} is not a network (ADDRESS/PREFIX with the host bits clear): {exc}"


def routes(t: Table, is_interface_name) -> tuple[Route, ...]:
    return tuple(_entries(t, "virtual_routes", ("to", "via", "dev", "src", "table", "metric", "scope", "type"),
                          lambda sub: _route(sub, is_interface_name), '{ to = "198.51.100.0/24", via = "192.0.2.254" }'))


def rules(t: Table, is_interface_name) -> tuple[Rule, ...]:
    return tuple(_entries(t, "virtual_rules", ("from", "to", "table", "priority", "iif", "oif"),
                          lambda sub: _rule(sub, is_interface_name), '{ from = "192.0.2.100/32", table = 100 }'))


def _entries(t: Table, key: str, known: tuple[str, ...], check, example: str) -> list:
    items = t.get(key, "an array", [])
    out: list = []
    if items is not None and len(items) > MAX_ROUTES:
        t.problem(key, f"at most {MAX_ROUTES} entries")
        return out
    for index, item in enumerate(items or []):
        if not isinstance(item, dict):
            t.problem(key, f"elements must be tables like {example}, not {describe(item)}", (index,))
            continue
        sub = t.findings.table(t.where + (key, index), f"{t.label}.{key}", item)
        sub.only(known)
        value = check(sub)
        if sub.bad or value is None:
            t.bad = True
        elif value in out:
            t.problem(key, f"{value} is listed twice", (index,))
        else:
            out.append(value)
    return out


def _address(sub: Table, key: str) -> Address | None:
    text = sub.text(key, None)
    if text is None:
        return None
    address = ip_address_or_none(text.strip())
    if address is None:
        sub.problem(key, f"{quote(text)} is not an IP address")
    return address


def _interface(sub: Table, key: str, is_interface_name) -> str | None:
    name = sub.text(key, None)
    if name is not None and not is_interface_name(name):
        sub.problem(key, f"not a Linux interface name: {quote(name)}")
        return None
    return name


def _route(sub: Table, is_interface_name) -> Route | None:
    text = sub.text("to")
    to = network(text) if text is not None else None
    if isinstance(to, str):
        sub.problem("to", to)
        to = None
    hops = _next_hops(sub)
    via, src = (hops[0] if hops else None), _address(sub, "src")
    for key, address in [("via", hop) for hop in hops] + [("src", src)]:
        if to is not None and address is not None and address.version != to.version:
            sub.problem(key, f"{address} is IPv{address.version} but the route to {to} is IPv{to.version}")
    dev = _interface(sub, "dev", is_interface_name)
    table = sub.integer("table", 1, MAX_U32, None)
    if table in (253, 255, 0):
        sub.problem("table", f"table {table} is the kernel's (default or local); use main (no table) or your own")
    metric = sub.integer("metric", 0, MAX_U32, None)
    scope = sub.choice("scope", tuple(SCOPES), None)
    kind = sub.choice("type", tuple(ROUTE_TYPES), "unicast")
    if kind not in (None, "unicast") and (via is not None or dev is not None):
        sub.problem("type", f"a {kind} route has no next hop and no device: remove via and dev")
    if sub.bad or to is None:
        return None
    return Route(to, via, dev, src, table if table != 254 else None, metric, scope, kind, tuple(hops[1:]))


def _next_hops(sub: Table) -> list[Address]:
    """`via`: one next hop, or an array of them (a multipath route)."""
    if isinstance(sub.data.get("via"), list):
        hops = []
        for index, text in sub.strings("via") or []:
            address = ip_address_or_none(text.strip())
            if address is None:
                sub.problem("via", f"{quote(text)} is not an IP address", (index,))
            elif address in hops:
                sub.problem("via", f"{address} is listed twice", (index,))
            else:
                hops.append(address)
        if not hops and not sub.bad:
            sub.problem("via", "must list at least one next hop")
        return hops
    via = _address(sub, "via")
    return [via] if via is not None else []


def _rule(sub: Table, is_interface_name) -> Rule | None:
    selectors = {}
    for key in ("from", "to"):
        text = sub.text(key, None)
        value = network(text) if text is not None else None
        if isinstance(value, str):
            sub.problem(key, value)
            value = None
        selectors[key] = value
    if "from" not in sub.data and "to" not in sub.data:
        sub.problem(None, "needs from or to (the rule's family comes from them)")
    if selectors["from"] is not None and selectors["to"] is not None \
            and selectors["from"].version != selectors["to"].version:
        sub.problem("to", f"{selectors['to']} and from {selectors['from']} are of different families")
    table = sub.integer("table", 1, MAX_U32)
    if table in RESERVED_TABLES:
        sub.problem("table", f"table {table} is the kernel's (default, main or local); use a table of your own")
    priority = sub.integer("priority", 1, MAX_U32 - 1, None)
    iif, oif = _interface(sub, "iif", is_interface_name), _interface(sub, "oif", is_interface_name)
    if sub.bad:
        return None
    return Rule(table, selectors["from"], selectors["to"], priority, iif, oif)
