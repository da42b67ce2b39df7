"""Lab hosts that run a real systemd: a Debian 12 tree (labkit.rootfs) booted by systemd-nspawn in a lab host's
network namespace.

Each boot sees the cached tree read-only under a tmpfs overlay (`--volatile=overlay`), so hosts share one
tree, start fresh and leave nothing behind; systemd-nspawn mounts that overlay in its own mount
namespace, so the machine's mount table never sees it. systemd is PID 1 only inside the container: its
systemctl and journalctl are reached with nsenter into the namespaces of the container's init
(`SystemdHost.run`). The lab stops every container at close, orderly first (SIGTERM to systemd-nspawn makes
the container power off), then by SIGKILL of its init, which ends its whole PID namespace.

With --keep-unit and no systemd on the machine, systemd-nspawn puts its container in `payload/` beside its
own `supervisor/` under the cgroup it was started in: for two containers started from one process, the same
directories, so one container's systemd would see (and kill) the other's services. Each container therefore
starts in a cgroup of its own (`CGROUP_PREFIX<machine>`, in every hierarchy this process is in), which
stop() deletes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable

from labkit.netns import CommandFailed, Host, pid_alive, wait_until

BOOT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
CGROUP_PREFIX = "vrrpd-lab-"
# What an operator's root shell has, and nothing of the test process's environment (its venv, pytest's vars).
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
       "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")


class SystemdHost:
    """One container: `SystemdHost(host, tree).boot()`, then `run`, `systemctl`, `journal`; the lab stops it."""

    def __init__(self, host: Host, tree: Path):
        self.host = host
        self.tree = tree
        self.log_path = host.lab.tmpdir / f"{host.name}-console.log"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the container's systemd, as this machine numbers it
        self.cgroups = [base / f"{CGROUP_PREFIX}{host.ns}" for base in _own_cgroups()]

    def __repr__(self) -> str:
        return f"SystemdHost({self.host.name!r}, pid={self.pid})"

    @property
    def name(self) -> str:
        return self.host.name

    def boot(self, timeout: float = BOOT_TIMEOUT_S) -> SystemdHost:
        """Start the container and return once its systemd reports the boot finished."""
        args = ["systemd-nspawn", "--register=no", "--keep-unit", "--boot", f"--directory={self.tree}",
                "--volatile=overlay", f"--machine={self.host.ns}", f"--hostname={self.host.name}",
                f"--network-namespace-path=/run/netns/{self.host.ns}", "--console=read-only",
                # nspawn keeps CAP_NET_ADMIN only with a network of the container's own, and the lab host's
                # namespace is one: vrrpd moves addresses in it, never in the machine's.
                "--capability=CAP_NET_ADMIN"]
        self.host.lab.closers.append(self.stop)
        for cgroup in self.cgroups:
            cgroup.mkdir()

        def enter_cgroups() -> None:  # in the child, before systemd-nspawn runs
            for cgroup in self.cgroups:
                (cgroup / "cgroup.procs").write_text("0")

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=enter_cgroups)
        self.host.lab.processes.append(self.proc)  # the lab's last resort, should stop() fail
        self.pid = wait_explained(self._find_init, 20, 0.02, lambda: f"{self.name}: no init in its container")
        wait_explained(self._booted, timeout, 0.1, lambda: f"{self.name}: boot did not finish\n{self.console()}")
        return self

    def _find_init(self) -> int | None:
        """The child of systemd-nspawn that is PID 1 of a PID namespace of its own and runs systemd."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name}: systemd-nspawn exited {self.proc.returncode}\n{self.console()}")
        for child in _children(self.proc.pid):
            try:
                status = Path(f"/proc/{child}/status").read_text()
                comm = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if len(nspid) == 2 and nspid[1] == "1" and comm == "systemd":
                return child
        return None

    def _booted(self) -> bool:
        state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        if state in ("running", "degraded"):
            return True
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name}: the container exited during boot\n{self.console()}")
        return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run(self, args: list[str], check: bool = True, timeout: float = 30, input: str | None = None
            ) -> subprocess.CompletedProcess:
        """Run a command inside the container (all its namespaces, an operator's environment), as root."""
        if self.pid is None or not self.running:
            raise RuntimeError(f"{self.name} is not running")
        cmd = ["nsenter", "--target", str(self.pid), "--all", "env", "-i", *ENV, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def write(self, path: str, text: str) -> None:
        """Write a file inside the container, as `cat > path` in it would."""
        self.run(["sh", "-c", 'cat > "$0"', path], input=text)

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def put(self, path: str, data: bytes) -> None:
        """Copy a file into the container (its root, as its init sees it, through /proc)."""
        assert self.pid is not None and path.startswith("/")
        target = Path(f"/proc/{self.pid}/root{path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` of `unit`: property -> value."""
        out = self.systemctl("show", unit, "--property=" + ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID")["MainPID"])

    def journal(self, unit: str, *args: str) -> list[dict]:
        """The journal entries of `unit` (journalctl -o json), oldest first."""
        out = self.run(["journalctl", "--unit", unit, "--output=json", "--no-pager", *args]).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def events(self, unit: str, *args: str) -> list[dict]:
        """The structured events the daemon of `unit` logged: its JSON lines, as the journal holds them."""
        events = []
        for entry in self.journal(unit, *args):
            message = entry.get("MESSAGE")
            if isinstance(message, str) and message.startswith("{"):
                try:
                    events.append(json.loads(message))
                except ValueError:
                    continue
        return events

    def poweroff(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """`systemctl poweroff` inside, as an operator would, and wait until the container is gone."""
        # The command may lose its connection to a manager that is already going down.
        self.run(["systemctl", "poweroff"], check=False)
        assert self.proc is not None
        self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop the container (idempotent): orderly, else by killing its init and with it every process in it;
        then delete its cgroups."""
        self._stop_container()
        for cgroup in self.cgroups:
            wait_until(lambda c=cgroup: _remove_cgroup(c), 10, 0.05, message=f"{self.name}: {cgroup} stays busy")

    def _stop_container(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)  # systemd-nspawn asks the container's systemd to power off
        try:
            self.proc.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
        if self.pid is not None and pid_alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def console(self, tail: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


def wait_explained(predicate: Callable[[], Any], timeout: float, interval: float, explain: Callable[[], str]) -> Any:
    """wait_until, whose failure message is made when it fails (a container's console, a pair's state)."""
    try:
        return wait_until(predicate, timeout, interval)
    except AssertionError:
        raise AssertionError(explain()) from None


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _own_cgroups() -> list[Path]:
    """This process's cgroup directory in each mounted hierarchy that systemd uses (name=systemd, unified)."""
    mounts = {"name=systemd": Path("/sys/fs/cgroup/systemd"), "": Path("/sys/fs/cgroup/unified")}
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # a unified-only machine
        mounts = {"": Path("/sys/fs/cgroup")}
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        base = mounts.get(controllers)
        if base is not None and base.is_dir():
            found.append(base / path.lstrip("/"))
    return found


def _remove_cgroup(cgroup: Path) -> bool:
    """Delete `cgroup` and its children, deepest first; False while a process still holds one."""
    if not cgroup.exists():
        return True
    for parent, dirs, _ in os.walk(cgroup, topdown=False):
        for name in dirs:
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                return False
    try:
        cgroup.rmdir()
    except OSError:
        return False
    return True
