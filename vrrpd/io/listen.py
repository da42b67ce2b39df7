"""The advert sockets of one daemon, one per (interface, family), and how they are read.

A quiet socket is read the moment a packet arrives. A busy one (something to read again within POLL_S of its
last read) is polled every POLL_S instead, until a poll finds it empty: a backup hearing a thousand adverts a
second then wakes a hundred times, not a thousand. Nothing waits longer than POLL_S; the runtime's timer
reads every socket (`read_all`) before it hands the Node its time, so no takeover waits at all.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from vrrpd.io.sockets import AdvertSocket, Received

POLL_S = 0.010
RECV_BATCH = 64
GONE = (errno.ENODEV, errno.ENXIO, errno.ENETDOWN)  # the interface went away under the socket

Key = tuple[str, str]


class Listener:
    """Opens, reads and closes the advert sockets; `on_batch(key, received)` gets what was read,
    `on_error(key, error, gone)` a receive error (`gone`: the socket no longer works, and is closed here)."""

    def __init__(self, on_batch: Callable[[Key, list[Received]], None],
                 on_error: Callable[[Key, str, bool], None]):
        self.loop = asyncio.get_running_loop()
        self.on_batch, self.on_error = on_batch, on_error
        self.sockets: dict[Key, AdvertSocket] = {}
        self._last_read: dict[Key, float] = {}
        self._polled: set[Key] = set()
        self._poll: asyncio.TimerHandle | None = None

    @property
    def malformed(self) -> int:
        """Packets the sockets could not even parse: there is no instance to blame them on."""
        return sum(sock.malformed for sock in self.sockets.values())

    def open(self, key: Key, send_only: bool = False) -> int:
        """(Re)open the socket of `key`; the index of the interface it is bound to. OSError when it cannot.
        `send_only` (a use_vmac macvlan's): never read, and it joins no group; adverts are heard on the base."""
        self.close(key)
        sock = AdvertSocket(*key, join_multicast=not send_only, send_only=send_only)
        self.sockets[key] = sock
        for fd in sock.filenos():  # VRRP, and for IPv4 also AH
            self.loop.add_reader(fd, self._readable, key)
        return sock.ifindex

    def close(self, key: Key) -> None:
        sock = self.sockets.pop(key, None)
        self._polled.discard(key)
        if sock is not None:
            for fd in sock.filenos():
                self.loop.remove_reader(fd)
            sock.close()

    def close_all(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        for key in list(self.sockets):
            self.close(key)

    def read_all(self) -> None:
        """Everything waiting on every socket (input before timers)."""
        for key in list(self.sockets):
            self._drain(key)

    def _readable(self, key: Key) -> None:
        if not self._read(key):
            return
        now = self.loop.time()
        last, self._last_read[key] = self._last_read.get(key, 0.0), now
        sock = self.sockets.get(key)
        if sock is not None and now - last < POLL_S:
            for fd in sock.filenos():
                self.loop.remove_reader(fd)
            self._polled.add(key)
            if self._poll is None:
                self._poll = self.loop.call_later(POLL_S, self._poll_busy)

    def _poll_busy(self) -> None:
        self._poll = None
        for key in list(self._polled):
            if self._drain(key):
                continue
            self._polled.discard(key)  # quiet again: back to being read on readiness
            sock = self.sockets.get(key)
            if sock is not None:
                for fd in sock.filenos():
                    self.loop.add_reader(fd, self._readable, key)
        if self._polled:
            self._poll = self.loop.call_later(POLL_S, self._poll_busy)

    def _drain(self, key: Key) -> int:
        total = 0
        for _ in range(64):  # bounded: up to 64 batches queued per socket
            count = self._read(key)
            total += count
            if count < RECV_BATCH:
                break
        return total

    def _read(self, key: Key) -> int:
        sock = self.sockets.get(key)
        if sock is None:
            return 0
        try:
            received = sock.recv_all(RECV_BATCH)
        except OSError as exc:
            gone = exc.errno in GONE
            if gone:
                self.close(key)
            self.on_error(key, str(exc), gone)
            return 0
        if received:
            self.on_batch(key, received)
        return len(received)
