"""A throwaway PostgreSQL server on a lab host: Debian's postgresql binaries in a plain network namespace.

The store that both csservers of a pair share, as a third host on the lab's link. Its cluster is made by
initdb in a scratch directory (owned by `postgres`, which PostgreSQL insists on running as), it listens only
on the host's lab address, with password (SCRAM) logins for one role and database, and the lab deletes it at
close: the server is stopped by pid (SIGINT: fast shutdown, then SIGKILL) and the directory removed.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import tempfile
from ipaddress import ip_interface
from pathlib import Path

from labkit.netns import Host, _run
from labkit.systemd_host import wait_explained

ROLE = DATABASE = "csserver"
PORT = 5432
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# setpriv execs the command, so the pid the lab holds is the server's own (runuser would stay in between).
AS_POSTGRES = ("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--")


def bindir() -> Path:
    """The newest installed PostgreSQL's binaries (the postgresql package, as scripts/test-postgres.sh uses)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
    return found[-1].parent


class LabPostgres:
    """`LabPostgres(host).start()`; `url` is what csserver on another lab host is configured with."""

    def __init__(self, host: Host):
        self.host = host
        self.password = secrets.token_hex(12)
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@{self.host.ipv4}:{PORT}/{DATABASE}"

    def start(self) -> LabPostgres:
        bins = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.host.ns}-pg-", dir="/var/tmp"))
        self.host.lab.closers.append(self.stop)
        shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._as_postgres([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync", "-E", "UTF8",
                           "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"], timeout=60)
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host {DATABASE} {ROLE} {ip_interface(f'{self.host.ipv4}/24').network} scram-sha-256\n")
        log = open(self.dir / "server.log", "wb")
        self.proc = self.host.popen(
            [*AS_POSTGRES, str(bins / "postgres"), "-D", str(data), "-c", f"listen_addresses={self.host.ipv4}",
             "-c", f"port={PORT}", "-c", f"unix_socket_directories={self.dir}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_explained(self._ready, START_TIMEOUT_S, 0.1, lambda: f"PostgreSQL did not start:\n{self._log()}")
        self._psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
        self._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        return self

    def _as_postgres(self, args: list[str], timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
        return _run([*AS_POSTGRES, *args], timeout=timeout, check=check)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"PostgreSQL exited {self.proc.returncode}:\n{self._log()}")
        ready = [str(bindir() / "pg_isready"), "-q", "-h", str(self.dir), "-p", str(PORT)]
        return self._as_postgres(ready, check=False).returncode == 0

    def _psql(self, sql: str) -> None:
        self._as_postgres([str(bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
                           "-p", str(PORT), "-U", "postgres", "-d", "postgres", "-c", sql])

    def _log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-2000:]
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        """Stop the server by pid and delete its cluster (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
