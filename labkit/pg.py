"""Helpers for tests of csserver and of programs built on it: the test PostgreSQL, a schema per test, and a
primary with its synchronous standby in lab hosts for the store-failover scenarios (`PgPair`).

`scripts/test-postgres.sh start` runs a real PostgreSQL server and writes `scripts/test-postgres.env`;
`make test` exports its CSSERVER_TEST_PG_URL, and a plain `pytest` run finds the file by itself.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_VAR = "CSSERVER_TEST_PG_URL"
ENV_FILE = Path(__file__).resolve().parent.parent / "scripts" / "test-postgres.env"


def pg_url() -> str | None:
    """The test server's URL: from the environment, else from scripts/test-postgres.env; None if neither."""
    url = os.environ.get(ENV_VAR)
    if url:
        return url
    try:
        lines = ENV_FILE.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() == ENV_VAR and value.strip():
            return value.strip()
    return None


def pg_problem(url: str | None) -> str | None:
    """Why the test PostgreSQL cannot be used (None when it answers)."""
    if not url:
        return f"{ENV_VAR} is not set (run scripts/test-postgres.sh start)"
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"the test PostgreSQL at {ENV_VAR} does not answer: {str(exc).strip()}"
    return None


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A conninfo like `url` whose search_path is a new, empty schema, dropped afterwards: one per test,
    so tests (and test runs of several people on one server) never see each other's tables."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_conninfo(url, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# ---- a primary and its synchronous standby, in lab hosts (scripts/pg-pair.sh) ---------------------------

PAIR_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-pair.sh"
PAIR_PORT = 54331  # each server in a namespace of its own: never the suite's 54329, never the machine's 5432


class PgPair:
    """PostgreSQL on two lab hosts: `primary` streams to `standby`, whose confirmation every commit waits
    for (synchronous replication), so promoting the standby loses no commit and rolls no epoch back.

    Both servers are this object's: `close()` stops them (continuing a frozen one first) and deletes their
    data, always; register it with the lab (`PgPair.start` does) so a failing test cannot leave one behind."""

    def __init__(self, primary, standby, base: Path, port: int = PAIR_PORT):
        self.hosts = {"pg1": primary, "pg2": standby}
        self.base = base
        self.port = port
        self.frozen: set[str] = set()
        self.closed = False

    @classmethod
    def start(cls, lab, primary, standby, port: int = PAIR_PORT) -> PgPair:

        pair = cls(primary, standby, Path(tempfile.mkdtemp(prefix="csserver-pg-pair-", dir="/var/tmp")), port)
        lab.closers.append(pair.close)
        pair.script(primary, "primary", "pg1", str(primary.ipv4), str(port), "pg2", timeout=120)
        pair.script(standby, "standby", "pg2", str(standby.ipv4), str(port), str(primary.ipv4), str(port),
                    timeout=120)
        pair.wait_synchronous()
        return pair

    def script(self, host, *args: str, timeout: float = 60) -> str:
        """scripts/pg-pair.sh ARGS, in `host`'s namespace (None: here)."""

        command = ["env", f"PG_PAIR_DIR={self.base}", str(PAIR_SCRIPT), *args]
        if host is None:
            return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout).stdout
        return host.run(command, timeout=timeout).stdout

    def url(self, application_name: str | None = None) -> str:
        """The multi-host URL: pg1 then pg2, the one that takes writes (target_session_attrs=read-write)."""
        url = self.script(None, "url", "pg1", "pg2").strip()
        return f"{url}&application_name={application_name}" if application_name else url

    def admin_url(self, name: str) -> str:
        """A superuser conninfo through the server's unix socket (the namespaces share the filesystem)."""
        return f"host={self.base}/{name}/run port={self.port} user=postgres dbname=csserver"

    def wait_synchronous(self, timeout: float = 30.0) -> None:

        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(self.admin_url("pg1"), autocommit=True) as conn:
                rows = conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
            if ("pg2", "streaming", "sync") in rows:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"pg2 never became pg1's synchronous standby: {rows}")
            time.sleep(0.1)

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in self.script(None, "pids", name).split()]

    def freeze(self, name: str) -> None:
        """SIGSTOP every process of the server: a hung host (connections stay open, nothing answers)."""

        self.frozen.add(name)
        for pid in self.pids(name):
            os.kill(pid, signal.SIGSTOP)

    def stop_server(self, name: str) -> None:
        self.script(None, "stop", name)
        self.frozen.discard(name)

    def promote(self, name: str) -> None:
        self.script(None, "promote", name)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True

        try:
            self.script(None, "stop", "pg1", "pg2", timeout=120)
        finally:
            leftover = [pid for name in self.hosts for pid in self._pids_quietly(name)]
            shutil.rmtree(self.base, ignore_errors=True)
        if leftover:
            raise RuntimeError(f"PostgreSQL processes left after stopping the pair: {leftover}")

    def _pids_quietly(self, name: str) -> list[int]:
        try:
            return self.pids(name)
        except Exception:
            return []
