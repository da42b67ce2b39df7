"""The control socket: a root-only (0600) Unix stream socket answering `status` with the SPEC section 5 JSON."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable

from daemonkit import log as logging

MAX_REQUEST = 4096


class ControlServer:
    """One request line per connection (`status`), one JSON document back, then close."""

    def __init__(self, path: str, status: Callable[[], dict]):
        self.path = path
        self.status = status
        self._server: asyncio.AbstractServer | None = None
        self._log = logging.get("vrrpd.control")

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        _remove_stale_socket(self.path)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            command = line[:MAX_REQUEST].decode(errors="replace").strip() or "status"
            if command == "status":
                body = self.status()
            else:
                body = {"error": "unknown_command", "detail": f"unknown command {command!r}; try 'status'"}
            writer.write(json.dumps(body).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError) as exc:
            self._log.debug("control_client_error", error=str(exc))
        finally:
            writer.close()


def _remove_stale_socket(path: str) -> None:
    """Refuse to steal the socket of a live daemon; remove one left by a dead daemon."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another vrrpd is already running (its control socket answers)")


def query(path: str, command: str = "status", timeout: float = 3.0) -> dict:
    """Client side: ask a running daemon; raises OSError when nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise OSError(f"{path}: the daemon answered with something that is not JSON") from exc
