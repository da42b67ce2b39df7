"""`vrrpd import-keepalived`: a keepalived.conf's VRRP blocks as vrrpd TOML, every lost setting a comment.

Converts vrrp_instance, vrrp_script and vrrp_sync_group blocks and global_defs' router_id / vrrp_version.
Whatever has no vrrpd equivalent becomes a `# not carried: ...` comment with its line. The result is checked
with `vrrpd.config.parse`; anything it still refuses is commented out with vrrpd's reason, so the output
always parses (unless no instance survives, which `vrrpd check` then says).
"""

from __future__ import annotations

import math
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field

from daemonkit.tomlwrite import toml_value
from vrrpd.ops.keepalived.parse import Stmt, parse_keepalived
from vrrpd import __version__, config

_NOTIFY = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")
_SHELL_SYNTAX = re.compile(r"[<>|&;$`*?()]")  # a script that needs /bin/sh to mean what keepalived ran
_INSTANCE_ORDER = (
    "name", "interface", "vrid", "priority", "version", "advert_interval", "virtual_ipaddress", "preempt",
    "preempt_delay", "unicast_src", "unicast_peers", "garp_repeat", "garp_refresh", "track_interface",
    "track_script", *_NOTIFY, "auth_type", "auth_pass", "unicast_ttl", "mcast_src_ip", "dont_track_primary",
    "virtual_ipaddress_excluded", "virtual_routes", "virtual_rules", "track_file", "track_process", "accept_mode", "use_vmac",
    "vmac_xmit_base",
)  # fmt: skip
# Keys whose loss makes a whole table unusable (the safety net then comments the table out).
_REQUIRED = {"instance": ("name", "interface", "vrid", "virtual_ipaddress"), "script": ("name", "command"),
             "track_file": ("name", "file"), "track_process": ("name", "process"),
             "sync_group": ("name", "instances"), "global": ()}


# ---- the vrrpd tables being built ------------------------------------------------------------------

@dataclass
class _Track:
    script: str
    weight: int | None  # per-instance override
    stmt: Stmt


@dataclass
class _Table:
    kind: str  # "global" | "script" | "instance" | "sync_group"
    name: str | None
    values: dict = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # key -> comments above it; "" -> at the end
    disabled: str | None = None  # why the whole table is commented out
    tracks: list[_Track] = field(default_factory=list)  # an instance's track_script entries, resolved last
    refs: dict[str, list] = field(default_factory=dict)  # track_file / track_process: (stmt, weight), resolved last

    def note(self, text: str, key: str = "") -> None:
        self.notes.setdefault(key, []).append(text)

    def lost(self, stmt: Stmt, why: str = "") -> None:
        if not why and stmt.keyword.startswith("@"):
            why = "conditional configuration; keep the line meant for this host"
        self.note(f"not carried: {stmt.brief()}" + (f": {why}" if why else ""))

    def render(self) -> list[str]:
        order = _INSTANCE_ORDER if self.kind == "instance" else ()
        keys = [k for k in order if k in self.values or k in self.notes]
        keys = list(dict.fromkeys([*keys, *self.values, *(k for k in self.notes if k), ""]))
        lines = ["[global]" if self.kind == "global" else f"[[{self.kind}]]"]
        for key in keys:
            lines += [f"# {_one_line(text)}" for text in self.notes.get(key, [])]
            if key in self.values:
                lines.append(f"{key} = {toml_value(self.values[key])}")
        if self.disabled:
            return [f"# not carried: {_one_line(self.disabled)}"] + [f"# {line}" for line in lines]
        return lines


def _weight(args: list[str]) -> int | None:
    """`weight N` arguments (without reverse, which vrrpd has not) within vrrpd's tracking range."""
    if len(args) != 1:
        return None
    value = _ranged(args[0], -254, 254, True)
    return None if value is None else int(value)


def _one_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _ranged(word: str | None, low: float, high: float, integer: bool = False) -> int | float | None:
    """The number `word` spells when it lies in low..high (an int when `integer`), else None."""
    if word is None:
        return None
    try:
        value = int(word) if integer else float(word)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None


