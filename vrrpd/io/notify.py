"""Notify commands: run one at a time per daemon, in transition order, each under a timeout, never blocking adverts."""

from __future__ import annotations

import asyncio
import os
import shlex
from dataclasses import dataclass

from daemonkit import log as logging

DEFAULT_TIMEOUT = 10.0
MAX_QUEUED = 1000


@dataclass(frozen=True, slots=True)
class Job:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def jobs_for(
    instance: str, state: str, priority: int, notify: str | None, per_state: str | None
) -> list[Job]:
    """What keepalived runs on a transition: the per-state command, then `notify INSTANCE name STATE prio`."""
    env = (("VRRPD_INSTANCE", instance), ("VRRPD_STATE", state), ("VRRPD_PRIORITY", str(priority)))
    jobs = []
    if per_state:
        jobs.append(Job(tuple(shlex.split(per_state)), env))
    if notify:
        jobs.append(Job((*shlex.split(notify), "INSTANCE", instance, state, str(priority)), env))
    return jobs


class NotifyRunner:
    """A FIFO of jobs drained by one task; a hung job is killed at its timeout and the next one starts."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._queue: asyncio.Queue[Job] = asyncio.Queue(MAX_QUEUED)
        self._task: asyncio.Task | None = None
        self.failures = 0
        self.completed = 0
        self.dropped = 0
        self._log = logging.get("vrrpd.notify")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="notify")

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self.dropped += 1
                self._log.error("notify_dropped", argv=list(job.argv), reason="queue_full")

    async def flush(self, deadline: float) -> None:
        """Wait until the queue is empty or `deadline` (loop time) passes; used before exit."""
        loop = asyncio.get_running_loop()
        while self._queue.qsize() or self._busy:
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Cancel the drain; a command still running is killed, never left behind as an orphan."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._proc is not None and self._proc.returncode is None:
            _kill_group(self._proc.pid)
            await self._proc.wait()

    _busy = False
    _proc: asyncio.subprocess.Process | None = None

    async def _drain(self) -> None:
        while True:
            job = await self._queue.get()
            self._busy = True
            try:
                await self._run(job)
            finally:
                self._busy = False

    async def _run(self, job: Job) -> None:
        env = {**os.environ, **dict(job.env)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *job.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.failures += 1
            self._log.error("notify_failed", argv=list(job.argv), error=str(exc))
            return
        self._proc = proc
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            self.failures += 1
            _kill_group(proc.pid)
            await proc.wait()
            self._log.error("notify_timeout", argv=list(job.argv), timeout=self.timeout)
            return
        if proc.returncode != 0:
            self.failures += 1
            self._log.warning(
                "notify_failed", argv=list(job.argv), exit=proc.returncode, stderr=stderr.decode(errors="replace")[-500:]
            )
        else:
            self.completed += 1


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
