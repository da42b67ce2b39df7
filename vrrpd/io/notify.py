"""The notify edge: jobs run one at a time per daemon, in transition order, each under a timeout, never
blocking adverts (a hung or failing command is logged and counted)."""

from __future__ import annotations

import asyncio
import os

from daemonkit import log as logging
from daemonkit.proc import cancel_and_wait, kill_group
from vrrpd.core.notify import Job

DEFAULT_TIMEOUT_S = 10.0
MAX_QUEUED = 1000


class NotifyRunner:
    """A FIFO of jobs drained by one task; a hung job is killed at its timeout and the next one starts."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S):
        self.timeout = timeout
        self._queue: asyncio.Queue[Job] = asyncio.Queue(MAX_QUEUED)
        self._task: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.failures = 0
        self.completed = 0
        self.dropped = 0
        self.exits: dict[str, int] = {}  # exit code ("0", "1", ...), "timeout" or "spawn_error" -> commands
        self.seconds = 0.0  # time spent running commands, in total
        self._log = logging.get("vrrpd.notify")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="notify")

    def submit(self, jobs) -> None:
        for job in jobs:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self.dropped += 1
                self._log.error("notify_dropped", argv=list(job.argv), reason="queue_full")

    async def flush(self, deadline: float) -> None:
        """Wait until every job submitted so far has run, or `deadline` (loop time) passes; used before exit."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._queue.join(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self._log.error("notify_flush_incomplete", queued=self._queue.qsize())

    async def stop(self) -> None:
        """Cancel the drain; a command still running is killed, never left behind as an orphan."""
        await cancel_and_wait(self._task)
        if self._proc is not None and self._proc.returncode is None:
            kill_group(self._proc.pid)
            await self._proc.wait()

    async def _drain(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            finally:
                self._queue.task_done()

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await self._outcome(job)
        self.seconds += loop.time() - started
        self.exits[outcome] = self.exits.get(outcome, 0) + 1

    async def _outcome(self, job: Job) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *job.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env={**os.environ, **dict(job.env)}, start_new_session=True)
        except OSError as exc:
            self.failures += 1
            self._log.error("notify_failed", argv=list(job.argv), error=str(exc))
            return "spawn_error"
        self._proc = proc
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            self.failures += 1
            kill_group(proc.pid)
            await proc.wait()
            self._log.error("notify_timeout", argv=list(job.argv), timeout=self.timeout)
            return "timeout"
        if proc.returncode != 0:
            self.failures += 1
            self._log.warning("notify_failed", argv=list(job.argv), exit=proc.returncode,
                              stderr=stderr.decode(errors="replace")[-500:])
        else:
            self.completed += 1
        return str(proc.returncode)
