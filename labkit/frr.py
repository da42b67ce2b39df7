"""FRRouting's vrrpd (the Debian package frr) as a lab peer: zebra and vrrpd run in one lab host, never on the
machine itself.

FRR's defaults are kept out of the way: every file (configs, pid files, the zebra socket, the vty sockets,
the logs) is in a directory of this run, the vty listens on no TCP port (-P 0), and the daemons run as FRR's
own user (frr, in group frrvty), as the package sets them up. The machine's frr service is never started or
touched. FRR does not make its macvlan: the caller makes it first (`Host.add_macvlan`), as FRR's manual says,
with the VIP on it; FRR sets it protodown while Backup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from labkit.netns import Host, wait_until

FRR_BIN = Path("/usr/lib/frr")


def vrrpd_conf(ifname: str, vrid: int, priority: int, interval_ms: int, vips: list[str], version: int = 3) -> str:
    lines = [f"interface {ifname}", f" vrrp {vrid} version {version}", f" vrrp {vrid} priority {priority}",
             f" vrrp {vrid} advertisement-interval {interval_ms}"]
    lines += [f" vrrp {vrid} {'ipv6' if ':' in vip else 'ip'} {vip.split('/')[0]}" for vip in vips]
    return "\n".join(lines) + "\n"


@dataclass
class Frr:
    """`workdir`: where the logs are copied at stop; the daemons work in a directory of their own under /tmp,
    which FRR's user can reach (a test's tmp_path is root's alone)."""

    host: Host
    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    rundir: Path | None = None

    def _common(self) -> list[str]:
        return ["--vty_socket", str(self.rundir), "-P", "0", "-z", str(self.rundir / "zserv.api")]

    def start(self, vrrpd_config: str) -> Frr:
        self.rundir = Path(tempfile.mkdtemp(prefix=f"lab-frr-{self.host.ns}-", dir="/tmp"))
        os.chmod(self.rundir, 0o777)  # the daemons drop to FRR's user and make their sockets here
        (self.rundir / "zebra.conf").write_text(f"hostname {self.host.name}\n")
        (self.rundir / "vrrpd.conf").write_text(vrrpd_config)
        for daemon in ("zebra", "vrrpd"):
            self.procs.append(self.host.popen(
                [str(FRR_BIN / daemon), "-f", str(self.rundir / f"{daemon}.conf"), "-i", str(self.rundir / f"{daemon}.pid"),
                 "--log", f"file:{self.rundir / f'{daemon}.log'}", *self._common()],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
            if daemon == "zebra":
                wait_until(lambda: (self.rundir / "zserv.api").exists(), 15, 0.05,
                           message=f"zebra never made its socket: {self.log_text('zebra')[-1500:]}")
        wait_until(lambda: self.routers() is not None, 15, 0.05, message=self.log_text()[-1500:])
        return self

    def routers(self) -> list[dict] | None:
        """`show vrrp json`, or None while vrrpd does not answer."""
        proc = self.host.run(["vtysh", "--vty_socket", str(self.rundir), "-c", "show vrrp json"], check=False)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout or "null")
        except ValueError:
            return None

    def status(self, vrid: int, family: str = "v4") -> str | None:
        """"Master", "Backup", "Initialize"..., or None."""
        for router in self.routers() or []:
            if router.get("vrid") == vrid:
                return router.get(family, {}).get("status")
        return None

    def log_text(self, daemon: str = "vrrpd") -> str:
        for where in (self.rundir, self.workdir):
            path = where / f"{daemon}.log" if where is not None else None
            if path is not None and path.exists():
                return path.read_text(errors="replace")
        return ""

    def stop(self) -> None:
        """Stop the daemons this run started (by their Popen), keep their logs in `workdir`, remove the rest."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.rundir is not None and self.rundir.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            for log in self.rundir.glob("*.log"):
                shutil.copy(log, self.workdir / log.name)
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None
