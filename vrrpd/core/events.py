"""The Node's vocabulary: the events the runtime hands it and the effects it hands back (frozen values).

Effects addressed to a router are carried out in the order given. Those in QUEUED wait behind that router's
earlier effects (address changes, and what must follow them: announcements after the addresses are in, a
notify after the addresses moved); the others are carried out at once (an advert never waits for netlink:
RFC 5798 6.4.2 sends it before the addresses are taken, and it does not depend on them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from daemonkit.net import Address, Interface
from vrrpd.config import Config, Route, Rule, Script, TrackFile, TrackProcess
from vrrpd.core.fsm import State
from vrrpd.core.notify import Job


# ---- events (inputs) ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PacketIn:
    """A VRRP message (the bytes after the IP header) received on a socket of (ifname, family)."""

    ifname: str
    family: str
    payload: bytes
    src: Address
    dst: Address
    ttl: int
    ip_header: bytes | None = None  # set when the message came inside an IP Authentication Header (payload: AH + VRRP)


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """What the kernel says of interface `ifname`; `index` None: there is no such interface (now)."""

    ifname: str
    index: int | None
    up: bool = False  # administratively up with carrier
    mac: str | None = None
    forwarding: bool = False  # IPv6 forwarding on the interface (the NA router flag)


@dataclass(frozen=True, slots=True)
class AddressChanged:
    """An address appeared on (`present`) or left interface `ifname`; `flags` are its IFA_F_* flags."""

    ifname: str
    address: Interface
    present: bool
    flags: int = 0


@dataclass(frozen=True, slots=True)
class ScriptChanged:
    name: str
    up: bool


@dataclass(frozen=True, slots=True)
class FileValue:
    """A track_file was read: its number, or None (missing, unreadable, not a number: counts as 0 and is logged)."""

    name: str
    value: int | None


@dataclass(frozen=True, slots=True)
class ProcessCount:
    """How many running processes match a track_process now."""

    name: str
    count: int


@dataclass(frozen=True, slots=True)
class SocketChanged:
    """The advert socket of (ifname, family) is open and bound to interface `index`, or (None) is not open."""

    ifname: str
    family: str
    index: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EffectFailed:
    """Carrying out `effect` of router `router` failed; `exists`: an address to add was already there."""

    router: int
    effect: object
    error: str
    exists: bool = False


@dataclass(frozen=True, slots=True)
class Start:
    """The facts are in (links, addresses, sockets): leave INIT."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Shut down: masters resign with priority 0 and release their addresses."""


@dataclass(frozen=True, slots=True)
class Reconfigure:
    config: Config


Event = (PacketIn | LinkChanged | AddressChanged | ScriptChanged | FileValue | ProcessCount | SocketChanged
         | EffectFailed | Start | Stop | Reconfigure)


# ---- effects (outputs) --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send each (destination, VRRP message) from `src` on the socket of (ifname, family); with
    `header_included`, each is a whole IPv4 datagram (AH authentication) sent as it is (IP_HDRINCL)."""

    ifname: str
    family: str
    src: Address
    packets: tuple[tuple[Address, bytes], ...]
    header_included: bool = False
    ttl: int = 255  # the TTL / hop limit to send with (unicast_ttl); whole datagrams carry their own


@dataclass(frozen=True, slots=True)
class AddAddresses:
    ifname: str
    addresses: tuple[Interface, ...]


@dataclass(frozen=True, slots=True)
class RemoveAddresses:
    ifname: str
    addresses: tuple[Interface, ...]


@dataclass(frozen=True, slots=True)
class AddRoutes:
    """Install an instance's virtual_routes (on their dev, else `ifname`) and virtual_rules."""

    ifname: str
    routes: tuple[Route, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class RemoveRoutes:
    ifname: str
    routes: tuple[Route, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Announce:
    """Send these gratuitous ARP / unsolicited NA frames `repeat` times on `ifname`, `interval` seconds
    apart (keepalived's garp_interval / gna_interval; 0: back to back)."""

    ifname: str
    frames: tuple[bytes, ...]
    repeat: int
    interval: float = 0.0


@dataclass(frozen=True, slots=True)
class Notify:
    jobs: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class SetUpVmac:
    """Make (with `create`) or adopt macvlan `name` on `base` with address `mac`, as keepalived's use_vmac
    sets it up: no IPv6 address of its own, ARP answered only for its own addresses (and the base's sysctls
    to match), up. Bridge mode, so that the base interface still hears adverts sent from the same MAC."""

    name: str
    base: str
    mac: str
    create: bool


@dataclass(frozen=True, slots=True)
class TearDownVmac:
    """The instance is gone: delete macvlan `name` if this daemon made it, and give `base` its sysctls back."""

    name: str
    base: str
    delete: bool


@dataclass(frozen=True, slots=True)
class FilterRules:
    """Run this nft script (`vrrpd.core.accept`): make, replace or delete the instance's own table."""

    table: str
    script: str


@dataclass(frozen=True, slots=True)
class PruneFilters:
    """Delete the tables named vrrpd_* that are not in `keep` (left by an earlier run); no other table."""

    keep: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FifoLine:
    """One line for the notify FIFO, in keepalived's format: `INSTANCE "VI_1" MASTER 150` (or GROUP ... 0)."""

    line: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """For the log line and the systemd status: router `name` moved `old -> new`."""

    name: str
    vrid: int
    family: str
    old: State
    new: State
    reason: str
    priority: int


@dataclass(frozen=True, slots=True)
class OpenSocket:
    """Open (or re-open: the interface was re-created) the advert socket of (ifname, family); answer SocketChanged.
    `send_only`: a macvlan's socket (use_vmac), sending from the virtual MAC; adverts are heard on the base."""

    ifname: str
    family: str
    send_only: bool = False


@dataclass(frozen=True, slots=True)
class CloseSocket:
    ifname: str
    family: str


@dataclass(frozen=True, slots=True)
class RunScripts:
    """The health-check scripts to run now (the runtime starts the new ones and stops the others)."""

    scripts: tuple[Script, ...]


@dataclass(frozen=True, slots=True)
class WatchFiles:
    """The track_files to watch now (read each at once and whenever it is written; init_file applied first)."""

    files: tuple[TrackFile, ...]


@dataclass(frozen=True, slots=True)
class WatchProcesses:
    """The track_processes to count now (answer ProcessCount for each at once, then on every change)."""

    processes: tuple[TrackProcess, ...]


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "info" | "warning" | "error"
    event: str
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """A one-line summary for systemd's STATUS=, bounded whatever the number of instances."""

    text: str


@dataclass(frozen=True, slots=True)
class Retire:
    """The router is gone (a reload removed it): nothing follows in its queue."""


Effect = (Transmit | AddAddresses | RemoveAddresses | AddRoutes | RemoveRoutes | Announce | Notify | FifoLine
          | FilterRules | PruneFilters | SetUpVmac | TearDownVmac
          | StateChanged | OpenSocket | CloseSocket | RunScripts | WatchFiles | WatchProcesses | Log | Status | Retire)
QUEUED = (SetUpVmac, TearDownVmac, FilterRules, AddAddresses, RemoveAddresses, AddRoutes, RemoveRoutes, Announce, Notify, FifoLine, Retire)


class Routed(NamedTuple):
    router: int | None  # the router's id (stable across renames); None: the node itself
    effect: Effect
