"""The notify FIFO edge on its own: made when missing and removed then, never blocking, refusing a non-FIFO."""

from __future__ import annotations

import os
import stat

import pytest

from vrrpd.io.fifo import NotifyFifo


def test_a_missing_fifo_is_made_written_without_a_reader_and_removed_at_close(tmp_path):
    path = tmp_path / "n.fifo"
    fifo = NotifyFifo(str(path))
    fifo.open()
    assert stat.S_ISFIFO(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    fifo.write('INSTANCE "VI_1" MASTER 100\n')  # nobody reads yet: it waits in the pipe, nothing blocks
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(reader, 100) == b'INSTANCE "VI_1" MASTER 100\n'
    finally:
        os.close(reader)
    fifo.close()
    assert not path.exists() and fifo.written == 1


def test_an_existing_fifo_is_kept_and_a_full_pipe_drops_and_counts(tmp_path):
    path = tmp_path / "n.fifo"
    os.mkfifo(path)
    fifo = NotifyFifo(str(path))
    fifo.open()
    line = "x" * 4000 + "\n"
    for _ in range(100):  # 400 kB: more than a pipe holds
        fifo.write(line)
    assert fifo.dropped > 0 and fifo.written + fifo.dropped == 100
    fifo.close()
    assert path.exists()


def test_a_path_that_is_not_a_fifo_refuses_the_start(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(OSError, match="is not a FIFO"):
        NotifyFifo(str(path)).open()
    with pytest.raises(OSError, match="cannot create the FIFO"):
        NotifyFifo(str(tmp_path / "missing" / "n.fifo")).open()
