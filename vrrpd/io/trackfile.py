"""The track_file edge: each file's number read at once and again whenever it is written (inotify), handed on.

As keepalived: the file is read when it is written, not on a timer. The parent directory is watched, so that
a file made later, replaced by a rename (how careful writers update it) or deleted is seen too; a read happens
when a writer closes the file or a file is moved in, never on a half-written one. init_file writes the
initial value first where the file is missing (or always, with init_overwrite).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
from collections.abc import Callable

from daemonkit import log as logging
from vrrpd.config import TrackFile

IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_DELETE = 0x8, 0x40, 0x80, 0x200
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
WATCHED = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE
_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len (then len bytes of name)
MAX_FILE_BYTES = 256  # a number; anything longer is not one


def read_value(path: str) -> int | None:
    """The number at the start of the file (keepalived reads it with strtol), or None when there is none."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_FILE_BYTES).decode("ascii", "replace")
    except OSError:
        return None
    words = text.split()
    try:
        return int(words[0]) if words else None
    except ValueError:
        return None


class TrackFiles:
    """Watches the files the Node asks for (WatchFiles) and hands each value to `on_value(name, value)`."""

    def __init__(self, on_value: Callable[[str, int | None], None]):
        self.on_value = on_value
        self.files: tuple[TrackFile, ...] = ()
        self._fd: int | None = None
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._libc = None
        self._log = logging.get("vrrpd.trackfile")

    def watch(self, files: tuple[TrackFile, ...]) -> None:
        self.close()
        self.files = files
        if not files:
            return
        for f in files:
            _init(f)
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify: {os.strerror(ctypes.get_errno())}")
        self._fd = fd
        for directory in sorted({os.path.dirname(f.file) or "/" for f in files}):
            wd = self._libc.inotify_add_watch(fd, os.fsencode(directory), WATCHED)
            if wd < 0:
                code = ctypes.get_errno()
                self._log.error("track_file_unwatchable", directory=directory, error=os.strerror(code))
                continue
            self._dirs[wd] = directory
        asyncio.get_running_loop().add_reader(fd, self._readable)
        for f in files:
            self._report(f)

    def _report(self, f: TrackFile) -> None:
        value = read_value(f.file)
        if value is None:
            self._log.warning("track_file_unreadable", track_file=f.name, file=f.file, detail="counted as 0")
        self.on_value(f.name, value)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EINTR:
                self._log.error("track_file_read_failed", error=str(exc))
            return
        touched: set[str] = set()
        overflow = False
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size:offset + _EVENT.size + length].split(b"\0", 1)[0]
            offset += _EVENT.size + length
            overflow |= bool(mask & IN_Q_OVERFLOW)
            if wd in self._dirs:
                touched.add(os.path.join(self._dirs[wd], os.fsdecode(name)))
        for f in self.files:
            if overflow or f.file in touched:  # an overflow lost events: read them all
                self._report(f)

    def close(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self._dirs = {}


def _init(f: TrackFile) -> None:
    """keepalived's init_file: write the value where the file is missing, or always with overwrite."""
    if f.init_file is None or (os.path.exists(f.file) and not f.init_overwrite):
        return
    try:
        with open(f.file, "w") as fh:
            fh.write(f"{f.init_file}\n")
    except OSError as exc:
        raise OSError(exc.errno, f"track_file {f.name}: cannot write init_file to {f.file}: {exc.strerror}") from None
