"""The track_process edge: processes counted from the kernel's process events connector, never by polling /proc.

As keepalived does: /proc is read once when the set of tracked processes changes (and again only if the kernel
says events were lost); after that, fork, exec, comm-change and exit events (NETLINK_CONNECTOR, cn_proc) keep
the count of matching processes per track_process, and each change of a count is handed on. Matching is
`vrrpd.core.tracking.process_matches`; quorum and delays are the Node's.

The connector exists only in the host's first network namespace. A daemon run in another one (a container
sharing the host's processes, or the lab) opens its socket there, from a thread that enters that namespace for
the call alone (setns is per thread); the socket hears process events only, nothing of the network. Without it
the start is refused: track_process cannot work.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable

from daemonkit import log as logging
from vrrpd.config import TrackProcess
from vrrpd.core.tracking import process_matches

NETLINK_CONNECTOR = 11
CN_IDX_PROC, CN_VAL_PROC = 1, 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK, PROC_EVENT_EXEC, PROC_EVENT_COMM, PROC_EVENT_EXIT = 0x1, 0x2, 0x200, 0x80000000
NLMSG_DONE = 3
CLONE_NEWNET = 0x40000000
RECV_BUFFER = 4 << 20  # a busy host forks thousands of times a second
_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp (ns)
_PIDS = struct.Struct("=IIII")


def open_connector() -> socket.socket:
    """A process-events socket subscribed to cn_proc; OSError when this host cannot give one."""
    try:
        sock = _subscribe()
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.EPROTONOSUPPORT):
            raise
        sock = _in_first_netns(_subscribe)  # we run in another network namespace
    sock.setblocking(False)
    return sock


def _subscribe() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        sock.bind((0, CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(message), NLMSG_DONE, 0, 0, 0) + message)
    except BaseException:
        sock.close()
        raise
    return sock


def _in_first_netns(make: Callable[[], socket.socket]) -> socket.socket:
    """`make()` run in the host's network namespace: init's (pid 1), else the one of the process that started
    us into ours (`ip netns exec`, a container runtime), whichever this process may enter."""
    result: dict = {}

    def worker() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        failures = []
        for pid in dict.fromkeys((1, os.getppid())):
            try:
                with open(f"/proc/{pid}/ns/net") as ns:
                    if os.fstat(ns.fileno()).st_ino == os.stat("/proc/self/ns/net").st_ino:
                        continue  # our own namespace: no connector there
                    if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                        code = ctypes.get_errno()
                        raise OSError(code, os.strerror(code))
                result["sock"] = make()
                return
            except OSError as exc:
                failures.append(f"pid {pid}: {exc.strerror or exc}")
        result["error"] = OSError(errno.EPROTONOSUPPORT, "not in this network namespace, and none other to enter ("
                                  + "; ".join(failures or ["none found"]) + ")")

    thread = threading.Thread(target=worker, name="procevents-netns")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


def _comm_and_running(pid: int) -> str | None:
    """The process name, or None for a zombie or a process gone (keepalived does not count zombies)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read(1024)
    except OSError:
        return None
    start, end = stat.find(b"("), stat.rfind(b")")
    if start < 0 or end < 0 or stat[end + 2:end + 3] == b"Z":
        return None
    return stat[start + 1:end].decode(errors="replace")


def _argv(pid: int) -> tuple[str, ...]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read(65536)
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1]) if raw else ()


class ProcessEvents:
    """Counts the processes of each track_process the Node asks for; `on_count(name, count)` on every change."""

    def __init__(self, on_count: Callable[[str, int], None], open_socket: Callable[[], socket.socket] = open_connector):
        self.on_count = on_count
        self.tracks: tuple[TrackProcess, ...] = ()
        self._open = open_socket
        self._sock: socket.socket | None = None
        self._matches: dict[int, frozenset[str]] = {}  # pid -> names of the tracks it matches
        self._counts: dict[str, int] = {}
        self.lost = 0  # times the kernel said events were lost (each followed by a scan of /proc)
        self._log = logging.get("vrrpd.procevents")

    def open(self) -> None:
        """Subscribe to the process events (once); OSError with the reason when the host cannot."""
        if self._sock is None:
            try:
                self._sock = self._open()
            except OSError as exc:
                raise OSError(exc.errno, f"track_process needs the kernel's process events connector "
                                         f"(CAP_NET_ADMIN, cn_proc): {exc.strerror or exc}") from None
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)

    def watch(self, tracks: tuple[TrackProcess, ...]) -> None:
        self.tracks = tracks
        if not tracks:
            self.close()
            return
        self.open()
        self._counts = {}
        self._scan()

    def _scan(self) -> None:
        """Every process now, from /proc: at the start of watching, and after events were lost."""
        self._matches = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                self._check(int(entry))
        self._publish(force=True)

    def _check(self, pid: int) -> None:
        comm = _comm_and_running(pid)
        names = frozenset()
        if comm is not None:
            argv = _argv(pid) if any(t.by_command_line for t in self.tracks) else ()
            names = frozenset(t.name for t in self.tracks if process_matches(t, comm, argv))
        if names:
            self._matches[pid] = names
        else:
            self._matches.pop(pid, None)

    def _publish(self, force: bool = False) -> None:
        counts = {t.name: 0 for t in self.tracks}
        for names in self._matches.values():
            for name in names:
                counts[name] += 1
        for name, count in counts.items():
            if force or self._counts.get(name) != count:
                self.on_count(name, count)
        self._counts = counts

    def _readable(self) -> None:
        changed = False
        for _ in range(256):  # bounded: the rest is read on the next wake-up
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events lost: the truth from /proc once more
                    self.lost += 1
                    self._log.warning("process_events_lost", action="rescan")
                    self._scan()
                    return
                raise
            changed |= self._events(data)
        if changed:
            self._publish()

    def _events(self, data: bytes) -> bool:
        changed = False
        offset = 0
        while offset + _NLMSGHDR.size + _CN_MSG.size + _EVENT.size <= len(data):
            length = _NLMSGHDR.unpack_from(data, offset)[0]
            body = offset + _NLMSGHDR.size + _CN_MSG.size
            what = _EVENT.unpack_from(data, body)[0]
            pids = _PIDS.unpack_from(data, body + _EVENT.size) if len(data) >= body + _EVENT.size + 16 else None
            offset += max(length, 1) + (-length % 4)
            if pids is None:
                continue
            if what == PROC_EVENT_FORK and pids[2] == pids[3]:  # a new process (not a thread): its parent's image
                parent = self._matches.get(pids[1])
                if parent:
                    self._matches[pids[2]] = parent
                    changed = True
            elif what in (PROC_EVENT_EXEC, PROC_EVENT_COMM) and pids[0] == pids[1]:
                before = self._matches.get(pids[0])
                self._check(pids[0])
                changed |= self._matches.get(pids[0]) != before
            elif what == PROC_EVENT_EXIT and pids[0] == pids[1]:
                changed |= self._matches.pop(pids[0], None) is not None
        return changed

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
