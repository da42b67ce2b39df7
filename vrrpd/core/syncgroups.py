"""The Node's sync groups (keepalived's vrrp_sync_group): members coupled by state-triggered transitions, folded
to a fixed point inside each call so that no member waits for I/O to follow another."""

from __future__ import annotations

from vrrpd.core import fsm
from vrrpd.core.events import FifoLine
from vrrpd.core.fsm import State
from vrrpd.core.notify import fifo_line, group_state
from vrrpd.core.router import Router

MAX_SETTLE_ROUNDS = 64  # a fixed point is reached in a few rounds; more means a bug in the coupling rules


class SyncGroups:
    """A part of `Node` (vrrpd.core.node), which holds all the state; one concern per file, as the node's sections."""

    def _settle(self, now: float) -> None:
        """keepalived's vrrp_sync_group, as state-triggered transitions folded to a fixed point (h11's rule)."""
        for _ in range(MAX_SETTLE_ROUNDS):
            if not self._dirty_groups:
                self._group_lines()
                return
            dirty, self._dirty_groups = self._dirty_groups, set()
            for name in sorted(dirty):
                self._settle_group(name, self._groups.get(name, []), now)
        raise fsm.ProtocolMisuse(f"sync groups did not settle in {MAX_SETTLE_ROUNDS} rounds")

    def _group_lines(self) -> None:
        """keepalived writes `GROUP "name" STATE 0` when a sync group as a whole changes state; the line goes
        through its first member's queue, behind that member's own transition."""
        if not self.config.global_.notify_fifo:
            return
        for name, members in self._groups.items():
            if len(members) < 2:
                continue
            state = group_state([r.fsm.state for r in members])
            if state is not None and self._group_states.get(name) is not state:
                self._group_states[name] = state
                self._emit(members[0], FifoLine(fifo_line("GROUP", name, state.value, 0)))

    def _settle_group(self, name: str, members: list[Router], now: float) -> None:
        held = fsm.SyncHeld(name)
        # One member in FAULT for a reason of its own holds every other member in FAULT.
        faulty = {r.id for r in members if any(not isinstance(f, fsm.SyncHeld) for f in r.fsm.faults)}
        for r in members:
            hold = bool(faulty - {r.id})
            if hold != (held in r.fsm.faults):
                self._apply(r, r.fsm.handle(fsm.FaultChanged(hold, held), now), now)
        # A member that gave MASTER up (a higher priority master) takes its masters along to BACKUP.
        if name in self._yielded:
            self._yielded.discard(name)
            for r in members:
                if r.fsm.state is State.MASTER:
                    self._apply(r, r.fsm.handle(fsm.SyncTo(State.BACKUP, f"sync_group:{name}"), now), now)
        # MASTER only together: once every member is MASTER or wants to be (keepalived: prefer BACKUP to
        # thrashing when the members' peers disagree).
        wanting = [r for r in members if r.fsm.wants_master]
        if wanting and all(r.fsm.state is State.MASTER or r.fsm.wants_master for r in members):
            for r in wanting:
                self._apply(r, r.fsm.handle(fsm.SyncTo(State.MASTER, f"sync_group:{name}"), now), now)
