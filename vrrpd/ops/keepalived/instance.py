"""The keepalived importer's vrrp_instance keywords and block items, each turned into vrrpd instance keys
or a `# not carried` note."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from daemonkit.tomlwrite import toml_value
from vrrpd import config
from vrrpd.ops.keepalived.parse import Stmt
from vrrpd.ops.keepalived.tables import NOTIFY, Table, Track, parse_weight, ranged

if TYPE_CHECKING:
    from vrrpd.ops.keepalived.convert import Converter


def instance_keyword(conv: Converter, t: Table, sub: Stmt, state: dict) -> None:
    kw, args = sub.keyword, sub.words[1:]
    one = args[0] if len(args) == 1 and sub.block is None else None
    if kw == "state" and one in ("MASTER", "BACKUP"):
        t.note(f"keepalived: state {one} (line {sub.line}): vrrpd has no initial state; every instance starts "
               "as BACKUP and the election decides (priority 255, the address owner, takes over at once)")
    elif kw == "interface" and one and config.is_interface_name(one):
        t.values["interface"] = one
    elif kw == "virtual_router_id" and ranged(one, 1, 255, True):
        t.values["vrid"] = int(one)
    elif kw == "priority" and ranged(one, 1, 255, True):
        t.values["priority"] = int(one)
    elif kw == "advert_int" and ranged(one, 0.001, 255):
        state["advert_int"] = float(one)
    elif kw == "version" and one in ("2", "3"):
        state["version"] = int(one)
    elif kw in ("nopreempt", "no_preempt") and not args:
        state["nopreempt"] = True
    elif kw == "preempt" and not args:
        pass  # keepalived's default, kept for backwards compatibility
    elif kw == "preempt_delay" and ranged(one, 0, config.MAX_PREEMPT_DELAY) is not None:
        t.values["preempt_delay"] = float(one)
    elif kw == "unicast_src_ip" and one and config.ip_address_or_none(one):
        t.values["unicast_src"] = one
    elif kw == "mcast_src_ip" and one and config.ip_address_or_none(one):
        state["mcast_src_ip"] = (one, sub)  # which key it is depends on unicast_peer: settled at the end
    elif kw == "unicast_ttl" and ranged(one, 1, 255, True):
        state["unicast_ttl"] = (int(one), sub)
    elif kw == "dont_track_primary" and not args:
        t.values["dont_track_primary"] = True
    elif kw == "use_vmac" and len(args) <= 1 and sub.block is None:
        if args and not config.is_interface_name(args[0]):
            return t.lost(sub, f"{args[0]!r} is not a Linux interface name")
        t.values["use_vmac"] = args[0] if args else True
    elif kw == "vmac_xmit_base" and not args:
        t.values["vmac_xmit_base"] = True
    elif kw in ("accept", "no_accept") and not args:
        t.values["accept_mode"] = kw == "accept"
    elif kw == "garp_master_repeat" and ranged(one, 0, config.MAX_GARP_REPEAT, True) is not None:
        t.values["garp_repeat"] = int(one)
    elif kw == "garp_master_refresh" and ranged(one, 0, config.MAX_GARP_REFRESH) is not None:
        t.values["garp_refresh"] = float(one)
    elif kw in GARP_KEYS and garp_value(kw, one) is not None:
        t.values[kw] = garp_value(kw, one)
    elif kw in NOTIFY and args and sub.block is None:
        _notify(t, sub)
    elif kw in ("track_file", "track_process") and sub.block is not None:
        for item in sub.block:
            weight = parse_weight(item.words[2:]) if item.words[1:2] == ["weight"] else None
            if item.block is not None or (item.words[1:] and weight is None):
                t.lost(item, "vrrpd has no reverse weights" if "reverse" in item.words else "")
            else:
                t.refs.setdefault(kw, []).append((item, weight))
    elif kw in BLOCK_ITEM and sub.block is not None:
        for item in sub.block:
            BLOCK_ITEM[kw](conv, t, item)
    elif kw == "authentication" and sub.block is not None:
        state["authentication"] = sub
        _authentication(t, sub)
    else:
        t.lost(sub)


def _authentication(t: Table, sub: Stmt) -> None:
    """keepalived's authentication block: auth_type PASS | AH and auth_pass, of which it uses 8 bytes."""
    for item in sub.block:
        words = item.words[1:]
        if item.keyword == "auth_type" and words in (["PASS"], ["AH"]) and item.block is None:
            t.values["auth_type"] = words[0]
        elif item.keyword == "auth_pass" and len(words) == 1 and words[0] and item.block is None:
            password = words[0]
            if len(password.encode()) > config.AUTH_PASS_MAX:
                password = password.encode()[:config.AUTH_PASS_MAX].decode(errors="ignore")
                t.note(f"keepalived: auth_pass (line {item.line}) is longer than {config.AUTH_PASS_MAX} bytes; "
                       "keepalived uses its first 8, and so does this", "auth_pass")
            t.values["auth_pass"] = password
        else:
            t.lost(item)


