"""Which node serves a context (SPEC section 6), as pure functions: no store, no socket, no clock.

`route` takes steps 1-3 from what a node knows without the store (the HAID, its own alias, the cluster map
and the addresses on its interfaces); `ownership` takes step 4 once the store has named the owner:

1. malformed HAID: 400;
2. this node is neither the primary P nor the backup B: 421;
3. P's VIP is not on a local interface: 421, VRRP put it elsewhere and that node serves (a node whose own
   alias has no VIP runs standalone and skips this check);
4. the store names another owner: adopt (owner = me, epoch + 1) before serving.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from csserver.config import ClusterConfig
from csserver.haid import Haid, MalformedHaid, decode

Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Malformed:
    detail: str
    status: int = 400


@dataclass(frozen=True)
class Misdirected:
    """Not this node's to serve; `vip` is where the client should go (None when the cluster names none)."""

    haid: Haid
    vip: Address | None
    detail: str
    status: int = 421


@dataclass(frozen=True)
class Serve:
    """This node serves the context (after adopting it when `ownership` says so)."""

    haid: Haid


@dataclass(frozen=True)
class Adopt:
    """The store names `previous_owner`; this node must take the context over before serving it."""

    previous_owner: str


def route(text: str, me: str, cluster: ClusterConfig, local: Container[Address]) -> Malformed | Misdirected | Serve:
    """Steps 1-3 for a request naming HAID `text` arriving at node `me`, whose interfaces hold `local`."""
    try:
        haid = decode(text)
    except MalformedHaid as exc:
        return Malformed(f"malformed HAID: {exc}")
    vip = cluster.vip(haid.primary)
    if me not in (haid.primary, haid.backup):
        return Misdirected(haid, vip, f"{me} is neither the primary ({haid.primary}) nor the backup "
                                      f"({haid.backup}) of this context")
    if cluster.vip(me) is None:
        return Serve(haid)  # standalone: no VRRP to tell us who holds what
    if vip is None:
        return Misdirected(haid, None, f"the cluster names no VIP for the primary {haid.primary}")
    if vip not in local:
        return Misdirected(haid, vip, f"{vip}, the VIP of {haid.primary}, is not on this node")
    return Serve(haid)


def ownership(me: str, owner: str) -> Adopt | None:
    """Step 4: None when `me` already owns the context, else Adopt from the owner the store names."""
    return None if owner == me else Adopt(owner)


def creation_primary(me: str, cluster: ClusterConfig, arrived_on: Address | None) -> str:
    """The primary of a context created by a request that reached `me` on local address `arrived_on`.

    A request that came in on another alias's VIP (which this node holds because that node is down, so it
    must be its backup) creates a context of that alias: the client chose that VIP. Otherwise `me`."""
    if arrived_on is None:
        return me
    alias = cluster.alias_of_vip(arrived_on)
    if alias is not None and alias != me and cluster.backup_of(alias) == me:
        return alias
    return me
