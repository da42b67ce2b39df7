"""The vrrpd TOML tables the keepalived importer builds: values in order, notes, and the words it reads."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from daemonkit.tomlwrite import toml_value
from vrrpd.ops.keepalived.parse import Stmt

NOTIFY = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")
SHELL_SYNTAX = re.compile(r"[<>|&;$`*?()]")  # a script that needs /bin/sh to mean what keepalived ran
INSTANCE_ORDER = (
    "name", "interface", "vrid", "priority", "version", "advert_interval", "virtual_ipaddress", "preempt",
    "preempt_delay", "unicast_src", "unicast_peers", "garp_repeat", "garp_refresh", "track_interface",
    "track_script", *NOTIFY, "auth_type", "auth_pass", "unicast_ttl", "mcast_src_ip", "dont_track_primary",
    "virtual_ipaddress_excluded", "virtual_routes", "virtual_rules", "track_file", "track_process", "accept_mode", "use_vmac",
    "vmac_xmit_base",
)  # fmt: skip
# Keys whose loss makes a whole table unusable (the safety net then comments the table out).
REQUIRED = {"instance": ("name", "interface", "vrid", "virtual_ipaddress"), "script": ("name", "command"),
             "track_file": ("name", "file"), "track_process": ("name", "process"),
             "sync_group": ("name", "instances"), "global": ()}


# ---- the vrrpd tables being built ------------------------------------------------------------------

@dataclass
class Track:
    script: str
    weight: int | None  # per-instance override
    stmt: Stmt


@dataclass
class Table:
    kind: str  # "global" | "script" | "instance" | "sync_group"
    name: str | None
    values: dict = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # key -> comments above it; "" -> at the end
    disabled: str | None = None  # why the whole table is commented out
    tracks: list[Track] = field(default_factory=list)  # an instance's track_script entries, resolved last
    refs: dict[str, list] = field(default_factory=dict)  # track_file / track_process: (stmt, weight), resolved last

    def note(self, text: str, key: str = "") -> None:
        self.notes.setdefault(key, []).append(text)

    def lost(self, stmt: Stmt, why: str = "") -> None:
        if not why and stmt.keyword.startswith("@"):
            why = "conditional configuration; keep the line meant for this host"
        self.note(f"not carried: {stmt.brief()}" + (f": {why}" if why else ""))

    def render(self) -> list[str]:
        order = INSTANCE_ORDER if self.kind == "instance" else ()
        keys = [k for k in order if k in self.values or k in self.notes]
        keys = list(dict.fromkeys([*keys, *self.values, *(k for k in self.notes if k), ""]))
        lines = ["[global]" if self.kind == "global" else f"[[{self.kind}]]"]
        for key in keys:
            lines += [f"# {one_line(text)}" for text in self.notes.get(key, [])]
            if key in self.values:
                lines.append(f"{key} = {toml_value(self.values[key])}")
        if self.disabled:
            return [f"# not carried: {one_line(self.disabled)}"] + [f"# {line}" for line in lines]
        return lines


def parse_weight(args: list[str]) -> int | None:
    """`weight N` arguments (without reverse, which vrrpd has not) within vrrpd's tracking range."""
    if len(args) != 1:
        return None
    value = ranged(args[0], -254, 254, True)
    return None if value is None else int(value)


def one_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


def ranged(word: str | None, low: float, high: float, integer: bool = False) -> int | float | None:
    """The number `word` spells when it lies in low..high (an int when `integer`), else None."""
    if word is None:
        return None
    try:
        value = int(word) if integer else float(word)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None