def finish_auth(t: Table, version: int, block: Stmt | None) -> None:
    """keepalived drops authentication it cannot use (VRRPv3, or a type without a password): said, not kept."""
    kind, password = t.values.get("auth_type"), t.values.get("auth_pass")
    if kind is None and password is None:
        return
    if version == 3 or kind is None or password is None:
        why = ("keepalived ignores authentication with VRRPv3" if version == 3
               else "keepalived ignores an authentication block without both auth_type and auth_pass")
        t.lost(block, why)
        t.values.pop("auth_type", None)
        t.values.pop("auth_pass", None)
        return
    t.note("keepalived: authentication is RFC 2338 compatibility, not security: PASS sends the password in "
           "clear, and AH's key is that same password", "auth_type")


def finish_sources(t: Table, state: dict) -> None:
    """keepalived's mcast_src_ip is the source of every advert: of unicast ones too when unicast_src_ip is not
    set; unicast_ttl counts only for unicast."""
    unicast = "unicast_peers" in t.values
    if "mcast_src_ip" in state:
        address, stmt = state["mcast_src_ip"]
        if not unicast:
            t.values["mcast_src_ip"] = address
        elif "unicast_src" not in t.values:
            t.values["unicast_src"] = address
            t.note(f"keepalived: mcast_src_ip {address} (line {stmt.line}): with unicast_peer, the source of the "
                   "unicast adverts", "unicast_src")
        else:
            t.lost(stmt, "unicast_src_ip is the source of this instance's unicast adverts")
    if "unicast_ttl" in state:
        ttl, stmt = state["unicast_ttl"]
        if unicast:
            t.values["unicast_ttl"] = ttl
        else:
            t.lost(stmt, "keepalived uses it for unicast adverts only, and this instance sends multicast")


def _notify(t: Table, sub: Stmt) -> None:
    command = sub.words[1]
    if sub.words[2:]:
        t.note(f"not carried: user {' '.join(sub.words[2:])} of {sub.keyword} (line {sub.line}): "
               "vrrpd runs notify commands as its own user", sub.keyword)
    try:
        ok = bool(shlex.split(command))
    except ValueError:
        ok = False
    if ok:
        t.values[sub.keyword] = command
    else:
        t.lost(sub, "vrrpd cannot split it into arguments")


def _vip(conv: Converter, t: Table, item: Stmt) -> None:
    vip = config.parse_vip(item.words[0]) if item.block is None else "a block"
    if isinstance(vip, str):
        return t.lost(item, vip)
    vips = t.values.setdefault("virtual_ipaddress", [])
    first = config.parse_vip(vips[0]) if vips else vip
    if first.version != vip.version:
        return t.lost(item, f"an IPv{vip.version} address in an IPv{first.version} instance: put it in an "
                            "instance of its own")
    owner = next((other.name for other in conv.instances
                  for text in other.values.get("virtual_ipaddress", []) if config.parse_vip(text).ip == vip.ip), None)
    if owner is not None:
        return t.lost(item, f"{vip.ip} is already an address of {owner}" if owner != t.name else "listed twice")
    options = item.words[1:]
    dev = options[options.index("dev") + 1] if "dev" in options[:-1] else None
    if dev and dev != t.values.get("interface", dev):
        t.note(f"not carried: {item.brief()}: vrrpd adds every address on the instance's interface",
               "virtual_ipaddress")
    elif options:
        t.note(f"not carried: options of {item.brief()}: {' '.join(options)}", "virtual_ipaddress")
    vips.append(item.words[0])


