"""What a transition runs: keepalived's notify convention as argument vectors (running them is `vrrpd.io.notify`)."""

from __future__ import annotations

from dataclasses import dataclass

from vrrpd.config import Instance
from vrrpd.core.fsm import State


@dataclass(frozen=True, slots=True)
class Job:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def jobs_for(instance: Instance, state: State, priority: int) -> tuple[Job, ...]:
    """The per-state command, then `notify INSTANCE <name> <state> <priority>`, as keepalived runs them."""
    per_state = {
        State.MASTER: instance.notify_master,
        State.BACKUP: instance.notify_backup,
        State.FAULT: instance.notify_fault,
        State.STOP: instance.notify_stop,
    }.get(state)
    env = (("VRRPD_INSTANCE", instance.name), ("VRRPD_STATE", state.value), ("VRRPD_PRIORITY", str(priority)))
    jobs = []
    if per_state:
        jobs.append(Job(per_state, env))
    if instance.notify:
        jobs.append(Job((*instance.notify, "INSTANCE", instance.name, state.value, str(priority)), env))
    return tuple(jobs)
