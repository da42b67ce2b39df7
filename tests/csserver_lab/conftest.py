"""Fixtures for csserver lab tests: labs whose namespaces are named vcs-<id>-<host>, always torn down."""

from __future__ import annotations

import os

import pytest

from tests.lab import netns

PREFIX = "vcs-"


def require_root() -> None:
    """Namespaces need root: skipped on a developer's machine, a failure under CI=true."""
    if os.geteuid() == 0:
        return
    reason = "csserver lab tests need root (network namespaces)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true never skips them")
    pytest.skip(reason)


@pytest.fixture
def cs_lab(monkeypatch):
    """Factory: `cs_lab(names)` -> a tests.lab.netns.Lab with one host per name; closed after the test."""
    require_root()
    monkeypatch.setattr(netns, "PREFIX", PREFIX)  # this suite's namespaces never collide with vrrpd's labs
    made: list[netns.Lab] = []

    def make(names: list[str]) -> netns.Lab:
        made.append(netns.Lab(len(names), names))
        return made[-1]

    yield make
    errors = []
    for lab in reversed(made):
        try:
            lab.close()
        except Exception as exc:  # close every lab before reporting
            errors.append(exc)
    if errors:
        raise errors[0]
