"""The announcement edge: the Node's gratuitous ARP / unsolicited NA frames written to an AF_PACKET socket.

One send-only socket per interface, bound to the interface as it is now: an interface re-created since the
last announcement (a new index) gets a new socket. A frame that cannot be sent (ENOBUFS in a mass failover,
say) is counted and the rest still go out.
"""

from __future__ import annotations

import asyncio
import socket


class Announcer:
    def __init__(self) -> None:
        self._socks: dict[str, tuple[int, socket.socket]] = {}

    def send(self, ifname: str, frames: tuple[bytes, ...], repeat: int) -> tuple[int, str | None]:
        """Send every frame `repeat` times; (frames that failed, the first error) ."""
        try:
            sock = self._socket(ifname)
        except OSError as exc:
            return len(frames) * repeat, str(exc)
        failed, first = 0, None
        for _ in range(repeat):
            for frame in frames:
                try:
                    if sock.send(frame) != len(frame):
                        raise OSError(f"short write of a {len(frame)}-byte frame")
                except OSError as exc:
                    failed += 1
                    first = first or str(exc)
        return failed, first

    async def send_paced(self, ifname: str, frames: tuple[bytes, ...], repeat: int,
                         interval: float) -> tuple[int, str | None]:
        """As `send`, with `interval` seconds between two frames (keepalived's garp_interval / gna_interval,
        for switches that cannot take a flood of them)."""
        failed, first = 0, None
        for index in range(repeat * len(frames)):
            if index:
                await asyncio.sleep(interval)
            lost, error = self.send(ifname, (frames[index % len(frames)],), 1)
            failed, first = failed + lost, first or error
        return failed, first

    def _socket(self, ifname: str) -> socket.socket:
        index = socket.if_nametoindex(ifname)
        known = self._socks.get(ifname)
        if known is not None and known[0] == index:
            return known[1]
        if known is not None:
            known[1].close()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # 0: send only
        try:
            sock.bind((ifname, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._socks[ifname] = (index, sock)
        return sock

    def close(self) -> None:
        for _, sock in self._socks.values():
            sock.close()
        self._socks.clear()
