"""Fixtures for lab tests: `lab(n)` builds hosts in network namespaces and always tears them down."""

from __future__ import annotations

import sys

import pytest

from labkit.netns import Lab
from tests.support import require_root

LAB_ROOT = "lab tests need root (network namespaces, raw sockets)"


@pytest.fixture
def root() -> None:
    """For tests that build their own Lab: skipped without root on a laptop, a failure under CI=true."""
    require_root(LAB_ROOT)


@pytest.fixture
def lab():
    """Factory: `lab(n, names=None, prefix=...)` -> a Lab; every lab made is closed after the test (all of
    them, even when one fails to close; the first error is raised after)."""
    require_root(LAB_ROOT)
    made: list[Lab] = []

    def make(n_hosts: int, names: list[str] | None = None, **kw) -> Lab:
        made.append(Lab(n_hosts, names, **kw))
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
def vrrpd_exe() -> list[str]:
    """The daemon as a command line, run from this checkout's interpreter."""
    return [sys.executable, "-m", "vrrpd"]
