"""The instance keys operators bring from keepalived (SPEC 3): VMAC, accept mode, authentication, GARP timing,
sources and TTL, excluded addresses, routes and rules; checked at load like the rest of vrrpd.config."""

from __future__ import annotations

from daemonkit.net import Address
from daemonkit.tomlcheck import Table, describe, quote
from vrrpd.config_routing import routes as _routes, rules as _rules
from vrrpd.config_values import is_interface_name, parse_vip, peer_address

MAX_GARP_REPEAT = 100
MAX_GARP_REFRESH = 86400.0
MAX_GARP_DELAY = 3600.0
MAX_GARP_INTERVAL = 1.0  # seconds between two frames; more would stretch a takeover's announcements to minutes
AUTH_TYPES = ("none", "PASS", "AH")  # RFC 2338 5.3.6, keepalived's auth_type words
AUTH_PASS_MAX = 8  # RFC 2338 5.3.10: 8 bytes of authentication data


def more(t: Table, family: str | None, peers: tuple, unicast_src: Address | None, vips: set[Address]) -> dict:
    """unicast_ttl, mcast_src_ip, dont_track_primary, virtual_ipaddress_excluded, virtual_routes, virtual_rules."""
    ttl = t.integer("unicast_ttl", 1, 255, 255)
    if "unicast_ttl" in t.data and not peers:
        t.problem("unicast_ttl", "only for unicast adverts: set unicast_peers, or remove it")
    mcast_src = None
    text = t.text("mcast_src_ip", None)
    if text is not None:
        mcast_src = peer_address(t, "mcast_src_ip", text, {"ipv4": 4, "ipv6": 6}.get(family), ())
        if peers or unicast_src is not None:
            t.problem("mcast_src_ip", "the source of multicast adverts; with unicast_src / unicast_peers use "
                                      "unicast_src alone")
    excluded, seen = [], set(vips)
    for index, entry in t.strings("virtual_ipaddress_excluded", []) or []:
        vip = parse_vip(entry)
        if isinstance(vip, str):
            t.problem("virtual_ipaddress_excluded", vip, (index,))
        elif vip.ip in seen:
            t.problem("virtual_ipaddress_excluded", f"{vip.ip} is listed twice (here or in virtual_ipaddress)",
                      (index,))
        else:
            seen.add(vip.ip)
            excluded.append(vip)
    vmac, xmit_base = _vmac(t, family)
    accept = t.get("accept_mode", "a boolean", True)
    if accept is False and t.data.get("priority") == 255:
        t.problem("accept_mode", "an address owner (priority 255) always accepts what is addressed to its "
                                 "addresses (RFC 5798 6.1): remove accept_mode")
    return {"vmac": vmac, "vmac_xmit_base": xmit_base, "accept_mode": accept, "unicast_ttl": ttl,
            "mcast_src_ip": mcast_src,
            "dont_track_primary": t.get("dont_track_primary", "a boolean", False),
            "virtual_ipaddress_excluded": tuple(excluded),
            "virtual_routes": _routes(t, is_interface_name), "virtual_rules": _rules(t, is_interface_name)}


def _vmac(t: Table, family: str | None) -> tuple[str | None, bool]:
    value = t.data.get("use_vmac", False)
    name = None
    if isinstance(value, bool):
        if value:
            vrid = t.data.get("vrid")
            name = f"vrrp{'6' if family == 'ipv6' else ''}.{vrid}"
    elif isinstance(value, str):
        name = t.text("use_vmac")
        if name is not None and not is_interface_name(name):
            t.problem("use_vmac", f"not a Linux interface name: {quote(name)}")
            name = None
    else:
        t.problem("use_vmac", f'must be true, false or the macvlan\'s name ("vrrp.51"), not {describe(value)}')
    if name is not None and name == t.data.get("interface"):
        t.problem("use_vmac", f"{name} is the instance's own interface; the macvlan needs a name of its own")
    xmit_base = t.get("vmac_xmit_base", "a boolean", False)
    if xmit_base and name is None and "use_vmac" not in t.data:
        t.problem("vmac_xmit_base", "only with use_vmac")
    return name, bool(xmit_base)


def garp(t: Table) -> dict:
    """Gratuitous ARP / NA timing, keepalived's keys (garp_master_repeat and garp_master_refresh are the
    keepalived spellings of garp_repeat and garp_refresh: one of each pair)."""
    for ours, theirs in (("garp_repeat", "garp_master_repeat"), ("garp_refresh", "garp_master_refresh")):
        if ours in t.data and theirs in t.data:
            t.problem(theirs, f"the same setting as {ours}: set one of them")
    repeat_key = "garp_master_repeat" if "garp_master_repeat" in t.data else "garp_repeat"
    refresh_key = "garp_master_refresh" if "garp_master_refresh" in t.data else "garp_refresh"
    values = {
        "garp_repeat": t.integer(repeat_key, 0, MAX_GARP_REPEAT, 5),
        "garp_refresh": t.number(refresh_key, 0.0, MAX_GARP_REFRESH, 0.0),
        "garp_master_delay": t.number("garp_master_delay", 0.0, MAX_GARP_DELAY, 5.0),
        "garp_master_refresh_repeat": t.integer("garp_master_refresh_repeat", 1, MAX_GARP_REPEAT, 1),
        "garp_lower_prio_repeat": t.integer("garp_lower_prio_repeat", 0, MAX_GARP_REPEAT, None),
        "garp_interval": t.number("garp_interval", 0.0, MAX_GARP_INTERVAL, 0.0),
        "gna_interval": t.number("gna_interval", 0.0, MAX_GARP_INTERVAL, 0.0),
    }
    for key, name in (("garp_refresh", refresh_key), ("garp_master_delay", "garp_master_delay")):
        if values[key] is not None and 0 < values[key] < 0.01:
            t.problem(name, f"must be 0 (off) or at least 0.01 seconds, not {values[key]:g}")
    return values


def auth(t: Table, version: int | None) -> tuple[str, str]:
    auth_type = t.choice("auth_type", AUTH_TYPES, "none")
    auth_pass = t.text("auth_pass", "", empty_ok=True)
    if auth_type is None or auth_pass is None:
        return "none", ""
    if auth_type != "none" and version == 3:
        t.problem("auth_type", "VRRPv3 has no authentication (RFC 5798 removed it): use version = 2, "
                               "as the keepalived peers that send it do")
    elif auth_type != "none" and not auth_pass:
        t.problem("auth_type", f'"{auth_type}" needs an auth_pass (1..{AUTH_PASS_MAX} bytes)')
    elif auth_type == "none" and auth_pass:
        t.problem("auth_pass", 'set, but auth_type is "none": set auth_type = "PASS" or "AH", or remove it')
    elif len(auth_pass.encode()) > AUTH_PASS_MAX:
        t.problem("auth_pass", f"at most {AUTH_PASS_MAX} bytes (RFC 2338 5.3.10), not {len(auth_pass.encode())}")
    elif not auth_pass.isprintable():
        t.problem("auth_pass", "must be printable characters")
    return auth_type, auth_pass
