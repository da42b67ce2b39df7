"""Child processes and tasks: the two idioms every edge repeats, written once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (a command started with start_new_session), if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel `task` and wait until it has finished; its CancelledError is not ours to see."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
