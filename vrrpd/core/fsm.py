"""The virtual-router state machine of RFC 5798 section 6.4: events and `now` in, effects and a deadline out.

No sockets, no clock, no asyncio: the runtime feeds `loop.time()` (seconds) into every call and carries
the returned effects out. Intervals are kept in centiseconds as the RFC states them; deadlines are in the
caller's clock (seconds).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from daemonkit.net import Address
from vrrpd.core.packet import Advert


class State(str, enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOP = "STOP"


# The moves the machine may make (RFC 5798 6.4 plus FAULT and STOP); `_change_state` refuses any other.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.INIT: frozenset({State.BACKUP, State.MASTER, State.FAULT, State.STOP}),
    State.BACKUP: frozenset({State.MASTER, State.FAULT, State.STOP}),
    State.MASTER: frozenset({State.BACKUP, State.FAULT, State.STOP}),
    State.FAULT: frozenset({State.BACKUP, State.MASTER, State.STOP}),
    State.STOP: frozenset(),
}

OWNER_PRIORITY = 255
# A master that hears a lower-priority master re-announces its addresses this long after the first such
# advert: adverts that arrive together (a backlog after a freeze, a split brain healing) cause one burst,
# and it goes out after whatever the other node announced while it believed itself master.
REANNOUNCE_DELAY_S = 0.05
LAST_WORD_REPEATS = 2  # after yielding, the last advert is sent again this often (see _advert_in_master)


class ProtocolMisuse(RuntimeError):
    """Our own code drove the state machine wrongly (as h11's LocalProtocolError): a bug, never peer input."""


# ---- why a router is in FAULT ----------------------------------------------------------------------------
# Typed values, so that whoever manages a reason (the Node's tracking, its sync groups) finds its own by type,
# never by parsing a string. `label` is what logs, status and notify show.


@dataclass(frozen=True, slots=True)
class NoInterface:
    """The instance's interface does not exist (not yet created, deleted, renamed away)."""

    label = "no_interface"


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The instance's own interface is down or has no carrier."""

    label = "link_down"


@dataclass(frozen=True, slots=True)
class NoSocket:
    """No working advert socket on the interface as it is now (just re-created, or the socket failed)."""

    label = "no_socket"


@dataclass(frozen=True, slots=True)
class NoAddress:
    """The interface has no usable source address for adverts (RFC 5798 5.1.1.1 / 5.1.2.1)."""

    label = "no_address"


@dataclass(frozen=True, slots=True)
class NoVmac:
    """use_vmac: the macvlan is missing, down, not yet set up, or its name is taken by another interface."""

    label = "no_vmac"


@dataclass(frozen=True, slots=True)
class _TrackedDown:
    """A tracked object of kind `kind` (the instance key that names it) puts the router in FAULT."""

    name: str
    kind: ClassVar[str] = ""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class TrackedInterfaceDown(_TrackedDown):
    """A weight-0 track_interface is down or missing."""

    kind = "track_interface"


@dataclass(frozen=True, slots=True)
class TrackedScriptDown(_TrackedDown):
    """A weight-0 track_script reports down."""

    kind = "track_script"


@dataclass(frozen=True, slots=True)
class TrackedFileFault(_TrackedDown):
    """A track_file says FAULT: a non-zero value with weight 0, or value x weight below -253."""

    kind = "track_file"


@dataclass(frozen=True, slots=True)
class TrackedProcessDown(_TrackedDown):
    """A weight-0 track_process has lost its quorum."""

    kind = "track_process"


@dataclass(frozen=True, slots=True)
class SyncHeld:
    """Another member of sync group `group` is in FAULT for a reason of its own."""

    group: str

    @property
    def label(self) -> str:
        return f"sync:{self.group}"


FaultReason = (NoInterface | LinkDown | NoSocket | NoAddress | NoVmac | TrackedInterfaceDown | TrackedScriptDown
               | TrackedFileFault | TrackedProcessDown | SyncHeld)


# ---- events (inputs) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Startup:
    """Leave INIT (RFC 5798 6.4.1)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Leave for good: a master sends priority 0 and releases its addresses."""


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    """A validated advertisement for this router from `src` (the sender's primary address)."""

    advert: Advert
    src: Address


@dataclass(frozen=True, slots=True)
class FaultChanged:
    """A reason to be in FAULT arose (`active`) or went away."""

    active: bool
    reason: FaultReason


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """Tracking moved the effective priority (already clamped by the caller)."""

    priority: int


@dataclass(frozen=True, slots=True)
class SyncTo:
    """A sync group asks this router to follow a sibling into `state` (keepalived vrrp_sync_group)."""

    state: State
    reason: str


Event = Startup | Shutdown | AdvertReceived | FaultChanged | PriorityChanged | SyncTo


# ---- effects (outputs) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send one advertisement with this priority (0 on resignation)."""

    priority: int


@dataclass(frozen=True, slots=True)
class AddAddresses:
    """Install the virtual addresses on the interface."""


@dataclass(frozen=True, slots=True)
class RemoveAddresses:
    """Remove the virtual addresses from the interface."""


@dataclass(frozen=True, slots=True)
class Announce:
    """Send `count` gratuitous ARPs / unsolicited neighbour advertisements for every virtual address;
    `delayed`: the second round, garp_master_delay after taking over (keepalived's)."""

    count: int
    delayed: bool = False


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The router moved `old -> new`; the runtime logs, counts and notifies."""

    old: State
    new: State
    reason: str


Effect = SendAdvert | AddAddresses | RemoveAddresses | Announce | StateChanged


# ---- parameters ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterParams:
    """What the state machine needs from the configuration and the interface."""

    vrid: int
    priority: int  # configured priority, 1..255
    advert_interval_cs: int  # Advertisement_Interval
    primary_address: Address  # our source address: the tie-breaker of RFC 5798 6.4.3
    version: int = 3
    preempt: bool = True
    preempt_delay_cs: int = 0
    garp_repeat: int = 5
    garp_refresh_cs: int = 0
    garp_master_delay_cs: int = 0  # keepalived's garp_master_delay: a second round this long after taking over
    garp_refresh_repeat: int = 1  # messages per address at each refresh (garp_master_refresh_repeat)
    garp_lower_prio_repeat: int | None = None  # after a lower-priority master was heard; None: garp_repeat; 0: none

    @property
    def lower_prio_repeat(self) -> int:
        return self.garp_repeat if self.garp_lower_prio_repeat is None else self.garp_lower_prio_repeat
    # A sync-group member does not take over alone: when its Master_Down_Timer expires it only wants to, and
    # the group lets its members go MASTER together once every one of them wants to (keepalived's
    # vrrp_sync_can_goto_master: prefer BACKUP to thrashing).
    sync_gated: bool = False

    @property
    def owner(self) -> bool:
        return self.priority == OWNER_PRIORITY


def skew_time_cs(priority: int, master_adver_interval_cs: int, version: int = 3) -> int:
    """RFC 5798 6.1: ((256 - Priority) * Master_Adver_Interval) / 256; RFC 3768 (v2): (256 - Priority) / 256 s."""
    if version == 2:
        return ((256 - priority) * 100) // 256
    return ((256 - priority) * master_adver_interval_cs) // 256


def master_down_interval_cs(priority: int, master_adver_interval_cs: int, version: int = 3) -> int:
    """RFC 5798 6.1: (3 * Master_Adver_Interval) + Skew_Time."""
    return 3 * master_adver_interval_cs + skew_time_cs(priority, master_adver_interval_cs, version)


def _cs(value_cs: int) -> float:
    return value_cs / 100.0


@dataclass(slots=True)
class _Timers:
    adver: float | None = None  # Adver_Timer (MASTER)
    master_down: float | None = None  # Master_Down_Timer (BACKUP)
    garp_refresh: float | None = None  # periodic re-announcement (MASTER, garp_refresh > 0)
    preempt_until: float | None = None  # BACKUP: a lower-priority master is tolerated until then (preempt_delay)
    reannounce: float | None = None  # MASTER: a lower-priority master was heard; announce again then
    answered: float | None = None  # MASTER: when a lower-priority master was last answered at once
    garp_delay: float | None = None  # MASTER: the delayed second round of announcements (garp_master_delay)
    last_word: float | None = None  # BACKUP, just yielded: the next repeat of the last advert
    last_words: int = 0  # how many repeats are left

    def clear(self) -> None:
        self.adver = self.master_down = self.garp_refresh = self.preempt_until = self.reannounce = None
        self.answered = self.garp_delay = None
        self.last_word, self.last_words = None, 0


@dataclass
class VirtualRouter:
    """One VRRP virtual router (one instance): the RFC 5798 6.4 machine plus FAULT and STOP."""

    params: RouterParams
    state: State = State.INIT
    effective_priority: int = 0
    master_adver_interval_cs: int = 0
    master_address: Address | None = None
    # BACKUP, sync-gated: the Master_Down_Timer expired and this router waits for its group to go MASTER.
    wants_master: bool = False
    _faults: set[FaultReason] = field(default_factory=set)
    _timers: _Timers = field(default_factory=_Timers)

    def __post_init__(self) -> None:
        if not self.effective_priority:
            self.effective_priority = self.params.priority
        self.master_adver_interval_cs = self.params.advert_interval_cs

    # -- derived values ------------------------------------------------------------------------------

    @property
    def faults(self) -> frozenset[FaultReason]:
        """Every reason this router is (or, before start-up, will be) in FAULT."""
        return frozenset(self._faults)

    @property
    def skew_time_cs(self) -> int:
        return skew_time_cs(self.effective_priority, self.master_adver_interval_cs, self.params.version)

    @property
    def master_down_interval_cs(self) -> int:
        return master_down_interval_cs(self.effective_priority, self.master_adver_interval_cs, self.params.version)

    def next_deadline(self) -> float | None:
        """The earliest time `handle_timer` has work to do, or None."""
        t = self._timers
        if self.state is State.BACKUP:
            if t.last_word is None:
                return t.master_down  # the one timer a backup runs, but for a moment after yielding
            return t.last_word if t.master_down is None else min(t.master_down, t.last_word)
        pending = [d for d in (t.adver, t.master_down, t.garp_refresh, t.reannounce, t.garp_delay) if d is not None]
        return min(pending) if pending else None

    # -- entry points --------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        if self.state is State.STOP:
            return []
        match event:
            case Startup():
                return self._startup(now)
            case Shutdown():
                return self._shutdown()
            case AdvertReceived(advert=advert, src=src):
                return self.receive_advert(advert, src, now)
            case FaultChanged(active=active, reason=reason):
                return self._fault(active, reason, now)
            case PriorityChanged(priority=priority):
                return self._priority(priority, now)
            case SyncTo(state=target, reason=reason):
                return self._sync(target, reason, now)
        raise ProtocolMisuse(f"unknown event {event!r}")

    def handle_timer(self, now: float) -> list[Effect]:
        t = self._timers
        effects: list[Effect] = []
        if self.state is State.BACKUP and t.last_word is not None and now >= t.last_word:
            t.last_words -= 1
            t.last_word = now + _cs(self.params.advert_interval_cs) if t.last_words > 0 else None
            effects.append(SendAdvert(self.effective_priority))
        if self.state is State.BACKUP and t.master_down is not None and now >= t.master_down:
            if self.params.sync_gated:
                t.master_down = None
                self.wants_master = True
            else:
                effects += self._become_master(now, "master_down")
        if self.state is State.MASTER and t.adver is not None and now >= t.adver:
            t.adver = now + _cs(self.params.advert_interval_cs)
            effects.append(SendAdvert(self.effective_priority))
        if self.state is State.MASTER and t.garp_refresh is not None and now >= t.garp_refresh:
            t.garp_refresh = now + _cs(self.params.garp_refresh_cs)
            effects.append(Announce(self.params.garp_refresh_repeat))
        if self.state is State.MASTER and t.reannounce is not None and now >= t.reannounce:
            t.reannounce = None
            effects.append(Announce(self.params.lower_prio_repeat))
        if self.state is State.MASTER and t.garp_delay is not None and now >= t.garp_delay:
            t.garp_delay = None
            effects.append(Announce(self.params.garp_repeat, delayed=True))
        return effects

    def reconfigure(self, params: RouterParams) -> None:
        """Hot reload of an unchanged (interface, vrid, family), or a new source address: keep the state,
        adopt the new settings (a new priority is the caller's PriorityChanged)."""
        if params.vrid != self.params.vrid:
            raise ProtocolMisuse("reload cannot change the VRID of a router")
        self.params = params
        if not params.sync_gated:
            self.wants_master = False
        if self.params.owner:
            self.effective_priority = OWNER_PRIORITY
        elif self.effective_priority == OWNER_PRIORITY:
            self.effective_priority = params.priority

    # -- transitions ---------------------------------------------------------------------------------

    def _change_state(self, new: State, reason: str) -> list[Effect]:
        """The one funnel every transition passes through; a move TRANSITIONS does not list is our bug."""
        if new not in TRANSITIONS[self.state]:
            raise ProtocolMisuse(f"no transition {self.state.value} -> {new.value} ({reason})")
        old, self.state = self.state, new
        self.wants_master = False
        return [StateChanged(old, new, reason)]

    def _become_master(self, now: float, reason: str) -> list[Effect]:
        """RFC 5798 6.4.1 / 6.4.2: advertise, take the addresses, announce them."""
        t = self._timers
        t.clear()
        t.adver = now + _cs(self.params.advert_interval_cs)
        if self.params.garp_refresh_cs > 0:
            t.garp_refresh = now + _cs(self.params.garp_refresh_cs)
        if self.params.garp_master_delay_cs > 0 and self.params.garp_repeat > 0:
            t.garp_delay = now + _cs(self.params.garp_master_delay_cs)
        self.master_adver_interval_cs = self.params.advert_interval_cs
        self.master_address = self.params.primary_address
        effects: list[Effect] = [SendAdvert(self.effective_priority), AddAddresses()]
        if self.params.garp_repeat > 0:
            effects.append(Announce(self.params.garp_repeat))
        return effects + self._change_state(State.MASTER, reason)

    def _become_backup(
        self, now: float, reason: str, master: Address | None = None, master_adver_interval_cs: int = 0
    ) -> list[Effect]:
        """RFC 5798 6.4.1 / 6.4.3: wait Master_Down_Interval for a master to be heard."""
        was_master = self.state is State.MASTER
        t = self._timers
        t.clear()
        self.master_address = master
        learned = self.params.version == 3 and master_adver_interval_cs > 0
        self.master_adver_interval_cs = master_adver_interval_cs if learned else self.params.advert_interval_cs
        t.master_down = now + _cs(self.master_down_interval_cs)
        effects: list[Effect] = [RemoveAddresses()] if was_master else []
        return effects + self._change_state(State.BACKUP, reason)

    def _leave(self, new: State, reason: str) -> list[Effect]:
        """To FAULT or STOP: a master resigns with priority 0 (RFC 5798 6.4.3) and releases the addresses."""
        effects: list[Effect] = []
        if self.state is State.MASTER:
            effects = [SendAdvert(0), RemoveAddresses()]
        self._timers.clear()
        self.master_address = None
        return effects + self._change_state(new, reason)

    def _startup(self, now: float) -> list[Effect]:
        if self.state is not State.INIT:
            raise ProtocolMisuse(f"startup in {self.state.value}")
        if self._faults:
            return self._change_state(State.FAULT, min(f.label for f in self._faults))
        if self.params.owner:
            return self._become_master(now, "address_owner")
        return self._become_backup(now, "startup")

    def _shutdown(self) -> list[Effect]:
        return self._leave(State.STOP, "shutdown")

    def receive_advert(self, advert: Advert, src: Address, now: float) -> list[Effect]:
        """handle(AdvertReceived(advert, src)) without the event object: the path a busy backup takes a
        thousand times a second."""
        if self.state is State.BACKUP:
            return self._advert_in_backup(advert, src, now)
        if self.state is State.MASTER:
            return self._advert_in_master(advert, src, now)
        return []  # INIT and FAULT ignore adverts (RFC 5798 6.4.1)

    def _outranks_us(self, priority: int, src: Address) -> bool:
        """RFC 5798 6.4.3, between two masters: a higher priority wins; on a tie, the higher primary address
        (unsigned, network order). A backup never applies the tie-break (6.4.2: priority only)."""
        if priority != self.effective_priority:
            return priority > self.effective_priority
        return int(src) > int(self.params.primary_address)

    def _advert_in_backup(self, advert: Advert, src: Address, now: float) -> list[Effect]:
        t = self._timers
        if advert.priority == 0:
            # RFC 5798 6.4.2: the master resigned; take over after Skew_Time.
            if not self.wants_master:
                t.master_down = now + _cs(self.skew_time_cs)
            return []
        # RFC 5798 6.4.2: a master of equal or higher priority is accepted; so an equal-priority backup that
        # restarts leaves a live master alone, as keepalived and FRR do.
        tolerated = not self.params.preempt or advert.priority >= self.effective_priority
        if tolerated:
            t.preempt_until = None
        elif self.params.preempt_delay_cs > 0:
            # keepalived's preempt_delay: counted from the first lower-priority master heard in BACKUP, and a
            # lower-priority master is left alone until the window closes.
            if t.preempt_until is None:
                t.preempt_until = now + _cs(self.params.preempt_delay_cs)
            tolerated = now < t.preempt_until
        if not tolerated:
            return []  # let Master_Down_Timer expire: we preempt (RFC 5798 6.4.2)
        if self.params.version == 3:
            self.master_adver_interval_cs = advert.adver_int_cs
        self.master_address = src
        self.wants_master = False
        t.master_down = now + _cs(self.master_down_interval_cs)
        return []

    def _advert_in_master(self, advert: Advert, src: Address, now: float) -> list[Effect]:
        t = self._timers
        if advert.priority == 0:
            # RFC 5798 6.4.3: another master resigned; re-assert at once.
            t.adver = now + _cs(self.params.advert_interval_cs)
            return [SendAdvert(self.effective_priority)]
        if self._outranks_us(advert.priority, src) and (not self.params.owner or advert.priority == OWNER_PRIORITY):
            # Two address owners (a misconfiguration) would never settle: RFC 9568 6.4.3 has the lower
            # address yield, and this is that case too. The Node logs the conflict.
            # Yielding, we send one last advert at our priority: the winner, hearing a lower-priority
            # master, re-announces the addresses. Without it a split brain that heals with the winner's
            # advert arriving first leaves hosts pointing at us (our gratuitous ARPs were the last they
            # heard) until their ARP entries expire, tens of seconds (found by the chaos run). A partition
            # heals one side first as often as not (a filter lifted here before there): the winner may not
            # hear us yet, so the last word is said again, twice, an advert interval apart.
            effects = [SendAdvert(self.effective_priority)] + self._become_backup(
                now, "higher_priority_master", src, advert.adver_int_cs)
            if LAST_WORD_REPEATS:
                t.last_word, t.last_words = now + _cs(self.params.advert_interval_cs), LAST_WORD_REPEATS
            return effects
        # RFC 9568 6.4.3: a lower-priority master exists: re-advertise at once so it yields, and
        # re-announce, since switches and hosts may still point at the other node (keepalived issue 166):
        # once, shortly, for however many such adverts arrive meanwhile.
        # At most once per advert interval: two masters that both think they win must not ping-pong at the
        # speed of the link; the regular Adver_Timer speaks for us in between.
        if t.reannounce is None and self.params.lower_prio_repeat > 0:
            t.reannounce = now + REANNOUNCE_DELAY_S
        if t.answered is not None and now - t.answered < _cs(self.params.advert_interval_cs):
            return []
        t.answered = now
        t.adver = now + _cs(self.params.advert_interval_cs)
        return [SendAdvert(self.effective_priority)]

    def _fault(self, active: bool, reason: FaultReason, now: float) -> list[Effect]:
        if active:
            self._faults.add(reason)
            if self.state in (State.INIT, State.FAULT):
                return []
            return self._leave(State.FAULT, reason.label)
        self._faults.discard(reason)
        if self.state is not State.FAULT or self._faults:
            return []
        if self.params.owner:
            return self._become_master(now, f"{reason.label}_recovered")
        return self._become_backup(now, f"{reason.label}_recovered")

    def _priority(self, priority: int, now: float) -> list[Effect]:
        if self.params.owner or priority == self.effective_priority:
            return []
        if not 1 <= priority <= 254:
            raise ProtocolMisuse(f"effective priority {priority} outside 1..254")
        self.effective_priority = priority
        if self.state is State.MASTER:
            # Tell the backups now: a lowered master is preempted without waiting an interval.
            self._timers.adver = now + _cs(self.params.advert_interval_cs)
            return [SendAdvert(priority)]
        return []

    def _sync(self, target: State, reason: str, now: float) -> list[Effect]:
        if target is self.state or self.state in (State.INIT, State.STOP):
            return []
        if target is State.MASTER:
            if self.state is State.FAULT:
                return []
            return self._become_master(now, reason)
        if target is State.BACKUP:
            if self.state is State.FAULT:
                return []
            return self._become_backup(now, reason, master=None)
        if target is State.FAULT:
            return self._leave(State.FAULT, reason)
        raise ProtocolMisuse(f"sync to {target.value}")


__all__ = [
    "FaultReason",
    "LinkDown",
    "NoAddress",
    "NoInterface",
    "NoSocket",
    "NoVmac",
    "SyncHeld",
    "TRANSITIONS",
    "TrackedFileFault",
    "TrackedInterfaceDown",
    "TrackedProcessDown",
    "TrackedScriptDown",
    "AddAddresses",
    "Announce",
    "AdvertReceived",
    "Effect",
    "Event",
    "FaultChanged",
    "OWNER_PRIORITY",
    "PriorityChanged",
    "REANNOUNCE_DELAY_S",
    "ProtocolMisuse",
    "RemoveAddresses",
    "RouterParams",
    "SendAdvert",
    "Shutdown",
    "Startup",
    "State",
    "StateChanged",
    "SyncTo",
    "VirtualRouter",
    "master_down_interval_cs",
    "skew_time_cs",
]
