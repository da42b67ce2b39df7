"""Tracking arithmetic: what tracked links and scripts do to an instance's priority, and when a script flips.

keepalived's rules: a negative weight counts while the object is down, a positive one while it is up, weight 0
means FAULT while it is down; the sum is clamped to 1..254, and an address owner's 255 is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vrrpd.config import Instance, Script
from vrrpd.core.fsm import OWNER_PRIORITY, FaultReason, TrackedInterfaceDown, TrackedScriptDown

MIN_PRIORITY, MAX_PRIORITY = 1, 254


@dataclass(frozen=True, slots=True)
class Verdict:
    priority: int
    faults: frozenset[FaultReason]


def _weighted(weight: int, up: bool) -> int:
    if weight < 0:
        return 0 if up else weight
    return weight if up else 0


def evaluate(
    instance: Instance,
    links_up: Mapping[str, bool],
    scripts_up: Mapping[str, bool | None],
    scripts: Mapping[str, Script],
) -> Verdict:
    """The effective priority and the tracking faults of `instance`; a missing link is down, a script not yet
    decided (None) counts for nothing (keepalived starts scripts "unknown")."""
    faults: set[FaultReason] = set()
    delta = 0
    for track in instance.track_interface:
        up = links_up.get(track.name, False)
        if track.weight == 0:
            if not up:
                faults.add(TrackedInterfaceDown(track.name))
        else:
            delta += _weighted(track.weight, up)
    for name in instance.track_script:
        up = scripts_up.get(name)
        if up is None:
            continue
        weight = scripts[name].weight
        if weight == 0:
            if not up:
                faults.add(TrackedScriptDown(name))
        else:
            delta += _weighted(weight, up)
    if instance.priority == OWNER_PRIORITY:
        return Verdict(OWNER_PRIORITY, frozenset(faults))
    return Verdict(max(MIN_PRIORITY, min(MAX_PRIORITY, instance.priority + delta)), frozenset(faults))


class RiseFall:
    """A script's status from its results: up after `rise` consecutive successes, down after `fall` failures."""

    def __init__(self, rise: int, fall: int):
        self.rise, self.fall = rise, fall
        self.up: bool | None = None
        self._streak = 0
        self._last: bool | None = None

    def record(self, ok: bool) -> bool | None:
        """Fold one result in; returns the new status when it flips, else None."""
        self._streak = self._streak + 1 if ok == self._last else 1
        self._last = ok
        needed = self.rise if ok else self.fall
        if self._streak >= needed and self.up is not ok:
            self.up = ok
            return ok
        return None
