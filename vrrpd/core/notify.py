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


def fifo_line(kind: str, name: str, state: str, priority: int) -> str:
    """keepalived's notify_fifo line: `INSTANCE "VI_1" MASTER 150` or `GROUP "G1" BACKUP 0` (its format string
    is `%s "%s" %s %d`), newline-terminated, so that existing FIFO readers work unchanged."""
    return f'{kind} "{name}" {state} {priority}\n'


def group_state(states: list[State]) -> State | None:
    """A sync group's state for the FIFO: FAULT if a member is, else the state all members share (None while
    they are in different states or starting)."""
    if State.FAULT in states:
        return State.FAULT
    if states and all(s is states[0] for s in states) and states[0] is not State.INIT:
        return states[0]
    return None
