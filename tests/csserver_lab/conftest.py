"""Fixtures for csserver lab tests: labs whose namespaces are named vcs-<id>-<host>, always torn down."""

from __future__ import annotations

import pytest

from tests.lab import netns
from tests.lab.conftest import lab_factory, require_root

PREFIX = "vcs-"


@pytest.fixture
def cs_lab(monkeypatch):
    """Factory: `cs_lab(names)` -> a tests.lab.netns.Lab with one host per name; closed after the test."""
    require_root()
    monkeypatch.setattr(netns, "PREFIX", PREFIX)  # this suite's namespaces never collide with vrrpd's labs
    labs = lab_factory()
    make = next(labs)
    yield lambda names: make(len(names), names)
    next(labs, None)  # closes them