# ---- conversion -------------------------------------------------------------------------------------

class _Converter:
    def __init__(self, path: str):
        self.path = path
        self.top_notes: list[str] = []
        self.global_ = _Table("global", None)
        self.vrrp_version: int | None = None
        self.scripts: dict[str, _Table] = {}
        self.script_reverse: set[str] = set()
        self.instances: list[_Table] = []
        self.groups: list[_Table] = []
        self.trackers: dict[tuple[str, str], _Table] = {}  # (track_file | track_process, name) -> its table
        self.grouped_weights: dict[str, bool] = {}  # instance -> keepalived keeps track weights
        self.instance_defaults: dict[str, tuple[object, str]] = {}  # vrrpd key -> (value, where keepalived set it)
        self.garp_groups: list[tuple[set[str], dict[str, tuple[object, str]]]] = []  # interfaces -> intervals

    def run(self, stmts: list[Stmt]) -> None:
        for stmt in stmts:
            if stmt.keyword == "global_defs" and stmt.block is not None:
                self._global_defs(stmt)
        handlers = {"vrrp_script": self._script, "vrrp_instance": self._instance, "vrrp_sync_group": None,
                    "track_file": self._track_file, "vrrp_track_file": self._track_file,
                    "vrrp_track_process": self._track_process}
        for stmt in stmts:
            if stmt.keyword == "garp_group" and stmt.block is not None and len(stmt.words) == 1:
                self._garp_group(stmt)
            elif stmt.keyword in handlers and stmt.block is not None and len(stmt.words) == 2:
                if handlers[stmt.keyword]:
                    handlers[stmt.keyword](stmt)
            elif stmt.keyword in ("include", "includer", "includem", "includew", "includeb", "includea"):
                self.top_notes.append(f"not carried: {stmt.brief()}: convert that file too and merge it here")
            elif stmt.keyword != "global_defs":
                self.top_notes.append(f"not carried: {stmt.brief()}" + _why_top(stmt))
        for stmt in stmts:  # after every instance is known: groups often come first in keepalived.conf
            if stmt.keyword == "vrrp_sync_group" and stmt.block is not None and len(stmt.words) == 2:
                self._sync_group(stmt)
        self._resolve_weights()
        self._resolve_trackers()
        self._apply_defaults()

    def _garp_group(self, stmt: Stmt) -> None:
        """keepalived's garp_group: garp_interval / gna_interval for the instances on its interface(s)."""
        interfaces: set[str] = set()
        values: dict[str, tuple[object, str]] = {}
        for sub in stmt.block:
            args = sub.words[1:]
            if sub.keyword == "interface" and len(args) == 1:
                interfaces.add(args[0])
            elif sub.keyword == "interfaces" and sub.block is not None:
                interfaces |= {word for item in sub.block for word in item.words}
            elif sub.keyword in ("garp_interval", "gna_interval") and len(args) == 1 \
                    and _garp_value(sub.keyword, args[0]) is not None:
                values[sub.keyword] = (_garp_value(sub.keyword, args[0]), f"garp_group (line {stmt.line})")
            else:
                self.top_notes.append(f"not carried: {sub.brief()}")
        self.garp_groups.append((interfaces, values))

    def _apply_defaults(self) -> None:
        """What keepalived's global_defs and garp_groups set for instances that do not set it themselves.
        keepalived spaces a garp_group's messages over all its interfaces together; vrrpd per instance."""
        for inst in self.instances:
            own = {**self.instance_defaults}
            for interfaces, values in self.garp_groups:
                if inst.values.get("interface") in interfaces:
                    own.update(values)
            for key, (value, where) in own.items():
                if key == "accept_mode" and inst.values.get("priority") == 255:
                    continue  # an address owner always accepts (RFC 5798 6.1)
                if key not in inst.values:
                    inst.values[key] = value
                    inst.note(f"keepalived: {where}", key)

    def _global_defs(self, stmt: Stmt) -> None:
        for sub in stmt.block:
            args = sub.words[1:]
            if sub.keyword == "router_id" and len(args) == 1 and sub.block is None:
                self.global_.values["router_id"] = args[0]
            elif sub.keyword in _GLOBAL_GARP and len(args) == 1 and sub.block is None \
                    and _garp_value(_GLOBAL_GARP[sub.keyword], args[0]) is not None:
                key = _GLOBAL_GARP[sub.keyword]
                self.instance_defaults[key] = (_garp_value(key, args[0]), f"{sub.keyword} (line {sub.line})")
            elif sub.keyword in ("notify_fifo", "vrrp_notify_fifo") and len(args) in (1, 2) and sub.block is None \
                    and args[0].startswith("/"):
                self._notify_fifo(sub)
            elif sub.keyword == "vrrp_strict" and not args:
                self.instance_defaults["accept_mode"] = (False, f"vrrp_strict (line {sub.line}): no_accept")
                self.global_.note(f"keepalived: vrrp_strict (line {sub.line}): carried as accept_mode = false on "
                                  "every instance; its other checks are not vrrpd's")
            elif sub.keyword == "vrrp_version" and args in (["2"], ["3"]):
                self.vrrp_version = int(args[0])
                self.global_.note(f"keepalived: vrrp_version {args[0]} (line {sub.line}): "
                                  "the default version of each [[instance]] below")
            else:
                self.global_.lost(sub)

    def _notify_fifo(self, sub: Stmt) -> None:
        """keepalived writes the same VRRP lines to notify_fifo and vrrp_notify_fifo; vrrpd has one FIFO."""
        if "notify_fifo" in self.global_.values:
            return self.global_.lost(sub, "vrrpd writes one notify FIFO, the one above")
        self.global_.values["notify_fifo"] = sub.words[1]
        if sub.words[2:]:
            self.global_.note(f"not carried: user {sub.words[2]} of {sub.keyword} (line {sub.line}): vrrpd makes the "
                              "FIFO as its own user", "notify_fifo")

    def _tracker(self, stmt: Stmt, kind: str) -> _Table | None:
        name = stmt.words[1]
        if (kind, name) in self.trackers:
            self.top_notes.append(f"not carried: {stmt.brief()}: a {stmt.keyword} of that name comes earlier")
            return None
        t = self.trackers[(kind, name)] = _Table(kind, name, {"name": name})
        return t

    def _track_file(self, stmt: Stmt) -> None:
        """keepalived's track_file block: file, weight [reverse], init_file [VALUE] [overwrite]."""
        t = self._tracker(stmt, "track_file")
        for sub in stmt.block if t is not None else ():
            args = sub.words[1:]
            if sub.keyword == "file" and len(args) == 1 and args[0].startswith("/"):
                t.values["file"] = args[0]
            elif sub.keyword == "weight" and _weight(args) is not None:
                t.values["weight"] = _weight(args)
            elif sub.keyword == "init_file" and len(args) <= 2 and set(args[1:]) <= {"overwrite"} \
                    and (not args or args[0] == "overwrite" or _ranged(args[0], -(1 << 31), 1 << 31, True) is not None):
                t.values["init_file"] = int(args[0]) if args and args[0] != "overwrite" else 0
                if "overwrite" in args:
                    t.values["init_overwrite"] = True
            else:
                t.lost(sub, "vrrpd has no reverse weights" if "reverse" in args else "")
        if t is not None and "file" not in t.values:
            t.disabled = f"{stmt.keyword} {t.name} (line {stmt.line}) has no usable file line"

    def _track_process(self, stmt: Stmt) -> None:
        """keepalived's vrrp_track_process block."""
        t = self._tracker(stmt, "track_process")
        for sub in stmt.block if t is not None else ():
            args, kw = sub.words[1:], sub.keyword
            if kw == "process" and args:
                t.values["process"] = args[0]
                if args[1:]:
                    t.values["args"] = args[1:]
            elif kw == "param_match" and args in ([], ["initial"], ["partial"]):
                t.values["param_match"] = args[0] if args else "exact"
            elif kw == "full_command" and not args:
                t.values["full_command"] = True
            elif kw == "weight" and _weight(args) is not None:
                t.values["weight"] = _weight(args)
            elif kw in ("quorum", "quorum_max") and len(args) == 1 and _ranged(args[0], 0, 65535, True) is not None:
                t.values[kw] = int(args[0])
            elif kw in ("delay", "fork_delay", "terminate_delay") and len(args) == 1 \
                    and _ranged(args[0], 0, 3600) is not None:
                t.values[kw] = float(args[0])
            else:
                t.lost(sub, "vrrpd has no reverse weights" if "reverse" in args else "")
        if t is not None and "process" not in t.values:
            t.disabled = f"{stmt.keyword} {t.name} (line {stmt.line}) has no usable process line"

    def _resolve_trackers(self) -> None:
        """The instances' track_file / track_process entries, with keepalived's rules for the weight: an
        address owner, or a sync group member without sync_group_tracking_weight, tracks with weight 0."""
        for inst in self.instances:
            for kind in ("track_file", "track_process"):
                refs = []
                for item, weight in inst.refs.get(kind, []):
                    table = self.trackers.get((kind, item.words[0]))
                    if table is None or table.disabled:
                        inst.lost(item, f"no usable {kind} of that name")
                        continue
                    own = table.values.get("weight", 1) if weight is None else weight
                    grouped = inst.name in self.grouped_weights and not self.grouped_weights[inst.name]
                    if own and (grouped or inst.values.get("priority") == 255):
                        why = "an address owner" if inst.values.get("priority") == 255 else \
                            "in a sync group (no sync_group_tracking_weight)"
                        inst.note(f"keepalived: {kind} {table.name} has weight {own}, which keepalived sets to 0 "
                                  f"for {why}: a failure means FAULT", kind)
                        weight = 0
                    refs.append({"name": table.name, **({"weight": weight} if weight is not None else {})})
                if refs:
                    inst.values[kind] = refs

    def _script(self, stmt: Stmt) -> None:
        name = stmt.words[1]
        if name in self.scripts:
            self.top_notes.append(f"not carried: {stmt.brief()}: a vrrp_script of that name comes earlier")
            return
        t = _Table("script", name, {"name": name})
        self.scripts[name] = t
        for sub in stmt.block:
            args = sub.words[1:]
            kw = sub.keyword
            if sub.block is not None or not args:
                t.lost(sub)
            elif kw == "script":
                self._command(t, sub)
            elif kw in ("interval", "timeout") and len(args) == 1 \
                    and _ranged(args[0], 0.001, config.MAX_SCRIPT_SECONDS):
                t.values[kw] = float(args[0])
            elif kw in ("rise", "fall") and len(args) == 1 and _ranged(args[0], 1, config.MAX_RISE_FALL, True):
                t.values[kw] = int(args[0])
            elif kw == "weight" and len(args) <= 2 and _ranged(args[0], config.MIN_WEIGHT, config.MAX_WEIGHT, True) \
                    is not None:
                t.values["weight"] = int(args[0])
                if args[1:] == ["reverse"]:
                    self.script_reverse.add(name)
                    t.note(f"not carried: {sub.brief()}: vrrpd has no reverse weights; instances drop this script")
                elif args[1:]:
                    t.lost(sub)
            else:
                t.lost(sub, "vrrpd runs scripts as its own user" if kw == "user" else "")
        if "command" not in t.values:
            t.disabled = f"vrrp_script {name} (line {stmt.line}) has no usable script line"

    def _command(self, t: _Table, sub: Stmt) -> None:
        text = sub.words[1]
        if sub.words[2:]:
            t.note(f"not carried: user {' '.join(sub.words[2:])} (line {sub.line}): vrrpd runs scripts as its own user")
        try:
            argv = shlex.split(text)
        except ValueError:
            argv = []
        if _SHELL_SYNTAX.search(text) or not argv:
            argv = ["/bin/sh", "-c", text]
            t.note(f"keepalived: script {text!r} (line {sub.line}) uses shell syntax, so it runs through /bin/sh",
                   "command")
        t.values["command"] = argv

    def _instance(self, stmt: Stmt) -> None:
        name = stmt.words[1]
        if any(inst.name == name for inst in self.instances):
            self.top_notes.append(f"not carried: {stmt.brief()}: a vrrp_instance of that name comes earlier")
            return
        t = _Table("instance", name, {"name": name})
        self.instances.append(t)
        state = {"line": stmt.line}
        for sub in stmt.block:
            _instance_keyword(self, t, sub, state)
        self._finish_instance(t, state)

    def _finish_instance(self, t: _Table, state: dict) -> None:
        vips = t.values.get("virtual_ipaddress", [])
        family = "ipv6" if vips and ":" in vips[0] else "ipv4"
        version = state.get("version") or self.vrrp_version
        if version is None and family == "ipv4":
            version = 2
            t.note("keepalived's default: vrrp_version 2 (vrrpd's default is 3)", "version")
        elif version != 3 and family == "ipv6":
            version = 3
            t.note("keepalived always runs VRRPv3 for IPv6", "version")
        t.values["version"] = version
        _finish_auth(t, version, state.get("authentication"))
        _finish_sources(t, state)
        interval = state.get("advert_int", 1.0)
        if version == 2 and interval != int(interval):
            t.note(f"keepalived: advert_int {interval:g}: VRRPv2 has whole seconds only; rounded", "advert_interval")
            interval = float(max(1, round(interval)))
        elif version == 3 and interval != min(40.95, max(0.01, round(interval, 2))):
            t.note(f"keepalived: advert_int {interval:g}: VRRPv3 has 0.01..40.95 s in 0.01 s steps; rounded",
                   "advert_interval")
            interval = min(40.95, max(0.01, round(interval, 2)))
        if interval != 1.0 or "advert_int" in state:
            t.values["advert_interval"] = interval
        if state.get("nopreempt"):
            if t.values.get("priority") == 255:
                t.note("not carried: nopreempt: an address owner (priority 255) always takes over", "preempt")
            else:
                t.values["preempt"] = False
        for key, why in (("interface", "no interface (vrrpd needs one)"),
                         ("vrid", "no usable virtual_router_id"),
                         ("virtual_ipaddress", "no usable virtual_ipaddress")):
            if key not in t.values and not t.disabled:
                t.disabled = f"vrrp_instance {t.name} (line {state['line']}): {why}"

    def _sync_group(self, stmt: Stmt) -> None:
        name = stmt.words[1]
        if any(group.name == name for group in self.groups):
            self.top_notes.append(f"not carried: {stmt.brief()}: a vrrp_sync_group of that name comes earlier")
            return
        t = _Table("sync_group", name, {"name": name})
        keep_weights = False
        members: list[str] = []
        for sub in stmt.block:
            if sub.keyword == "group" and sub.block is not None:
                members += [word for member in sub.block for word in member.words]
            elif sub.keyword == "sync_group_tracking_weight":
                keep_weights = True  # carried by the weights of the members' track_script entries
            else:
                t.lost(sub, "vrrpd sync groups have no settings of their own; set it on each instance"
                       if sub.keyword.startswith("notify") or sub.keyword.startswith("track_") else "")
        known = {inst.name for inst in self.instances if not inst.disabled}
        taken = {m for group in self.groups for m in group.values["instances"]}
        kept = []
        for member in dict.fromkeys(members):
            if member not in known or member in taken:
                t.note(f"not carried: group member {member} (line {stmt.line}): "
                       + ("no such vrrp_instance" if member not in known else "already in another sync group"))
            else:
                kept.append(member)
                self.grouped_weights[member] = keep_weights
        t.values["instances"] = kept
        if not kept:
            t.disabled = f"vrrp_sync_group {name} (line {stmt.line}) has no usable members"
        self.groups.append(t)

    def _resolve_weights(self) -> None:
        """keepalived weighs scripts per instance; vrrpd per script: split scripts whose users disagree."""
        wanted: dict[str, dict[int, list[str]]] = {}  # script -> weight -> instances
        for inst in self.instances:
            names = []
            if inst.disabled:  # commented out: show what it tracked, without splitting scripts for it
                if inst.tracks:
                    inst.values["track_script"] = [track.script for track in inst.tracks]
                continue
            for track in inst.tracks:
                weight = self._effective_weight(inst, track)
                if weight is not None:
                    wanted.setdefault(track.script, {}).setdefault(weight, []).append(inst.name)
                    names.append((track.script, weight))
            inst.values.pop("track_script", None)
            if names:
                inst.values["track_script"] = names  # (script, weight), named in the loop below
        copies: dict[tuple[str, int], str] = {}
        for script, by_weight in wanted.items():
            base = self.scripts[script]
            own = base.values.get("weight", 0)
            keep = own if own in by_weight else Counter({w: len(u) for w, u in by_weight.items()}).most_common(1)[0][0]
            if keep != own:
                users = "every instance that tracks it uses" if len(by_weight) == 1 else "most of its users use"
                base.note(f"keepalived: weight {own}, but {users} {keep} there", "weight")
                base.values["weight"] = keep
            copies[(script, keep)] = script
            for weight in by_weight:
                if weight != keep:
                    copies[(script, weight)] = self._copy_script(base, weight, by_weight[weight])
        for inst in self.instances:
            if "track_script" in inst.values and not inst.disabled:
                inst.values["track_script"] = [copies[pair] for pair in dict.fromkeys(inst.values["track_script"])]

    def _effective_weight(self, inst: _Table, track: _Track) -> int | None:
        script = self.scripts.get(track.script)
        if script is None or script.disabled:
            inst.lost(track.stmt, "no usable vrrp_script of that name")
            return None
        if track.weight is None and track.script in self.script_reverse:
            inst.lost(track.stmt, "the script's weight is reversed, which vrrpd cannot do")
            return None
        weight = script.values.get("weight", 0) if track.weight is None else track.weight
        if inst.name in self.grouped_weights and not self.grouped_weights[inst.name] and weight:
            inst.note(f"keepalived: track_script {track.script} has weight {weight}, which keepalived sets to 0 "
                      "in a sync group (no sync_group_tracking_weight): a failure means FAULT", "track_script")
            weight = 0
        return weight

    def _copy_script(self, base: _Table, weight: int, users: list[str]) -> str:
        name = f"{base.name}_w{weight}".replace("-", "m")
        while name in self.scripts:
            name += "_"
        copy = _Table("script", name, {**base.values, "name": name, "weight": weight})
        copy.note(f"a copy of {base.name} with the weight keepalived gives it in {', '.join(users)} "
                  "(vrrpd weighs each script once)")
        self.scripts[name] = copy
        return name

    def render(self) -> str:
        lines = [f"# vrrpd configuration converted from {_one_line(self.path)} by `vrrpd import-keepalived` "
                 f"(vrrpd {__version__}).",
                 "# Check it with `vrrpd check -c FILE`. Each \"not carried\" comment names a keepalived setting",
                 "# that vrrpd does not have; review them before use."]
        lines += [f"# {_one_line(note)}" for note in self.top_notes]
        tables = [self.global_] if self.global_.values or self.global_.notes else []
        tables += list(self.scripts.values()) + list(self.trackers.values()) + self.instances + self.groups
        for table in tables:
            lines += [""] + table.render()
        return "\n".join(lines) + "\n"

    def tables(self) -> list[_Table]:
        return [self.global_, *self.scripts.values(), *self.trackers.values(), *self.instances, *self.groups]


