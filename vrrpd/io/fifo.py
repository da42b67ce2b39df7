"""The notify FIFO edge: keepalived's notify_fifo, the Node's lines written to a named pipe for a reader of its own.

As keepalived does: the FIFO is made if it is missing (and removed at exit only then), opened read-write and
non-blocking, so that a missing reader neither blocks the daemon nor kills it with SIGPIPE; a line that does
not fit (the reader is too slow and the pipe is full) is dropped and counted. Something at the path that is
not a FIFO refuses the start.
"""

from __future__ import annotations

import errno
import os
import stat

from daemonkit import log as logging

FIFO_MODE = 0o644  # keepalived's S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH


class NotifyFifo:
    def __init__(self, path: str):
        self.path = path
        self.written = 0
        self.dropped = 0
        self._fd: int | None = None
        self._created = False
        self._log = logging.get("vrrpd.fifo")

    def open(self) -> None:
        """Make (if missing) and open the FIFO; OSError with the reason otherwise."""
        try:
            os.mkfifo(self.path, FIFO_MODE)
            self._created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise OSError(exc.errno, f"notify_fifo {self.path}: cannot create the FIFO: {exc.strerror}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise OSError(exc.errno, f"notify_fifo {self.path}: cannot open: {exc.strerror}") from None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EEXIST, f"notify_fifo {self.path}: exists and is not a FIFO")
        self._fd = fd

    def write(self, line: str) -> None:
        if self._fd is None:
            return
        data = line.encode()
        try:
            os.write(self._fd, data)  # at most PIPE_BUF bytes: written whole or not at all
        except OSError as exc:
            self.dropped += 1
            if exc.errno != errno.EAGAIN:
                self._log.warning("notify_fifo_write_failed", path=self.path, error=str(exc))
            return
        self.written += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._created:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
