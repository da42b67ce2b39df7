"""Tracking: weights and faults from links and scripts, rise/fall, and a hung script killed at its timeout."""

from __future__ import annotations

from dataclasses import replace

from vrrpd.config import parse
from vrrpd.core.fsm import TrackedInterfaceDown, TrackedScriptDown
from vrrpd.core.tracking import RiseFall, evaluate

CONFIG = """
[[script]]
name = "chk_down_minus"
command = ["/bin/true"]
weight = -60
[[script]]
name = "chk_up_plus"
command = ["/bin/true"]
weight = 20
[[script]]
name = "chk_fault"
command = ["/bin/true"]
weight = 0

[[instance]]
name = "VI_A"
interface = "eth0"
vrid = 51
priority = 150
virtual_ipaddress = ["192.0.2.100/24"]
track_interface = [{ name = "eth1", weight = -30 }, { name = "eth2", weight = 0 }]
track_script = ["chk_down_minus", "chk_up_plus", "chk_fault"]

[[instance]]
name = "VI_OWNER"
interface = "eth0"
vrid = 52
priority = 255
virtual_ipaddress = ["192.0.2.101/24"]
track_script = ["chk_down_minus"]
"""

cfg = parse(CONFIG, "t.toml")
SCRIPTS = {s.name: s for s in cfg.scripts}
ALL_LINKS = {"eth0": True, "eth1": True, "eth2": True}


def test_all_up_adds_positive_weights_only():
    v = evaluate(cfg.instance("VI_A"), ALL_LINKS, {"chk_down_minus": True, "chk_up_plus": True, "chk_fault": True}, SCRIPTS)
    assert v.priority == 170 and not v.faults


def test_negative_weights_apply_when_down_and_unknown_scripts_count_for_nothing():
    v = evaluate(cfg.instance("VI_A"), {**ALL_LINKS, "eth1": False}, {"chk_down_minus": False}, SCRIPTS)
    assert v.priority == 150 - 30 - 60 and not v.faults


def test_weight_zero_means_fault_and_the_own_link_is_the_nodes_business():
    v = evaluate(cfg.instance("VI_A"), {"eth0": False, "eth1": True, "eth2": False}, {"chk_fault": False}, SCRIPTS)
    assert v.faults == {TrackedInterfaceDown("eth2"), TrackedScriptDown("chk_fault")}


def test_priority_clamped_and_owner_untouched():
    lowered = evaluate(cfg.instance("VI_A"), {**ALL_LINKS, "eth1": False},
                       {"chk_down_minus": False, "chk_up_plus": False}, {**SCRIPTS, "chk_down_minus": replace(SCRIPTS["chk_down_minus"], weight=-253)})
    assert lowered.priority == 1
    assert evaluate(cfg.instance("VI_OWNER"), ALL_LINKS, {"chk_down_minus": False}, SCRIPTS).priority == 255


def test_rise_and_fall_need_consecutive_results():
    checker = RiseFall(rise=2, fall=3)
    assert checker.record(True) is None
    assert checker.record(True) is True
    assert [checker.record(x) for x in (False, False, True, False, False)] == [None, None, None, None, None]
    assert checker.record(False) is False
    assert checker.up is False