def _why_top(stmt: Stmt) -> str:
    if stmt.keyword.startswith("@"):
        return ": conditional configuration; keep the line meant for this host"
    if stmt.keyword in ("virtual_server", "virtual_server_group", "real_server"):
        return ": vrrpd does no load balancing (IPVS)"
    if stmt.keyword in ("vrrp_instance", "vrrp_script", "vrrp_sync_group"):
        return ": expected a name and a { block }"
    return ""


def _instance_keyword(conv: _Converter, t: _Table, sub: Stmt, state: dict) -> None:
    kw, args = sub.keyword, sub.words[1:]
    one = args[0] if len(args) == 1 and sub.block is None else None
    if kw == "state" and one in ("MASTER", "BACKUP"):
        t.note(f"keepalived: state {one} (line {sub.line}): vrrpd has no initial state; every instance starts "
               "as BACKUP and the election decides (priority 255, the address owner, takes over at once)")
    elif kw == "interface" and one and config.is_interface_name(one):
        t.values["interface"] = one
    elif kw == "virtual_router_id" and _ranged(one, 1, 255, True):
        t.values["vrid"] = int(one)
    elif kw == "priority" and _ranged(one, 1, 255, True):
        t.values["priority"] = int(one)
    elif kw == "advert_int" and _ranged(one, 0.001, 255):
        state["advert_int"] = float(one)
    elif kw == "version" and one in ("2", "3"):
        state["version"] = int(one)
    elif kw in ("nopreempt", "no_preempt") and not args:
        state["nopreempt"] = True
    elif kw == "preempt" and not args:
        pass  # keepalived's default, kept for backwards compatibility
    elif kw == "preempt_delay" and _ranged(one, 0, config.MAX_PREEMPT_DELAY) is not None:
        t.values["preempt_delay"] = float(one)
    elif kw == "unicast_src_ip" and one and config.ip_address_or_none(one):
        t.values["unicast_src"] = one
    elif kw == "mcast_src_ip" and one and config.ip_address_or_none(one):
        state["mcast_src_ip"] = (one, sub)  # which key it is depends on unicast_peer: settled at the end
    elif kw == "unicast_ttl" and _ranged(one, 1, 255, True):
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
    elif kw == "garp_master_repeat" and _ranged(one, 0, config.MAX_GARP_REPEAT, True) is not None:
        t.values["garp_repeat"] = int(one)
    elif kw == "garp_master_refresh" and _ranged(one, 0, config.MAX_GARP_REFRESH) is not None:
        t.values["garp_refresh"] = float(one)
    elif kw in _GARP_KEYS and _garp_value(kw, one) is not None:
        t.values[kw] = _garp_value(kw, one)
    elif kw in _NOTIFY and args and sub.block is None:
        _notify(t, sub)
    elif kw in ("track_file", "track_process") and sub.block is not None:
        for item in sub.block:
            weight = _weight(item.words[2:]) if item.words[1:2] == ["weight"] else None
            if item.block is not None or (item.words[1:] and weight is None):
                t.lost(item, "vrrpd has no reverse weights" if "reverse" in item.words else "")
            else:
                t.refs.setdefault(kw, []).append((item, weight))
    elif kw in _BLOCK_ITEM and sub.block is not None:
        for item in sub.block:
            _BLOCK_ITEM[kw](conv, t, item)
    elif kw == "authentication" and sub.block is not None:
        state["authentication"] = sub
        _authentication(t, sub)
    else:
        t.lost(sub)


