"""vrrpd's TOML configuration (SPEC section 3): parsed once into frozen dataclasses, with every check done here.

`parse` and `load` either return a complete, valid `Config` or raise `ConfigError` carrying every problem
found, each as `FILE:LINE: key: message`. The typed reads that collect problems are in `toml_check`; tomllib
reports no positions for values, so `toml_positions` re-reads the (already valid) text for their lines.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from daemonkit.net import Address, HostPort, Interface, ip_address_or_none, parse_host_port  # noqa: F401

from vrrpd.config_keepalived import (  # noqa: F401 (re-exported: the importer reads the limits here)
    AUTH_PASS_MAX, AUTH_TYPES, MAX_GARP_DELAY, MAX_GARP_INTERVAL, MAX_GARP_REFRESH, MAX_GARP_REPEAT, auth, garp, more,
)
from vrrpd.config_routing import Route, Rule
from vrrpd.config_values import is_interface_name, parse_vip, peer_address
from vrrpd.config_tracking import TrackFile, TrackProcess, TrackRef, check_refs, check_track_file, check_track_process
from daemonkit.tomlcheck import (
    ConfigError, Findings, Problem, Table, check_document, check_list, describe, key_label, name_label, quote,
    read_config, unknown,
)


DEFAULT_CONTROL_SOCKET = "/run/vrrpd/vrrpd.sock"
MIN_WEIGHT, MAX_WEIGHT = -253, 253  # keepalived's range: a weight can never reach 0 or 255 from 1..254
MAX_PREEMPT_DELAY = 1000.0  # keepalived's limit
MAX_SCRIPT_SECONDS = 3600.0
MAX_RISE_FALL = 1000
# The address count is 8 bits (RFC 5798 5.2.5); IPv6 adverts must also fit a 1500-byte MTU:
# 1500 - 40 (IPv6) - 8 (VRRP header) = 1452 bytes = 90 addresses.
MAX_VIPS = {"ipv4": 255, "ipv6": 90}
SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the terminating NUL


@dataclass(frozen=True)
class TrackInterface:
    name: str
    weight: int  # 0: link down means FAULT; <0 added while down; >0 added while up


@dataclass(frozen=True)
class Script:
    """A health check (keepalived's vrrp_script) whose result changes an instance's priority."""

    name: str
    command: tuple[str, ...]
    interval: float = 1.0  # seconds
    timeout: float = 1.0  # seconds
    rise: int = 1
    fall: int = 1
    weight: int = 0


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One virtual router (keepalived's vrrp_instance)."""

    name: str
    interface: str
    vrid: int
    priority: int = 100
    version: int = 3
    advert_interval: float = 1.0  # seconds
    virtual_ipaddress: tuple[Interface, ...]
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds
    unicast_src: Address | None = None
    unicast_peers: tuple[Address, ...] = ()
    garp_repeat: int = 5  # also spelt garp_master_repeat, as keepalived does
    garp_refresh: float = 0.0  # seconds; 0 = never; also spelt garp_master_refresh
    garp_master_delay: float = 5.0  # seconds after becoming master for a second round; 0 = none (keepalived's 5)
    garp_master_refresh_repeat: int = 1  # messages per VIP each garp_refresh
    garp_lower_prio_repeat: int | None = None  # after a lower-priority advert as master; None: garp_repeat; 0: none
    garp_interval: float = 0.0  # seconds between gratuitous ARPs (IPv4)
    gna_interval: float = 0.0  # seconds between unsolicited neighbour advertisements (IPv6)
    track_interface: tuple[TrackInterface, ...] = ()
    track_script: tuple[str, ...] = ()
    # Commands as their arguments (split once, at load): `notify` gets INSTANCE <name> <state> <priority> appended.
    notify: tuple[str, ...] | None = None
    notify_master: tuple[str, ...] | None = None
    notify_backup: tuple[str, ...] | None = None
    notify_fault: tuple[str, ...] | None = None
    notify_stop: tuple[str, ...] | None = None
    # VRRPv2 authentication as RFC 2338 and keepalived do it: compatibility with such peers, not security
    # (PASS sends the password in clear; AH's HMAC-MD5 key is that same 8-byte password).
    auth_type: str = "none"
    auth_pass: str = ""
    unicast_ttl: int = 255  # sent on unicast adverts; below 255 (peers beyond a router) the TTL is not required
    mcast_src_ip: Address | None = None  # the source of multicast adverts (else the interface's primary)
    dont_track_primary: bool = False  # the own interface going down does not mean FAULT
    virtual_ipaddress_excluded: tuple[Interface, ...] = ()  # moved with the VIPs, never in adverts; any family
    virtual_routes: tuple[Route, ...] = ()  # installed after the addresses on becoming master, removed before
    virtual_rules: tuple[Rule, ...] = ()
    track_file: tuple[TrackRef, ...] = ()
    track_process: tuple[TrackRef, ...] = ()
    # RFC 5798 6.1 Accept_Mode. true (keepalived's default, and what a service on the VIP needs): a master
    # accepts packets addressed to the VIPs; false: a non-owner master drops them (nftables, keepalived's
    # vrrp_strict / no_accept).
    accept_mode: bool = True
    # keepalived's use_vmac: a macvlan with the virtual MAC 00:00:5e:00:01:VRID (IPv6: 00:00:5e:00:02:VRID)
    # holds the VIPs and sends the adverts and announcements, so a takeover needs no ARP update on the hosts.
    vmac: str | None = None  # its name (use_vmac = true: "vrrp.VRID", IPv6 "vrrp6.VRID"; or the name given)
    vmac_xmit_base: bool = False  # adverts from the base interface instead of the macvlan

    @property
    def vmac_address(self) -> str:
        """RFC 5798 7.3: the virtual router MAC address."""
        return f"00:00:5e:00:{2 if self.family == 'ipv6' else 1:02x}:{self.vrid:02x}"

    @property
    def vip_interface(self) -> str:
        """Where the VIPs live: the macvlan with use_vmac, else the instance's interface."""
        return self.vmac or self.interface

    @property
    def advert_interface(self) -> str:
        """Where the adverts leave from: the macvlan with use_vmac (unless vmac_xmit_base)."""
        return self.vmac if self.vmac and not self.vmac_xmit_base else self.interface

    @property
    def addresses(self) -> tuple[Interface, ...]:
        """Every address this instance holds as master: the advertised VIPs, then the excluded ones."""
        return self.virtual_ipaddress + self.virtual_ipaddress_excluded

    @property
    def source(self) -> Address | None:
        """The configured source of adverts, if any (unicast_src or mcast_src_ip)."""
        return self.unicast_src if self.unicast_src is not None else self.mcast_src_ip

    @property
    def auth_key(self) -> bytes:
        """The 8 bytes of RFC 2338 authentication data: the password, NUL-padded."""
        return self.auth_pass.encode().ljust(AUTH_PASS_MAX, b"\0")

    @property
    def family(self) -> str:
        return "ipv6" if self.virtual_ipaddress[0].version == 6 else "ipv4"

    @property
    def advert_interval_cs(self) -> int:
        return round(self.advert_interval * 100)

    @property
    def preempt_delay_cs(self) -> int:
        return round(self.preempt_delay * 100)

    @property
    def key(self) -> tuple[str, int, str]:
        """What identifies a virtual router across a reload (SPEC section 4)."""
        return (self.interface, self.vrid, self.family)


@dataclass(frozen=True)
class SyncGroup:
    name: str
    instances: tuple[str, ...]


@dataclass(frozen=True)
class GlobalConfig:
    router_id: str = field(default_factory=socket.gethostname)
    control_socket: str = DEFAULT_CONTROL_SOCKET
    log_format: str | None = None  # "json" | "console" | None: console on a tty, else json
    log_level: str = "info"
    metrics_listen: HostPort | None = None  # where the Prometheus endpoint listens
    notify_fifo: str | None = None  # every transition written here as keepalived writes its notify_fifo


@dataclass(frozen=True)
class Config:
    path: str
    global_: GlobalConfig
    scripts: tuple[Script, ...]
    instances: tuple[Instance, ...]
    sync_groups: tuple[SyncGroup, ...]
    track_files: tuple[TrackFile, ...] = ()
    track_processes: tuple[TrackProcess, ...] = ()

    def track_file(self, name: str) -> TrackFile:
        return next(f for f in self.track_files if f.name == name)

    def track_process(self, name: str) -> TrackProcess:
        return next(p for p in self.track_processes if p.name == name)

    def script(self, name: str) -> Script:
        for script in self.scripts:
            if script.name == name:
                return script
        raise KeyError(name)

    def instance(self, name: str) -> Instance:
        for instance in self.instances:
            if instance.name == name:
                return instance
        raise KeyError(name)


def load(path: str) -> Config:
    """Read and check `path`; an unreadable, oversized or non-UTF-8 file is a ConfigError too."""
    return parse(read_config(path), path)


def parse(text: str, path: str = "<string>") -> Config:
    """Check `text` as a vrrpd config; raises ConfigError listing every problem found."""
    checker = _Checker()
    return check_document(text, path, lambda _, data: checker.document(data, path), checker)


_TABLES = ("global", "script", "track_file", "track_process", "instance", "sync_group")


class _Checker(Findings):
    """Checks a whole document: the problems found, and the names each table defines."""

    def __init__(self):
        super().__init__()
        # Names seen so far (name -> label), also of tables that failed other checks, so that one bad key
        # does not turn every reference to its table into a second problem.
        self.script_names: dict[str, str] = {}
        self.instance_names: dict[str, str] = {}
        self.group_names: dict[str, str] = {}
        self.instance_group: dict[str, str] = {}
        self.file_names: dict[str, str] = {}
        self.process_names: dict[str, str] = {}

    def document(self, data: dict, path: str) -> Config | None:
        for key in data:
            if key not in _TABLES:
                self.add((key,), key_label(key), unknown(key, _TABLES, "table"))
        global_ = _check_global(self, data.get("global", {}))
        scripts = check_list(self, data, "script", _check_script)
        files = check_list(self, data, "track_file", lambda c, t: check_track_file(t, _name(t, c.file_names)))
        processes = check_list(self, data, "track_process",
                               lambda c, t: check_track_process(t, _name(t, c.process_names)))
        instances = check_list(self, data, "instance", _check_instance)
        if not data.get("instance"):
            self.add(("instance",) if "instance" in data else (), "instance", "at least one [[instance]] is required")
        groups = check_list(self, data, "sync_group", _check_sync_group)
        _check_across(self, instances)
        if self.found:
            return None
        return Config(path, global_, *(tuple(obj for _, obj in items)
                                       for items in (scripts, instances, groups, files, processes)))


def _name(table: Table, seen: dict[str, str]) -> str | None:
    name = table.text("name")
    if name is None:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        table.problem("name", f"must not contain spaces or control characters: {quote(name)}")
        return None
    if name in seen:
        table.problem("name", f"{quote(name)} is already the name of an earlier [[{table.where[0]}]]")
        return None
    seen[name] = table.label
    return name


# ---- the tables ---------------------------------------------------------------------------------------

def _check_global(checker: _Checker, data) -> GlobalConfig:
    if not isinstance(data, dict):
        checker.add(("global",), "global", f"must be a table ([global]), not {describe(data)}")
        return GlobalConfig()
    t = checker.table(("global",), "global", data)
    t.only(("router_id", "control_socket", "log_format", "log_level", "metrics_listen", "notify_fifo"))
    router_id = t.text("router_id", None)
    sock = t.text("control_socket", DEFAULT_CONTROL_SOCKET)
    if sock is not None and len(sock.encode()) > SUN_PATH_MAX:
        t.problem("control_socket", f"a unix socket path is at most {SUN_PATH_MAX} bytes")
    log_format, log_level = t.logging()
    text = t.text("metrics_listen", None)
    metrics = parse_host_port(text, names=True) if text is not None else None
    if text is not None and metrics is None:
        t.problem("metrics_listen", f'must be HOST:PORT (e.g. "127.0.0.1:9101" or "[::1]:9101"), not {quote(text)}')
    fifo = t.text("notify_fifo", "", empty_ok=True) or None
    if fifo is not None and not fifo.startswith("/"):
        t.problem("notify_fifo", f"must be an absolute path, not {quote(fifo)}")
    if t.bad:
        return GlobalConfig()
    return GlobalConfig(router_id or socket.gethostname(), sock, log_format, log_level, metrics, fifo)


def _check_script(checker: _Checker, t: Table) -> Script | None:
    t.only(("name", "command", "interval", "timeout", "rise", "fall", "weight"))
    name = _name(t, checker.script_names)
    command = t.strings("command")
    if command is not None:
        if not command:
            t.problem("command", "must name a program to run")
        elif not command[0][1]:
            t.problem("command", "the program (first element) must not be empty", (0,))
        for index, arg in command:
            if "\x00" in arg:
                t.problem("command", "must not contain a NUL character", (index,))
    interval = t.number("interval", 0.0, MAX_SCRIPT_SECONDS, 1.0, low_open=True)
    timeout = t.number("timeout", 0.0, MAX_SCRIPT_SECONDS, interval or 1.0, low_open=True)
    rise = t.integer("rise", 1, MAX_RISE_FALL, 1)
    fall = t.integer("fall", 1, MAX_RISE_FALL, 1)
    weight = t.integer("weight", MIN_WEIGHT, MAX_WEIGHT, 0)
    if t.bad:
        return None
    return Script(name, tuple(arg for _, arg in command), interval, timeout, rise, fall, weight)


_INSTANCE_KEYS = (
    "name", "interface", "vrid", "priority", "version", "advert_interval", "virtual_ipaddress", "preempt",
    "preempt_delay", "unicast_src", "unicast_peers", "garp_repeat", "garp_refresh", "garp_master_repeat",
    "garp_master_refresh", "garp_master_delay", "garp_master_refresh_repeat", "garp_lower_prio_repeat",
    "garp_interval", "gna_interval", "track_interface",
    "track_script", "notify", "notify_master", "notify_backup", "notify_fault", "notify_stop", "auth_type",
    "auth_pass", "unicast_ttl", "mcast_src_ip", "dont_track_primary", "virtual_ipaddress_excluded", "virtual_routes",
    "virtual_rules", "track_file", "track_process", "accept_mode", "use_vmac", "vmac_xmit_base",
)  # fmt: skip
_NOTIFY_KEYS = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")


def _check_instance(checker: _Checker, t: Table) -> Instance | None:
    t.only(_INSTANCE_KEYS)
    name = _name(t, checker.instance_names)
    interface = t.text("interface")
    if interface is not None and not is_interface_name(interface):
        t.problem("interface", f"not a Linux interface name: {quote(interface)}")
        interface = None
    vrid = t.integer("vrid", 1, 255)
    priority = t.integer("priority", 1, 255, 100)
    version = t.integer("version", 2, 3, 3)
    vips = _vips(t)
    family = _family(t, vips)
    if version == 2 and family == "ipv6":
        t.problem("version", "VRRPv2 is IPv4 only (RFC 3768); IPv6 needs version = 3")
    interval = _advert_interval(t, version)
    preempt = t.get("preempt", "a boolean", True)
    if priority == 255 and preempt is False:
        t.problem("preempt", "priority 255 (address owner) always takes over (RFC 5798 6.4.1); "
                             "preempt = false cannot hold: lower the priority or remove preempt")
    preempt_delay = t.number("preempt_delay", 0.0, MAX_PREEMPT_DELAY, 0.0)
    src, peers = _unicast(t, family)
    garp_keys = garp(t)
    tracks = _track_interfaces(t, interface)
    scripts = _track_scripts(t, checker.script_names)
    notifies = {key: t.command(key) for key in _NOTIFY_KEYS}
    auth_type, auth_pass = auth(t, version)
    keys = more(t, family, peers, src, {vip.ip for _, vip in vips})
    keys["track_file"] = check_refs(t, "track_file", checker.file_names, "track_file")
    keys["track_process"] = check_refs(t, "track_process", checker.process_names, "track_process")
    if t.bad or family is None:
        return None
    return Instance(
        name=name, interface=interface, vrid=vrid, priority=priority, version=version, advert_interval=interval,
        virtual_ipaddress=tuple(vip for _, vip in vips), preempt=preempt, preempt_delay=preempt_delay,
        unicast_src=src, unicast_peers=peers, **garp_keys,
        track_interface=tracks, track_script=scripts, **notifies, auth_type=auth_type, auth_pass=auth_pass, **keys,
    )


def _vips(t: Table) -> list[tuple[int, Interface]]:
    entries = t.strings("virtual_ipaddress")
    if entries is None:
        return []
    if not entries and not t.bad:
        t.problem("virtual_ipaddress", "must list at least one address")
    vips, seen = [], set()
    for index, text in entries:
        vip = parse_vip(text)
        if isinstance(vip, str):
            t.problem("virtual_ipaddress", vip, (index,))
        elif vip.ip in seen:
            t.problem("virtual_ipaddress", f"{vip.ip} is listed twice", (index,))
        else:
            seen.add(vip.ip)
            vips.append((index, vip))
    return vips


def _family(t: Table, vips: list[tuple[int, Interface]]) -> str | None:
    if not vips:
        return None
    first = vips[0][1].version
    for index, vip in vips[1:]:
        if vip.version != first:
            t.problem("virtual_ipaddress", f"{vip.ip} mixes IPv{vip.version} into an IPv{first} instance; "
                                           "use one instance per family", (index,))
            return None
    family = "ipv6" if first == 6 else "ipv4"
    if len(vips) > MAX_VIPS[family]:
        t.problem("virtual_ipaddress", f"at most {MAX_VIPS[family]} {family} addresses fit in one advert")
        return None
    return family


def _advert_interval(t: Table, version: int | None) -> float | None:
    value = t.number("advert_interval", 0.01, 255.0, 1.0)
    if value is None or version is None:
        return None
    if version == 3 and not (value <= 40.95 and abs(value * 100 - round(value * 100)) < 1e-6):
        t.problem("advert_interval", f"VRRPv3 needs 0.01..40.95 seconds in steps of 0.01 (RFC 5798 5.2.7: "
                                     f"12 bits of centiseconds), not {value:g}")
        return None
    if version == 2 and value != int(value):
        t.problem("advert_interval", f"VRRPv2 needs whole seconds 1..255 (RFC 3768 5.3.7), not {value:g}")
        return None
    return value


def _unicast(t: Table, family: str | None) -> tuple[Address | None, tuple[Address, ...]]:
    want = {"ipv4": 4, "ipv6": 6}.get(family)
    src = None
    text = t.text("unicast_src", None)
    if text is not None:
        src = peer_address(t, "unicast_src", text, want, ())
    peers: list[Address] = []
    for index, text in t.strings("unicast_peers", []) or []:
        peer = peer_address(t, "unicast_peers", text, want, (index,))
        if peer is None:
            continue
        if peer in peers:
            t.problem("unicast_peers", f"{peer} is listed twice", (index,))
        elif src is not None and peer == src:
            t.problem("unicast_peers", f"{peer} is this node's own unicast_src", (index,))
        else:
            peers.append(peer)
    return src, tuple(peers)


def _track_interfaces(t: Table, own: str | None) -> tuple[TrackInterface, ...]:
    items = t.get("track_interface", "an array", [])
    tracks: list[TrackInterface] = []
    for index, item in enumerate(items or []):
        if not isinstance(item, dict):
            t.problem("track_interface", f'elements must be tables like {{ name = "eth1", weight = 0 }}, '
                                         f"not {describe(item)}", (index,))
            continue
        sub = t.findings.table(t.where + ("track_interface", index), f"{t.label}.track_interface", item)
        sub.only(("name", "weight"))
        name = sub.text("name")
        if name is not None and not is_interface_name(name):
            sub.problem("name", f"not a Linux interface name: {quote(name)}")
        elif name is not None and name == own:
            sub.problem("name", f"{name} is the instance's own interface, always tracked (link down means FAULT)")
        elif name is not None and any(tr.name == name for tr in tracks):
            sub.problem("name", f"{name} is tracked twice")
        weight = sub.integer("weight", MIN_WEIGHT, MAX_WEIGHT, 0)
        if sub.bad:
            t.bad = True
        else:
            tracks.append(TrackInterface(name, weight))
    return tuple(tracks)


def _track_scripts(t: Table, script_names: dict[str, str]) -> tuple[str, ...]:
    names: list[str] = []
    for index, name in t.strings("track_script", []) or []:
        if name not in script_names:
            t.problem("track_script", f"{quote(name)} names no [[script]]", (index,))
        elif name in names:
            t.problem("track_script", f"{quote(name)} is listed twice", (index,))
        else:
            names.append(name)
    return tuple(names)


def _check_sync_group(checker: _Checker, t: Table) -> SyncGroup | None:
    t.only(("name", "instances"))
    name = _name(t, checker.group_names)
    members = t.strings("instances")
    if members is not None and not members and not t.bad:
        t.problem("instances", "must list at least one instance")
    instance_names, in_group = checker.instance_names, checker.instance_group
    names: list[str] = []
    for index, member in members or []:
        if member not in instance_names:
            t.problem("instances", f"{quote(member)} names no [[instance]]", (index,))
        elif member in names:
            t.problem("instances", f"{quote(member)} is listed twice", (index,))
        elif member in in_group:
            t.problem("instances", f"{quote(member)} is already in sync group {quote(in_group[member])}", (index,))
        else:
            names.append(member)
            in_group[member] = name or t.label
    if t.bad:
        return None
    return SyncGroup(name, tuple(names))


def _check_across(checker: _Checker, instances: list[tuple[int, Instance]]) -> None:
    """What no single table shows: two instances on one (interface, vrid, family), or sharing a VIP."""
    by_key: dict[tuple, str] = {}
    by_vip: dict[Address, str] = {}
    by_vmac: dict[str, str] = {}
    interfaces = {inst.interface for _, inst in instances}
    for position, inst in instances:
        where, label = ("instance", position), f"instance[{name_label(inst.name)}]"
        if inst.vmac is not None:
            if inst.vmac in by_vmac or inst.vmac in interfaces:
                owner = by_vmac.get(inst.vmac)
                checker.add(where + ("use_vmac",), f"{label}.use_vmac",
                            f"{inst.vmac} is already " + (f"the macvlan of instance {quote(owner)}" if owner
                                                         else "the interface of an instance") + ": name it")
            by_vmac.setdefault(inst.vmac, inst.name)
        if inst.key in by_key:
            checker.add(where + ("vrid",), f"{label}.vrid", f"VRID {inst.vrid} on {inst.interface} ({inst.family}) "
                                                            f"is already used by instance {quote(by_key[inst.key])}")
        by_key.setdefault(inst.key, inst.name)
        for key in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
            for index, vip in enumerate(getattr(inst, key)):
                if vip.ip in by_vip:
                    checker.add(where + (key, index), f"{label}.{key}",
                                f"{vip.ip} is already a virtual address of instance {quote(by_vip[vip.ip])}")
                by_vip.setdefault(vip.ip, inst.name)


__all__ = ["Config", "ConfigError", "GlobalConfig", "Instance", "Problem", "Route", "Rule", "Script", "SyncGroup",
           "TrackFile", "TrackInterface", "TrackProcess", "TrackRef", "load", "parse"]