def _peer(conv: Converter, t: Table, item: Stmt) -> None:
    if item.block is not None or not config.ip_address_or_none(item.words[0]):
        return t.lost(item)
    t.values.setdefault("unicast_peers", []).append(item.words[0])
    if item.words[1:]:
        t.note(f"not carried: options of {item.brief()}: {' '.join(item.words[1:])}", "unicast_peers")


def _track_interface(conv: Converter, t: Table, item: Stmt) -> None:
    name, rest = item.words[0], item.words[1:]
    weight = 0
    if rest[:1] == ["weight"] and len(rest) == 2 and ranged(rest[1], config.MIN_WEIGHT, config.MAX_WEIGHT, True) \
            is not None:
        weight = int(rest[1])
    elif rest or item.block is not None:
        return t.lost(item, "vrrpd has no reverse weights" if "reverse" in rest else "")
    if not config.is_interface_name(name):
        return t.lost(item)
    if name == t.values.get("interface"):
        return t.lost(item, "vrrpd always tracks the instance's own interface (link down means FAULT)")
    t.values.setdefault("track_interface", []).append({"name": name, "weight": weight})


def _track_script(conv: Converter, t: Table, item: Stmt) -> None:
    rest = item.words[1:]
    if rest in ([], ["noreverse"], ["no_reverse"]):
        weight = None
    elif rest[:1] == ["weight"] and len(rest) in (2, 3) and rest[2:] in ([], ["noreverse"], ["no_reverse"]) \
            and ranged(rest[1], config.MIN_WEIGHT, config.MAX_WEIGHT, True) is not None:
        weight = int(rest[1])
    else:
        return t.lost(item, "vrrpd has no reverse weights" if "reverse" in rest else "")
    t.tracks.append(Track(item.words[0], weight, item))


GARP_KEYS = {  # keepalived instance keyword -> (low, high, type): the same name in vrrpd
    "garp_master_delay": (0, config.MAX_GARP_DELAY, float),
    "garp_master_refresh_repeat": (1, config.MAX_GARP_REPEAT, int),
    "garp_lower_prio_repeat": (0, config.MAX_GARP_REPEAT, int),
}
# global_defs keywords that set every instance's default (an instance's own keyword wins), by vrrpd key
GLOBAL_GARP = {"vrrp_garp_master_delay": "garp_master_delay", "vrrp_garp_master_repeat": "garp_repeat",
                "vrrp_garp_master_refresh": "garp_refresh", "vrrp_garp_master_refresh_repeat":
                "garp_master_refresh_repeat", "vrrp_garp_lower_prio_repeat": "garp_lower_prio_repeat",
                "vrrp_garp_interval": "garp_interval", "vrrp_gna_interval": "gna_interval"}
GARP_RANGES = {"garp_repeat": (0, config.MAX_GARP_REPEAT, int), "garp_refresh": (0, config.MAX_GARP_REFRESH, float),
                "garp_interval": (0, config.MAX_GARP_INTERVAL, float),
                "gna_interval": (0, config.MAX_GARP_INTERVAL, float), **GARP_KEYS}


def garp_value(key: str, word: str | None) -> int | float | None:
    low, high, kind = GARP_RANGES[key]
    value = ranged(word, low, high, kind is int)
    return None if value is None else kind(value)


