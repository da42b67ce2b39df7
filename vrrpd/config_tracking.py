"""The [[track_file]] and [[track_process]] tables (keepalived's track_file / vrrp_track_process) and the
instances' references to them: checked at load like the rest of vrrpd.config."""

from __future__ import annotations

from dataclasses import dataclass

from daemonkit.tomlcheck import Table, describe, quote

MAX_TRACK_WEIGHT = 254  # keepalived: a file's weight may be 254, so that a negative value read can reach FAULT
MIN_TRACK_WEIGHT = -254
MAX_FILE_VALUE = 1 << 31
MAX_PROCESS_DELAY = 3600.0
MAX_QUORUM = 65535
PARAM_MATCHES = ("exact", "partial", "initial")
COMM_LEN = 15  # the kernel's TASK_COMM_LEN - 1: what /proc/PID/comm holds


@dataclass(frozen=True)
class TrackFile:
    """A number in a file; value x weight is added to the priority (weight 0: non-zero means FAULT)."""

    name: str
    file: str
    weight: int = 1
    init_file: int | None = None  # written at start when the file is missing (or always, with init_overwrite)
    init_overwrite: bool = False


@dataclass(frozen=True)
class TrackProcess:
    """Processes matching a name (and arguments): up while quorum..quorum_max of them run."""

    name: str
    process: str
    args: tuple[str, ...] | None = None  # None: any arguments; () with param_match: none at all
    param_match: str | None = None  # exact | partial | initial, as keepalived (None: the name alone)
    full_command: bool = False  # match argv[0] of the command line instead of the 15-character comm
    weight: int = 1
    quorum: int = 1
    quorum_max: int | None = None
    fork_delay: float = 0.0  # seconds a quorum gained must hold before it counts
    terminate_delay: float = 0.0  # seconds a quorum lost must stay lost before it counts

    @property
    def by_command_line(self) -> bool:
        return self.full_command or self.param_match is not None

    def up(self, count: int) -> bool:
        return self.quorum <= count and (self.quorum_max is None or count <= self.quorum_max)


@dataclass(frozen=True)
class TrackRef:
    """An instance's reference to a [[track_file]] or [[track_process]], with its own weight or the table's."""

    name: str
    weight: int | None = None


def check_track_file(t: Table, name: str | None) -> TrackFile | None:
    t.only(("name", "file", "weight", "init_file", "init_overwrite"))
    path = t.text("file")
    if path is not None and not path.startswith("/"):
        t.problem("file", f"must be an absolute path, not {quote(path)}")
    weight = t.integer("weight", MIN_TRACK_WEIGHT, MAX_TRACK_WEIGHT, 1)
    init = t.integer("init_file", -MAX_FILE_VALUE, MAX_FILE_VALUE, None)
    overwrite = t.get("init_overwrite", "a boolean", False)
    if overwrite and init is None and "init_file" not in t.data:
        t.problem("init_overwrite", "needs init_file, the value to write")
    if t.bad or name is None:
        return None
    return TrackFile(name, path, weight, init, overwrite)


def check_track_process(t: Table, name: str | None) -> TrackProcess | None:
    t.only(("name", "process", "args", "param_match", "full_command", "weight", "quorum", "quorum_max", "delay",
            "fork_delay", "terminate_delay"))
    process = t.text("process")
    args = t.strings("args", None)
    param_match = t.choice("param_match", PARAM_MATCHES, None)
    full = t.get("full_command", "a boolean", False)
    if args is not None and param_match is None:
        param_match = "exact"
    if process is not None and not (full or param_match) and len(process.encode()) > COMM_LEN:
        t.problem("process", f"the kernel keeps {COMM_LEN} bytes of a process name (comm): match the command "
                             f"line with full_command = true, or give the first {COMM_LEN}")
    if process is not None and "\x00" in process:
        t.problem("process", "must not contain a NUL character")
    weight = t.integer("weight", MIN_TRACK_WEIGHT, MAX_TRACK_WEIGHT, 1)
    quorum = t.integer("quorum", 0, MAX_QUORUM, 1)
    quorum_max = t.integer("quorum_max", 0, MAX_QUORUM, None)
    if quorum is not None and quorum_max is not None and quorum_max < quorum:
        t.problem("quorum_max", f"is below quorum ({quorum}): the process could never be up")
    delay = t.number("delay", 0.0, MAX_PROCESS_DELAY, 0.0)
    fork_delay = t.number("fork_delay", 0.0, MAX_PROCESS_DELAY, delay)
    terminate_delay = t.number("terminate_delay", 0.0, MAX_PROCESS_DELAY, delay)
    if t.bad or name is None:
        return None
    return TrackProcess(name, process, tuple(a for _, a in args) if args is not None else
                        (() if param_match else None), param_match, full, weight, quorum, quorum_max,
                        fork_delay, terminate_delay)


def check_refs(t: Table, key: str, known: dict[str, str], what: str) -> tuple[TrackRef, ...]:
    """An instance's track_file / track_process: [{ name = "f1", weight = 1 }], each naming a table."""
    items = t.get(key, "an array", [])
    refs: list[TrackRef] = []
    for index, item in enumerate(items or []):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            t.problem(key, f'elements must be tables like {{ name = "x", weight = 1 }}, not {describe(item)}', (index,))
            continue
        sub = t.findings.table(t.where + (key, index), f"{t.label}.{key}", item)
        sub.only(("name", "weight"))
        name = sub.text("name")
        weight = sub.integer("weight", MIN_TRACK_WEIGHT, MAX_TRACK_WEIGHT, None)
        if name is not None and name not in known:
            sub.problem("name", f"{quote(name)} names no [[{what}]]")
        elif name is not None and any(ref.name == name for ref in refs):
            sub.problem("name", f"{quote(name)} is listed twice")
        if sub.bad:
            t.bad = True
        else:
            refs.append(TrackRef(name, weight))
    return tuple(refs)
