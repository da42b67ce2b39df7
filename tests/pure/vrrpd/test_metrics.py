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




# ---- the keepalived exporter's vocabulary, beside vrrpd's own ------------------------------------------

KEEPALIVED_NAMES = (
    "keepalived_up", "keepalived_vrrp_state", "keepalived_advertisements_received_total",
    "keepalived_advertisements_sent_total", "keepalived_become_master_total", "keepalived_release_master_total",
    "keepalived_packet_length_errors_total", "keepalived_advertisements_interval_errors_total",
    "keepalived_ip_ttl_errors_total", "keepalived_invalid_type_received_total", "keepalived_address_list_errors_total",
    "keepalived_authentication_invalid_total", "keepalived_authentication_mismatch_total",
    "keepalived_authentication_failure_total", "keepalived_priority_zero_received_total",
    "keepalived_priority_zero_sent_total", "keepalived_gratuitous_arp_delay_total", "keepalived_script_status",
)


def test_the_keepalived_exporters_names_labels_and_values():
    families, samples = parse(render(sample_status()))
    assert set(KEEPALIVED_NAMES) <= set(families)
    assert value(samples, "keepalived_up") == 1
    a = {"iname": "VI_A", "intf": "eth0", "vrid": "51"}
    b = {"iname": "VI_B6", "intf": "eth1", "vrid": "52"}
    assert value(samples, "keepalived_vrrp_state", ip_address="192.0.2.100", **a) == 2  # MASTER
    assert value(samples, "keepalived_vrrp_state", ip_address="2001:db8::100", **b) == 1  # BACKUP
    assert value(samples, "keepalived_advertisements_sent_total", **a) == 12
    assert value(samples, "keepalived_become_master_total", **a) == 1
    assert value(samples, "keepalived_ip_ttl_errors_total", **b) == 2
    assert value(samples, "keepalived_priority_zero_received_total", **b) == 1
    assert [v for n, ls, v in samples if n == "keepalived_script_status" and ls == {"name": "chk"}] == [1]
    assert not [s for s in samples if s[0] == "keepalived_script_status" and s[1]["name"] == "later"]  # pending
    for name, labels, _ in samples:
        if name.startswith("keepalived_") and name not in ("keepalived_up", "keepalived_script_status"):
            assert {"iname", "intf", "vrid"} <= set(labels), (name, labels)


def test_one_state_series_per_vip_and_none_for_a_stopping_instance():
    status = sample_status()
    status["instances"][0]["virtual_ipaddress"] = ["192.0.2.100/24", "192.0.2.101/24"]
    status["instances"][1]["state"] = "STOP"
    _, samples = parse(render(status))
    states = [(s[1]["iname"], s[1]["ip_address"], s[2]) for s in samples if s[0] == "keepalived_vrrp_state"]
    assert states == [("VI_A", "192.0.2.100", 2), ("VI_A", "192.0.2.101", 2)]


def test_vrrpds_own_additions():
    _, samples = parse(render(sample_status()))
    labels = {"instance": "VI_A", "interface": "eth0", "vrid": "51", "family": "ipv4"}
    assert value(samples, "vrrpd_instance_priority", **labels) == 150
    assert value(samples, "vrrpd_instance_effective_priority", **labels) == 90
    assert value(samples, "vrrpd_instance_last_transition_timestamp_seconds", **labels) == 1795341600.0
    assert value(samples, "vrrpd_track_up", kind="interface", tracked="eth1", **labels) == 0
    assert value(samples, "vrrpd_track_weight", kind="script", tracked="chk", **labels) == -60
    assert value(samples, "vrrpd_notify_exits_total", code="timeout") == 1
    assert value(samples, "vrrpd_notify_seconds_total") == 0.75
    for name in ("vrrpd_split_brain_seen_total", "vrrpd_announcements_tx_total", "vrrpd_vip_add_errors_total",
                 "vrrpd_vip_remove_errors_total"):
        assert value(samples, name, **labels) == 0