def _excluded(conv: Converter, t: Table, item: Stmt) -> None:
    """virtual_ipaddress_excluded: moved with the VIPs, not advertised; of either family."""
    vip = config.parse_vip(item.words[0]) if item.block is None else "a block"
    if isinstance(vip, str):
        return t.lost(item, vip)
    taken = {config.parse_vip(text).ip for inst in conv.instances
             for key in ("virtual_ipaddress", "virtual_ipaddress_excluded") for text in inst.values.get(key, [])}
    if vip.ip in taken:
        return t.lost(item, f"{vip.ip} is already an address of an instance")
    if item.words[1:]:
        t.note(f"not carried: options of {item.brief()}: {' '.join(item.words[1:])}", "virtual_ipaddress_excluded")
    t.values.setdefault("virtual_ipaddress_excluded", []).append(item.words[0])


_ROUTE_WORDS = {"src": "src", "via": "via", "gw": "via", "dev": "dev", "table": "table", "metric": "metric",
                "scope": "scope", "to": "to"}
_RULE_WORDS = {"from": "from", "to": "to", "table": "table", "lookup": "table", "priority": "priority",
               "preference": "priority", "pref": "priority", "iif": "iif", "oif": "oif"}


def _route(conv: Converter, t: Table, item: Stmt) -> None:
    """A virtual_routes line as keepalived reads it: [src A] [to] PREFIX [via|gw A] [dev IF] [scope S]
    [table T] [metric M], or blackhole / unreachable / prohibit PREFIX."""
    route, words = {}, list(item.words)
    if words and words[0] in ("blackhole", "unreachable", "prohibit"):
        route["type"] = words.pop(0)
    while words:
        word = words.pop(0)
        if word in _ROUTE_WORDS and words:
            route[_ROUTE_WORDS[word]] = words.pop(0)
        elif word == "or" and words and "via" in route:  # keepalived's multipath: via A or B
            route["via"] = [*([route["via"]] if isinstance(route["via"], str) else route["via"]), words.pop(0)]
        elif "to" not in route:
            route["to"] = word
        else:
            return t.lost(item, f"vrrpd has no route option {word!r}")
    _entry(t, item, "virtual_routes", route, ("table", "metric"))


def _rule(conv: Converter, t: Table, item: Stmt) -> None:
    """A virtual_rules line: from P [to P] [iif IF] [oif IF] [priority N] table T."""
    rule, words = {}, list(item.words)
    while words:
        word = words.pop(0)
        if word in _RULE_WORDS and words:
            rule[_RULE_WORDS[word]] = words.pop(0)
        else:
            return t.lost(item, f"vrrpd has no rule option {word!r}")
    for key in ("from", "to"):
        if rule.get(key) == "all":
            del rule[key]
    _entry(t, item, "virtual_rules", rule, ("table", "priority"))


def _entry(t: Table, item: Stmt, key: str, entry: dict, numbers: tuple[str, ...]) -> None:
    """Add one route or rule if vrrpd takes it as it stands, else say why not."""
    for name in numbers:
        if name in entry:
            if not entry[name].isdigit():
                return t.lost(item, f"{name} {entry[name]!r} is not a number")
            entry[name] = int(entry[name])
    for name in ("to", "from"):
        if name in entry and "/" not in entry[name]:  # keepalived takes a bare address as a host route
            entry[name] += "/32" if ":" not in entry[name] else "/128"
    probe = f'[[instance]]\nname = "x"\ninterface = "eth0"\nvrid = 1\nvirtual_ipaddress = ["192.0.2.1"]\n' \
            f"{key} = [{toml_value(entry)}]\n"
    try:
        config.parse(probe)
    except config.ConfigError as exc:
        return t.lost(item, exc.problems[0].message)
    t.values.setdefault(key, []).append(entry)


BLOCK_ITEM = {"virtual_ipaddress": _vip, "unicast_peer": _peer, "track_interface": _track_interface,
               "track_script": _track_script, "virtual_ipaddress_excluded": _excluded, "virtual_routes": _route,
               "virtual_rules": _rule}
