"""Tracking: interface links and health-check scripts turned into an effective priority or a FAULT.

`evaluate` is pure; `ScriptChecker` runs one `[[script]]` on its interval in its own task, so a slow or
hung script never delays an advert (it is killed at its timeout and counted as a failure).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemonkit import log as logging
from vrrpd.config import Instance, Script

MIN_PRIORITY, MAX_PRIORITY = 1, 254


@dataclass(frozen=True, slots=True)
class Verdict:
    priority: int
    faults: frozenset[str]


def _weighted(weight: int, up: bool) -> int:
    """keepalived's rule: a negative weight counts while down, a positive one while up."""
    if weight < 0:
        return 0 if up else weight
    return weight if up else 0


def evaluate(
    instance: Instance,
    links_up: Mapping[str, bool],
    scripts_up: Mapping[str, bool | None],
    scripts: Mapping[str, Script],
) -> Verdict:
    """Effective priority (clamped 1..254, an address owner untouched) and the active fault reasons."""
    faults: set[str] = set()
    delta = 0
    if not links_up.get(instance.interface, False):
        faults.add("link_down")
    for track in instance.track_interface:
        up = links_up.get(track.name, False)
        if track.weight == 0:
            if not up:
                faults.add(f"track_interface:{track.name}")
        else:
            delta += _weighted(track.weight, up)
    for name in instance.track_script:
        up = scripts_up.get(name)
        if up is None:  # not yet decided: neither a fault nor a weight (keepalived starts scripts "unknown")
            continue
        weight = scripts[name].weight
        if weight == 0:
            if not up:
                faults.add(f"track_script:{name}")
        else:
            delta += _weighted(weight, up)
    if instance.priority == 255:
        return Verdict(255, frozenset(faults))
    return Verdict(max(MIN_PRIORITY, min(MAX_PRIORITY, instance.priority + delta)), frozenset(faults))


class ScriptChecker:
    """Runs a health-check command every `interval`; flips after `rise` successes or `fall` failures."""

    def __init__(self, script: Script, on_change: Callable[[str, bool], None]):
        self.script = script
        self.on_change = on_change
        self.up: bool | None = None
        self._streak = 0
        self._last: bool | None = None
        self._task: asyncio.Task | None = None
        self._log = logging.get("vrrpd.track", script=script.name)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"script:{self.script.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def record(self, ok: bool) -> bool | None:
        """Fold one result into the rise/fall counters; returns the new status when it flips."""
        self._streak = self._streak + 1 if ok == self._last else 1
        self._last = ok
        needed = self.script.rise if ok else self.script.fall
        if self._streak >= needed and self.up is not ok:
            self.up = ok
            return ok
        return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_run = loop.time()
        while True:
            ok = await self.run_once()
            flipped = self.record(ok)
            if flipped is not None:
                self._log.info("script_status", up=flipped)
                self.on_change(self.script.name, flipped)
            next_run += self.script.interval
            next_run = max(next_run, loop.time())
            await asyncio.sleep(next_run - loop.time())

    async def run_once(self) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.script.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.warning("script_spawn_failed", error=str(exc))
            return False
        try:
            return await asyncio.wait_for(proc.wait(), self.script.timeout) == 0
        except asyncio.TimeoutError:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            await proc.wait()
            self._log.warning("script_timeout", timeout=self.script.timeout)
            return False
