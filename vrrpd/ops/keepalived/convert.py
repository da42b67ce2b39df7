"""`vrrpd import-keepalived`: a keepalived.conf's VRRP blocks as vrrpd TOML, every lost setting a comment.

Converts vrrp_instance, vrrp_script and vrrp_sync_group blocks and global_defs' router_id / vrrp_version.
Whatever has no vrrpd equivalent becomes a `# not carried: ...` comment with its line. The result is checked
with `vrrpd.config.parse`; anything it still refuses is commented out with vrrpd's reason, so the output
always parses (unless no instance survives, which `vrrpd check` then says).

The tables being built are `tables`; what each vrrp_instance keyword becomes is `instance`; this module walks
the statement tree, resolves what spans blocks (scripts, tracked objects, sync groups) and renders the TOML.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter

from daemonkit.tomlwrite import toml_value
from vrrpd import __version__, config
from vrrpd.ops.keepalived.instance import GLOBAL_GARP, finish_auth, finish_sources, garp_value, instance_keyword
from vrrpd.ops.keepalived.parse import Stmt, parse_keepalived
from vrrpd.ops.keepalived.tables import REQUIRED, SHELL_SYNTAX, Table, Track, one_line, parse_weight, ranged

# ---- conversion -------------------------------------------------------------------------------------

class Converter:
    def __init__(self, path: str):
        self.path = path
        self.top_notes: list[str] = []
        self.global_ = Table("global", None)
        self.vrrp_version: int | None = None
        self.scripts: dict[str, Table] = {}
        self.script_reverse: set[str] = set()
        self.instances: list[Table] = []
        self.groups: list[Table] = []
        self.trackers: dict[tuple[str, str], Table] = {}  # (track_file | track_process, name) -> its table
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
                    and garp_value(sub.keyword, args[0]) is not None:
                values[sub.keyword] = (garp_value(sub.keyword, args[0]), f"garp_group (line {stmt.line})")
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
            elif sub.keyword in GLOBAL_GARP and len(args) == 1 and sub.block is None \
                    and garp_value(GLOBAL_GARP[sub.keyword], args[0]) is not None:
                key = GLOBAL_GARP[sub.keyword]
                self.instance_defaults[key] = (garp_value(key, args[0]), f"{sub.keyword} (line {sub.line})")
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

    def _tracker(self, stmt: Stmt, kind: str) -> Table | None:
        name = stmt.words[1]
        if (kind, name) in self.trackers:
            self.top_notes.append(f"not carried: {stmt.brief()}: a {stmt.keyword} of that name comes earlier")
            return None
        t = self.trackers[(kind, name)] = Table(kind, name, {"name": name})
        return t

    def _track_file(self, stmt: Stmt) -> None:
        """keepalived's track_file block: file, weight [reverse], init_file [VALUE] [overwrite]."""
        t = self._tracker(stmt, "track_file")
        for sub in stmt.block if t is not None else ():
            args = sub.words[1:]
            if sub.keyword == "file" and len(args) == 1 and args[0].startswith("/"):
                t.values["file"] = args[0]
            elif sub.keyword == "weight" and parse_weight(args) is not None:
                t.values["weight"] = parse_weight(args)
            elif sub.keyword == "init_file" and len(args) <= 2 and set(args[1:]) <= {"overwrite"} \
                    and (not args or args[0] == "overwrite" or ranged(args[0], -(1 << 31), 1 << 31, True) is not None):
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
            elif kw == "weight" and parse_weight(args) is not None:
                t.values["weight"] = parse_weight(args)
            elif kw in ("quorum", "quorum_max") and len(args) == 1 and ranged(args[0], 0, 65535, True) is not None:
                t.values[kw] = int(args[0])
            elif kw in ("delay", "fork_delay", "terminate_delay") and len(args) == 1 \
                    and ranged(args[0], 0, 3600) is not None:
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
        t = Table("script", name, {"name": name})
        self.scripts[name] = t
        for sub in stmt.block:
            args = sub.words[1:]
            kw = sub.keyword
            if sub.block is not None or not args:
                t.lost(sub)
            elif kw == "script":
                self._command(t, sub)
            elif kw in ("interval", "timeout") and len(args) == 1 \
                    and ranged(args[0], 0.001, config.MAX_SCRIPT_SECONDS):
                t.values[kw] = float(args[0])
            elif kw in ("rise", "fall") and len(args) == 1 and ranged(args[0], 1, config.MAX_RISE_FALL, True):
                t.values[kw] = int(args[0])
            elif kw == "weight" and len(args) <= 2 and ranged(args[0], config.MIN_WEIGHT, config.MAX_WEIGHT, True) \
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

    def _command(self, t: Table, sub: Stmt) -> None:
        text = sub.words[1]
        if sub.words[2:]:
            t.note(f"not carried: user {' '.join(sub.words[2:])} (line {sub.line}): vrrpd runs scripts as its own user")
        try:
            argv = shlex.split(text)
        except ValueError:
            argv = []
        if SHELL_SYNTAX.search(text) or not argv:
            argv = ["/bin/sh", "-c", text]
            t.note(f"keepalived: script {text!r} (line {sub.line}) uses shell syntax, so it runs through /bin/sh",
                   "command")
        t.values["command"] = argv

    def _instance(self, stmt: Stmt) -> None:
        name = stmt.words[1]
        if any(inst.name == name for inst in self.instances):
            self.top_notes.append(f"not carried: {stmt.brief()}: a vrrp_instance of that name comes earlier")
            return
        t = Table("instance", name, {"name": name})
        self.instances.append(t)
        state = {"line": stmt.line}
        for sub in stmt.block:
            instance_keyword(self, t, sub, state)
        self._finish_instance(t, state)

    def _finish_instance(self, t: Table, state: dict) -> None:
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
        finish_auth(t, version, state.get("authentication"))
        finish_sources(t, state)
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
        t = Table("sync_group", name, {"name": name})
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

    def _effective_weight(self, inst: Table, track: Track) -> int | None:
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

    def _copy_script(self, base: Table, weight: int, users: list[str]) -> str:
        name = f"{base.name}_w{weight}".replace("-", "m")
        while name in self.scripts:
            name += "_"
        copy = Table("script", name, {**base.values, "name": name, "weight": weight})
        copy.note(f"a copy of {base.name} with the weight keepalived gives it in {', '.join(users)} "
                  "(vrrpd weighs each script once)")
        self.scripts[name] = copy
        return name

    def render(self) -> str:
        lines = [f"# vrrpd configuration converted from {one_line(self.path)} by `vrrpd import-keepalived` "
                 f"(vrrpd {__version__}).",
                 "# Check it with `vrrpd check -c FILE`. Each \"not carried\" comment names a keepalived setting",
                 "# that vrrpd does not have; review them before use."]
        lines += [f"# {one_line(note)}" for note in self.top_notes]
        tables = [self.global_] if self.global_.values or self.global_.notes else []
        tables += list(self.scripts.values()) + list(self.trackers.values()) + self.instances + self.groups
        for table in tables:
            lines += [""] + table.render()
        return "\n".join(lines) + "\n"

    def tables(self) -> list[Table]:
        return [self.global_, *self.scripts.values(), *self.trackers.values(), *self.instances, *self.groups]


def _why_top(stmt: Stmt) -> str:
    if stmt.keyword.startswith("@"):
        return ": conditional configuration; keep the line meant for this host"
    if stmt.keyword in ("virtual_server", "virtual_server_group", "real_server"):
        return ": vrrpd does no load balancing (IPVS)"
    if stmt.keyword in ("vrrp_instance", "vrrp_script", "vrrp_sync_group"):
        return ": expected a name and a { block }"
    return ""



def convert(text: str, path: str) -> str:
    """The vrrpd TOML for a keepalived.conf (with comments); raises KeepalivedParseError on bad syntax."""
    conv = Converter(path)
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


def _repair(conv: Converter, problems) -> bool:
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
        if key is None or key in REQUIRED[kind]:
            table.disabled = f"{kind} {name}: vrrpd check: {problem.message}"
        elif key in table.values:
            table.note(f"not carried: {key} = {toml_value(table.values.pop(key))}: {problem.message}")
        else:
            continue
        changed = True
    return changed
