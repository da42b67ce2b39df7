"""Tracking arithmetic: what tracked links, scripts, files and processes do to an instance's priority, when a
script flips, and which processes match a track_process.

keepalived's rules: a negative weight counts while the object is down, a positive one while it is up, weight 0
means FAULT while it is down; the sum is clamped to 1..254, and an address owner's 255 is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vrrpd.config import Instance, Script, TrackFile, TrackProcess
from vrrpd.core.fsm import (
    OWNER_PRIORITY, FaultReason, TrackedFileFault, TrackedInterfaceDown, TrackedProcessDown, TrackedScriptDown,
)

MIN_PRIORITY, MAX_PRIORITY = 1, 254
FILE_FAULT_BELOW = -253  # keepalived: a track_file whose value x weight is below this means FAULT


@dataclass(frozen=True, slots=True)
class Verdict:
    priority: int
    faults: frozenset[FaultReason]


def _weighted(weight: int, up: bool) -> int:
    if weight < 0:
        return 0 if up else weight
    return weight if up else 0


@dataclass(frozen=True, slots=True)
class Tracked:
    """What the tracked files and processes say now: a file's value (None: not read yet), whether a process
    has its quorum (None: not known yet), and their tables."""

    file_values: Mapping[str, int | None]
    processes_up: Mapping[str, bool | None]
    files: Mapping[str, TrackFile]
    processes: Mapping[str, TrackProcess]


NOTHING_TRACKED = Tracked({}, {}, {}, {})


def evaluate(
    instance: Instance,
    links_up: Mapping[str, bool],
    scripts_up: Mapping[str, bool | None],
    scripts: Mapping[str, Script],
    tracked: Tracked = NOTHING_TRACKED,
) -> Verdict:
    """The effective priority and the tracking faults of `instance`; a missing link is down, a script not yet
    decided (None) counts for nothing (keepalived starts scripts "unknown")."""
    faults: set[FaultReason] = set()
    delta = 0
    for ref in instance.track_file:
        value = tracked.file_values.get(ref.name)
        if value is None:
            continue
        weight = tracked.files[ref.name].weight if ref.weight is None else ref.weight
        if weight == 0:
            if value != 0:
                faults.add(TrackedFileFault(ref.name))
        elif value * weight < FILE_FAULT_BELOW:
            faults.add(TrackedFileFault(ref.name))
        else:
            delta += value * weight
    for ref in instance.track_process:
        up = tracked.processes_up.get(ref.name)
        if up is None:
            continue
        weight = tracked.processes[ref.name].weight if ref.weight is None else ref.weight
        if weight == 0:
            if not up:
                faults.add(TrackedProcessDown(ref.name))
        else:
            delta += _weighted(weight, up)
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


def process_matches(track: TrackProcess, comm: str, argv: tuple[str, ...]) -> bool:
    """keepalived's match: the process name (comm) equal to `process`, or with full_command or arguments,
    argv[0] equal to it and the arguments matched exactly, as a leading part (partial), or with the last one a
    prefix (initial). No regular expression: "ssh" is not "sshd"."""
    if not track.by_command_line:
        return comm == track.process
    if not argv or argv[0] != track.process:
        return False
    if track.param_match is None:
        return True
    want, have = track.args or (), argv[1:]
    if track.param_match == "exact":
        return have == want
    if len(have) < len(want):
        return False
    if track.param_match == "partial" or not want:
        return have[:len(want)] == want
    return have[:len(want) - 1] == want[:-1] and have[len(want) - 1].startswith(want[-1])
