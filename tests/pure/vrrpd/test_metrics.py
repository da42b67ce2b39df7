"""vrrpd's metrics text: valid format 0.0.4 with the status's states, priorities and counters, parsed back."""

from __future__ import annotations

from tests.promtext_parse import parse, sample_status, value
from vrrpd.core.stats import STAT_NAMES
from vrrpd.metrics import COUNTER_HELP, STATES, render


# ---- render ---------------------------------------------------------------------------------------------

def test_render_carries_states_priorities_and_every_counter():
    status = sample_status()
    families, samples = parse(render(status))
    a = {"instance": "VI_A", "interface": "eth0", "vrid": "51", "family": "ipv4"}
    b = {"instance": "VI_B6", "interface": "eth1", "vrid": "52", "family": "ipv6"}
    assert value(samples, "vrrpd_info", version="0.1.0", router_id="node-a") == 1
    for labels, current in ((a, "MASTER"), (b, "BACKUP")):
        states = {ls["state"]: v for n, ls, v in samples if n == "vrrpd_instance_state" and ls.items() > labels.items()}
        assert states == {s: float(s == current) for s in STATES}
    assert value(samples, "vrrpd_instance_priority", **a) == 150
    assert value(samples, "vrrpd_instance_effective_priority", **a) == 90
    assert value(samples, "vrrpd_instance_master_adver_interval_seconds", **b) == 0.25
    assert value(samples, "vrrpd_instance_advert_interval_seconds", **b) == 0.5
    for inst, labels in zip(status["instances"], (a, b)):
        for name, count in inst["stats"].items():
            assert families[f"vrrpd_{name}_total"]["type"] == "counter"
            assert value(samples, f"vrrpd_{name}_total", **labels) == count
    for name, count in status["stats"].items():
        assert [(ls, v) for n, ls, v in samples if n == f"vrrpd_router_{name}_total"] == [({}, count)]
    assert value(samples, "vrrpd_checksum_errors_total", **a) == 3
    assert value(samples, "vrrpd_router_vrid_errors_total") == 7
    assert value(samples, "vrrpd_notify_failed_total") == 2
    assert value(samples, "vrrpd_notify_completed_total") == 5


def test_every_daemon_counter_has_its_own_help():
    assert set(COUNTER_HELP) == set(STAT_NAMES)
    families, _ = parse(render(sample_status()))
    assert families["vrrpd_adverts_rx_total"]["help"] == COUNTER_HELP["adverts_rx"]


def test_label_values_are_escaped():
    status = sample_status()
    odd = 'a"b\\c\nd'
    status["router_id"] = odd
    status["instances"][0]["name"] = odd
    families, samples = parse(render(status))
    assert value(samples, "vrrpd_info", router_id=odd) == 1
    assert value(samples, "vrrpd_instance_state", instance=odd, state="MASTER") == 1


def test_no_instances_and_odd_values():
    status = {"router_id": "r", "version": "0.1.0", "instances": [], "stats": {"ttl_errors": 1, "new_thing": 2}}
    families, samples = parse(render(status))
    assert value(samples, "vrrpd_router_ttl_errors_total") == 1
    assert value(samples, "vrrpd_router_new_thing_total") == 2  # a counter this module does not know yet
    assert not [s for s in samples if s[0].startswith("vrrpd_instance_")]
    status = sample_status()
    status["instances"][0].update(state="SOMETHING", effective_priority=None, master_adver_interval=float("nan"))
    families, samples = parse(render(status))
    assert value(samples, "vrrpd_instance_state", instance="VI_A", state="SOMETHING") == 1
    assert sum(v for n, ls, v in samples if n == "vrrpd_instance_state" and ls["instance"] == "VI_A") == 1
    assert not [s for s in samples if s[0] == "vrrpd_instance_effective_priority" and s[1]["instance"] == "VI_A"]
    assert value(samples, "vrrpd_instance_master_adver_interval_seconds", instance="VI_A") != 0  # NaN


