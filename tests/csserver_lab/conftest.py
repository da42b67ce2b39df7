"""Fixtures for csserver lab tests: labs whose namespaces are named vcs-<id>-<host>, always torn down."""

from __future__ import annotations

import pytest

from tests.lab import netns
from tests.lab.conftest import require_root

PREFIX = "vcs-"


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
