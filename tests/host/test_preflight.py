"""The start (or reload) is refused, with the reason, when the host lacks what a key needs."""

from __future__ import annotations

import vrrpd.io.nftables as nftables
from tests.pure.vrrpd.nodes import config, instance
from vrrpd.io import preflight


def test_accept_mode_false_without_nft_names_the_instance_and_the_reason(monkeypatch):
    monkeypatch.setattr(nftables.shutil, "which", lambda name: None)
    cfg = config(instance(accept_mode=False) + instance(name="VI_2", vrid=52, vips=("192.0.2.101/24",)))
    assert preflight.problems(cfg) == [
        "instance VI_1: accept_mode = false needs nftables: nft (the nftables package) is not installed"]
    assert preflight.problems(config(instance())) == []  # accepting needs nothing of the host
