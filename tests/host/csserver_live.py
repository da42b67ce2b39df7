"""A real csserver (`serve()`) on loopback in a thread of the test process, on a fresh SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import requests

from csserver.config import Config, load, read_token
from csserver.localaddrs import StaticAddresses
from csserver.server import serve
from csserver.store.base import Store

VIP_A = "192.0.2.100"
MAX_BODY = 4096
CONFIG = """\
[node]
alias = "cs-a"
listen = "127.0.0.1:{port}"
max_body_bytes = {max_body}
log_level = "error"
{extra}
[cluster]
aliases = {{ "cs-a" = "192.0.2.100", "cs-b" = "192.0.2.101" }}
backup  = {{ "cs-a" = "cs-b", "cs-b" = "cs-a" }}
[store]
url = "sqlite://{db}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Live:
    url: str
    db: Path
    config: Config

    def rows(self) -> dict[str, list[tuple]]:
        """Everything the store holds for clients, read straight from the SQLite file (to prove nothing was
        written); not `nodes`, where the node's own heartbeat moves on by itself."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                       "AND name <> 'nodes'")]
            return {table: sorted(map(tuple, conn.execute(f'SELECT * FROM "{table}"')), key=repr) for table in tables}


@contextlib.contextmanager
def sequential_ids() -> Iterator[None]:
    """Context ids 1, 2, 3... instead of random ones, so generated HAIDs can find the contexts made."""
    counter = itertools.count(1)
    saved = Store.__dict__["new_id"]
    Store.new_id = staticmethod(lambda: next(counter))
    try:
        yield
    finally:
        Store.new_id = saved


@contextlib.contextmanager
def live_csserver(directory: Path, extra: str = "") -> Iterator[Live]:
    """`serve()` in a thread with its own event loop, stopped (and joined) on exit. It does not ask its
    partner (cs-b at 192.0.2.101) over HTTP: this runs in the machine's own network namespace."""
    port = free_port()
    db = directory / "cs.db"
    path = directory / "cs.toml"
    path.write_text(CONFIG.format(port=port, max_body=MAX_BODY, db=db, extra=extra))
    config = load(str(path))
    token = read_token(config)
    stop = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []
    result: list[int] = []

    async def main() -> int:
        loops.append(asyncio.get_running_loop())
        return await serve(config, token, StaticAddresses([ip_address(VIP_A)]), stop, ask_partners=False)

    # asyncio.run cancels whatever serve() leaves behind (a connection still lingering, say).
    thread = threading.Thread(target=lambda: result.append(asyncio.run(main())), name="csserver", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        assert thread.is_alive(), f"csserver stopped at startup: {result}"
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        assert time.monotonic() < deadline, "csserver did not answer /healthz within 10 s"
        time.sleep(0.02)
    try:
        yield Live(url, db, config)
    finally:
        loops[0].call_soon_threadsafe(stop.set)
        thread.join(15)
        assert not thread.is_alive(), "csserver did not stop"
        assert result == [0]
