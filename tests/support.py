"""What many tests share: the repository's paths, the one "skip here, fail under CI" rule, and small helpers.

A test module imports from here, never from another test module.
"""

from __future__ import annotations

import asyncio
import configparser
import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
CONF = REPO / "conf"
UNITS = REPO / "systemd"


def require(problem: str | None) -> None:
    """Nothing when `problem` is None; else skip the test on a developer's machine and fail it under CI=true.

    CI installs and starts everything the suite needs, so there a missing prerequisite is a failure."""
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}; CI=true never skips this test")
    pytest.skip(problem)


def require_root(why: str = "needs root") -> None:
    require(None if os.geteuid() == 0 else why)


def require_program(name: str) -> str:
    """The path of program `name`, under the CI rule."""
    path = shutil.which(name)
    require(None if path else f"{name} is not installed")
    return path


def require_pg() -> str:
    """The test PostgreSQL's URL (scripts/test-postgres.sh start), under the CI rule."""
    from labkit.pg import pg_problem, pg_url

    url = pg_url()
    require(pg_problem(url))
    return url


def run(coro, timeout: float | None = None):
    """Run a coroutine to completion in a fresh event loop (with an overall deadline when given)."""
    return asyncio.run(asyncio.wait_for(coro, timeout) if timeout else coro)


def unit_file(name: str) -> configparser.ConfigParser:
    """A systemd unit of systemd/ parsed (repeated keys keep their last value, as systemd reads most)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


@functools.cache
def built_debs() -> tuple[Path, ...]:
    """The packages of this checkout (`make deb`, which rebuilds only when their files changed), under the CI rule."""
    if shutil.which("dpkg-buildpackage") is None:
        require_root("building the packages installs dpkg-dev and debhelper, which needs root")
    proc = subprocess.run([str(REPO / "scripts" / "build-deb.sh")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return tuple(Path(line) for line in proc.stdout.split())