def _authentication(t: _Table, sub: Stmt) -> None:
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


def _finish_auth(t: _Table, version: int, block: Stmt | None) -> None:
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


def _finish_sources(t: _Table, state: dict) -> None:
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


def _notify(t: _Table, sub: Stmt) -> None:
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


def _vip(conv: _Converter, t: _Table, item: Stmt) -> None:
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


def _peer(conv: _Converter, t: _Table, item: Stmt) -> None:
    if item.block is not None or not config.ip_address_or_none(item.words[0]):
        return t.lost(item)
    t.values.setdefault("unicast_peers", []).append(item.words[0])
    if item.words[1:]:
        t.note(f"not carried: options of {item.brief()}: {' '.join(item.words[1:])}", "unicast_peers")


def _track_interface(conv: _Converter, t: _Table, item: Stmt) -> None:
    name, rest = item.words[0], item.words[1:]
    weight = 0
    if rest[:1] == ["weight"] and len(rest) == 2 and _ranged(rest[1], config.MIN_WEIGHT, config.MAX_WEIGHT, True) \
            is not None:
        weight = int(rest[1])
    elif rest or item.block is not None:
        return t.lost(item, "vrrpd has no reverse weights" if "reverse" in rest else "")
    if not config.is_interface_name(name):
        return t.lost(item)
    if name == t.values.get("interface"):
        return t.lost(item, "vrrpd always tracks the instance's own interface (link down means FAULT)")
    t.values.setdefault("track_interface", []).append({"name": name, "weight": weight})


