"""RFC 5798 6.1 Accept_Mode as nftables rules: the table an instance with accept_mode = false owns, as text.

RFC 5798 6.4.3: a master that is not the address owner MUST NOT accept packets addressed to the virtual
addresses unless Accept_Mode is True (keepalived's default is to accept them, as vrrpd's; its vrrp_strict /
no_accept drops them). The addresses stay on the interface: ARP and neighbour discovery (RFC 5798 6.4.3:
MUST respond to ARP requests / NS for them) still work, only the packets for the host itself are dropped.

One nftables table per instance, named after what identifies it, created and replaced in one transaction,
deleted with the instance; no other table is ever touched. `nft -f -` runs the scripts (`vrrpd.io.nftables`).
"""

from __future__ import annotations

import re

from vrrpd.config import Instance

TABLE_PREFIX = "vrrpd_"
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


def wants_rules(instance: Instance) -> bool:
    """An address owner always accepts (RFC 5798 6.1); the others only with accept_mode."""
    return not instance.accept_mode and instance.priority != 255


def table_name(instance: Instance) -> str:
    """`vrrpd_<vrid>_<family>_<interface>`: what identifies a virtual router (SPEC 4), as an nft identifier."""
    return f"{TABLE_PREFIX}{instance.vrid}_{instance.family}_{_NOT_IN_NAME.sub('_', instance.interface)}"


def rules(instance: Instance) -> str:
    """The nft script that makes (or replaces, atomically) the instance's table: drop what is addressed to its
    addresses, advertised and excluded, IPv4 and IPv6; neighbour discovery excepted."""
    name = table_name(instance)
    v4 = sorted(str(a.ip) for a in instance.addresses if a.version == 4)
    v6 = sorted(str(a.ip) for a in instance.addresses if a.version == 6)
    lines = [f"add table inet {name}", f"delete table inet {name}", f"table inet {name} {{", "  chain input {",
             "    type filter hook input priority filter - 10; policy accept;"]
    if v6:
        lines.append(f"    ip6 daddr {{ {', '.join(v6)} }} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} "
                     "accept")
        lines.append(f"    ip6 daddr {{ {', '.join(v6)} }} drop")
    if v4:
        lines.append(f"    ip daddr {{ {', '.join(v4)} }} drop")
    return "\n".join(lines + ["  }", "}"]) + "\n"


def removal(name: str) -> str:
    """The script that deletes table `name` whether or not it exists."""
    return f"add table inet {name}\ndelete table inet {name}\n"
