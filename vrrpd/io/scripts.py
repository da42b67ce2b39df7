"""The health-check edge: each `[[script]]` run on its interval in its own task, its status handed to the Node.

A slow or hung script never delays an advert: it is killed (its whole process group) at its timeout and
counted as a failure. Rise and fall are `vrrpd.core.tracking.RiseFall`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daemonkit import log as logging
from daemonkit.proc import cancel_and_wait, kill_group
from vrrpd.config import Script
from vrrpd.core.tracking import RiseFall


class ScriptChecker:
    def __init__(self, script: Script, on_change: Callable[[str, bool], None]):
        self.script = script
        self.on_change = on_change
        self.status = RiseFall(script.rise, script.fall)
        self._task: asyncio.Task | None = None
        self._log = logging.get("vrrpd.scripts", script=script.name)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"script:{self.script.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_run = loop.time()
        while True:
            flipped = self.status.record(await self.run_once())
            if flipped is not None:
                self._log.info("script_status", up=flipped)
                self.on_change(self.script.name, flipped)
            next_run = max(next_run + self.script.interval, loop.time())
            await asyncio.sleep(next_run - loop.time())

    async def run_once(self) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.script.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._log.warning("script_spawn_failed", error=str(exc))
            return False
        try:
            return await asyncio.wait_for(proc.wait(), self.script.timeout) == 0
        except asyncio.TimeoutError:
            kill_group(proc.pid)
            await proc.wait()
            self._log.warning("script_timeout", timeout=self.script.timeout)
            return False


class Scripts:
    """The checkers the Node asks for (RunScripts): new ones started, dropped or changed ones stopped."""

    def __init__(self, on_change: Callable[[str, bool], None]):
        self.on_change = on_change
        self.checkers: dict[str, ScriptChecker] = {}

    async def run(self, scripts: tuple[Script, ...]) -> None:
        wanted = {s.name: s for s in scripts}
        for name in list(self.checkers):
            if wanted.get(name) != self.checkers[name].script:
                await self.checkers.pop(name).stop()
        for name, script in wanted.items():
            if name not in self.checkers:
                self.checkers[name] = ScriptChecker(script, self.on_change)
                self.checkers[name].start()

    async def stop(self) -> None:
        await self.run(())