def _track_script(conv: _Converter, t: _Table, item: Stmt) -> None:
    rest = item.words[1:]
    if rest in ([], ["noreverse"], ["no_reverse"]):
        weight = None
    elif rest[:1] == ["weight"] and len(rest) in (2, 3) and rest[2:] in ([], ["noreverse"], ["no_reverse"]) \
            and _ranged(rest[1], config.MIN_WEIGHT, config.MAX_WEIGHT, True) is not None:
        weight = int(rest[1])
    else:
        return t.lost(item, "vrrpd has no reverse weights" if "reverse" in rest else "")
    t.tracks.append(_Track(item.words[0], weight, item))


_GARP_KEYS = {  # keepalived instance keyword -> (low, high, type): the same name in vrrpd
    "garp_master_delay": (0, config.MAX_GARP_DELAY, float),
    "garp_master_refresh_repeat": (1, config.MAX_GARP_REPEAT, int),
    "garp_lower_prio_repeat": (0, config.MAX_GARP_REPEAT, int),
}
# global_defs keywords that set every instance's default (an instance's own keyword wins), by vrrpd key
_GLOBAL_GARP = {"vrrp_garp_master_delay": "garp_master_delay", "vrrp_garp_master_repeat": "garp_repeat",
                "vrrp_garp_master_refresh": "garp_refresh", "vrrp_garp_master_refresh_repeat":
                "garp_master_refresh_repeat", "vrrp_garp_lower_prio_repeat": "garp_lower_prio_repeat",
                "vrrp_garp_interval": "garp_interval", "vrrp_gna_interval": "gna_interval"}
