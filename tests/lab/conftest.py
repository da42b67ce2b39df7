"""Fixtures for lab tests: `lab(n)` builds hosts in network namespaces and always tears them down."""

from __future__ import annotations

import os
import sys

import pytest

from tests.lab.netns import Lab


def require_root() -> None:
    """Lab tests need root for namespaces: skipped on a developer's machine, a failure under CI=true."""
    if os.geteuid() == 0:
        return
    reason = "lab tests need root (network namespaces, raw sockets)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true never skips them")
    pytest.skip(reason)


@pytest.fixture
def root() -> None:
    """For tests that build their own Lab: the same root rule as `lab`."""
    require_root()


def lab_factory():
    """A generator for fixtures: yields `make(n, names=None)` -> a Lab, then closes every lab it made
    (all of them, even when one fails to close; the first error is raised after)."""
    require_root()
    made: list[Lab] = []

    def make(n_hosts: int, names: list[str] | None = None) -> Lab:
        made.append(Lab(n_hosts, names))
        return made[-1]

    yield make
    errors = []
    for each in reversed(made):
        try:
            each.close()
        except Exception as exc:  # close every lab before reporting
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def lab():
    """Factory: `lab(n, names=None)` -> a Lab with n hosts; every lab made is closed after the test."""
    yield from lab_factory()


@pytest.fixture
def vrrpd_exe() -> list[str]:
    """The daemon as a command line, run from this checkout's interpreter."""
    return [sys.executable, "-m", "vrrpd"]