_GARP_RANGES = {"garp_repeat": (0, config.MAX_GARP_REPEAT, int), "garp_refresh": (0, config.MAX_GARP_REFRESH, float),
                "garp_interval": (0, config.MAX_GARP_INTERVAL, float),
                "gna_interval": (0, config.MAX_GARP_INTERVAL, float), **_GARP_KEYS}


def _garp_value(key: str, word: str | None) -> int | float | None:
    low, high, kind = _GARP_RANGES[key]
    value = _ranged(word, low, high, kind is int)
    return None if value is None else kind(value)


def _excluded(conv: _Converter, t: _Table, item: Stmt) -> None:
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


def _route(conv: _Converter, t: _Table, item: Stmt) -> None:
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


def _rule(conv: _Converter, t: _Table, item: Stmt) -> None:
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


def _entry(t: _Table, item: Stmt, key: str, entry: dict, numbers: tuple[str, ...]) -> None:
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


_BLOCK_ITEM = {"virtual_ipaddress": _vip, "unicast_peer": _peer, "track_interface": _track_interface,
               "track_script": _track_script, "virtual_ipaddress_excluded": _excluded, "virtual_routes": _route,
               "virtual_rules": _rule}


def convert(text: str, path: str) -> str:
    """The vrrpd TOML for a keepalived.conf (with comments); raises KeepalivedParseError on bad syntax."""
    conv = _Converter(path)
    conv.run(parse_keepalived(text, path))
    for _ in range(20):
        output = conv.render()
        try:
            config.parse(output, path)
            return output
        except config.ConfigError as exc:
            if not _repair(conv, exc.problems):
                return output
    return conv.render()


def _repair(conv: _Converter, problems) -> bool:
    """Comment out what vrrpd still refuses (the safety net for what the rules above do not foresee)."""
    changed = False
    for problem in problems:
        match = re.fullmatch(r"(global|script|track_file|track_process|instance|sync_group)(?:\[(.*?)\])?(?:\.(\w+))?.*",
                             problem.key)
        if not match:
            continue
        kind, name, key = match.groups()
        table = next((t for t in conv.tables() if t.kind == kind and (kind == "global" or t.name == name)), None)
        if table is None or table.disabled:
            continue
        if key is None or key in _REQUIRED[kind]:
            table.disabled = f"{kind} {name}: vrrpd check: {problem.message}"
        elif key in table.values:
            table.note(f"not carried: {key} = {toml_value(table.values.pop(key))}: {problem.message}")
        else:
            continue
        changed = True
    return changed
