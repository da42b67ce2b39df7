"""The status JSON (SPEC section 5) as Prometheus text (format 0.0.4): what `metrics_listen` serves per scrape.

Two vocabularies side by side: the names, labels and values of the keepalived exporter whose Grafana
dashboards keepalived operators already run (`keepalived_*`), and vrrpd's own for what keepalived has no name
for (`vrrpd_*`). Pure: a status dict in, text out; the HTTP edge is `vrrpd.io.metrics_http`.
"""

from __future__ import annotations

from datetime import datetime

from daemonkit.promtext import Family, metric_name, render as render_families
from vrrpd.core.fsm import State

# The keepalived exporter's state values; STOP, a daemon on its way out, has none and gives no sample.
KEEPALIVED_STATES = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
# keepalived exporter counter (keepalived_<name>_total) -> our Stats field, with its meaning.
KEEPALIVED_COUNTERS = (
    ("advertisements_received", "adverts_rx", "Advertisements received."),
    ("advertisements_sent", "adverts_tx", "Advertisements sent."),
    ("become_master", "master_transitions", "Transitions to MASTER."),
    ("release_master", "master_releases", "Transitions out of MASTER."),
    ("packet_length_errors", "packet_length_errors", "Packets received with a bad length."),
    ("advertisements_interval_errors", "adv_interval_errors", "Adverts whose interval differs (VRRPv2)."),
    ("ip_ttl_errors", "ttl_errors", "Packets received with a TTL or hop limit other than 255."),
    ("invalid_type_received", "invalid_type", "Packets received of a type other than advertisement."),
    ("address_list_errors", "address_list_errors", "Adverts whose address list differs from ours."),
    ("authentication_invalid", "auth_invalid", "Adverts with an unknown authentication type."),
    ("authentication_mismatch", "auth_mismatch", "Adverts with another authentication type than ours."),
    ("authentication_failure", "auth_failure", "Adverts that failed authentication."),
    ("priority_zero_received", "priority_zero_rx", "Priority 0 adverts received."),
    ("priority_zero_sent", "priority_zero_tx", "Priority 0 adverts sent."),
    ("gratuitous_arp_delay", "garp_delays", "Delayed rounds of gratuitous ARPs / NAs sent (garp_master_delay)."),
)

STATES = tuple(state.value for state in State)
_INSTANCE_LABELS = (("instance", "name"), ("interface", "interface"), ("vrid", "vrid"), ("family", "family"))

# What each counter of Stats counts, with its RFC 6527 (VRRPv3 MIB) object where there is one.
COUNTER_HELP = {
    "master_transitions": "Transitions to MASTER (vrrpv3StatisticsMasterTransitions).",
    "master_releases": "Transitions out of MASTER.",
    "adverts_rx": "Valid advertisements received (vrrpv3StatisticsRcvdAdvertisements).",
    "adverts_tx": "Advertisements sent.",
    "priority_zero_rx": "Priority 0 advertisements received (vrrpv3StatisticsRcvdPriZeroPackets).",
    "priority_zero_tx": "Priority 0 advertisements sent (vrrpv3StatisticsSentPriZeroPackets).",
    "ttl_errors": "Packets dropped: TTL or hop limit not 255 (vrrpv3StatisticsIpTtlErrors).",
    "version_errors": "Packets dropped: unknown or mismatched VRRP version (vrrpv3RouterVersionErrors).",
    "checksum_errors": "Packets dropped: bad checksum (vrrpv3RouterChecksumErrors).",
    "checksum_rfc9568_rx": "Advertisements accepted with the RFC 9568 message-only IPv4 checksum.",
    "invalid_type": "Packets dropped: VRRP type not advertisement (vrrpv3StatisticsRcvdInvalidTypePackets).",
    "packet_length_errors": "Packets dropped: bad length (vrrpv3StatisticsPacketLengthErrors).",
    "address_list_errors": "Packets dropped: address list differs (vrrpv3StatisticsAddressListErrors).",
    "vrid_errors": "Packets dropped: VRID not configured on the interface (vrrpv3RouterVrIdErrors).",
    "adv_interval_errors": "Packets dropped: VRRPv2 advert interval differs (vrrpv3StatisticsAdvIntervalErrors).",
    "auth_errors": "Packets dropped: VRRPv2 authentication not accepted (the three below say why).",
    "auth_invalid": "Packets dropped: an unknown VRRPv2 authentication type.",
    "auth_mismatch": "Packets dropped: a VRRPv2 authentication type other than ours.",
    "auth_failure": "Packets dropped: our VRRPv2 authentication type, but a wrong password or AH digest.",
    "peer_errors": "Packets dropped: source is not a configured unicast peer.",
    "send_errors": "Adverts the socket refused to send (logged).",
    "vip_add_errors": "Virtual addresses netlink failed to add (logged).",
    "vip_remove_errors": "Virtual addresses netlink failed to remove (logged).",
    "announce_errors": "Gratuitous ARP / NA frames that could not be sent (logged).",
    "route_add_errors": "virtual_routes / virtual_rules netlink failed to add (logged).",
    "route_remove_errors": "virtual_routes / virtual_rules netlink failed to remove (logged).",
    "filter_errors": "accept_mode = false: nft failed to make, change or delete the instance's table (logged).",
    "vips_restored": "Virtual addresses someone else removed from this master, put back.",
    "announcements_tx": "Gratuitous ARP / unsolicited NA frames sent.",
    "garp_delays": "Delayed second rounds of gratuitous ARPs / NAs (garp_master_delay) sent.",
    "duplicate_address": "Adverts from this node's own source address that it did not send (a duplicate address).",
    "split_brain_seen": "Adverts of another master of equal or higher priority heard while master.",
}



def render(status: dict) -> str:
    """The Prometheus text for a daemon status: SPEC section 5 plus "stats" and "notify"."""
    instances = [inst for inst in status.get("instances") or [] if isinstance(inst, dict)]
    info = Family("vrrpd_info", "gauge", "Version and router_id of this vrrpd; always 1.")
    info.add((("version", status.get("version", "")), ("router_id", status.get("router_id", ""))), 1)
    return render_families([*_keepalived_families(instances), info, *_instance_families(instances),
                            *_track_families(instances), *_counter_families(instances, status)])


def _keepalived_families(instances: list[dict]) -> list[Family]:
    up = Family("keepalived_up", "gauge", "1: the VRRP daemon (vrrpd) answers.")
    up.add((), 1)
    state = Family("keepalived_vrrp_state", "gauge", "0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT; one series per VIP.")
    counters = [(Family(f"keepalived_{name}_total", "counter", help_), field) for name, field, help_ in
                KEEPALIVED_COUNTERS]
    scripts = Family("keepalived_script_status", "gauge", "Health-check script: 1 good, 0 bad.")
    seen: set[str] = set()
    for inst in instances:
        labels = (("iname", inst.get("name", "")), ("intf", inst.get("interface", "")), ("vrid", inst.get("vrid", "")))
        value = KEEPALIVED_STATES.get(inst.get("state"))
        for vip in inst.get("virtual_ipaddress") or []:
            state.add(labels + (("ip_address", str(vip).split("/")[0]),), value)
        stats = inst.get("stats") if isinstance(inst.get("stats"), dict) else {}
        for family, field in counters:
            family.add(labels, stats.get(field))
        track = inst.get("track") if isinstance(inst.get("track"), dict) else {}
        for name, status in (track.get("scripts") or {}).items():
            if name not in seen and status in ("up", "down"):
                seen.add(name)
                scripts.add((("name", name),), int(status == "up"))
    return [up, state, *(family for family, _ in counters), scripts]


def _track_families(instances: list[dict]) -> list[Family]:
    state = Family("vrrpd_track_up", "gauge", "A tracked interface (kind=interface) or script: 1 up, 0 down or missing.")
    weight = Family("vrrpd_track_weight", "gauge", "The weight of a tracked object (0: down means FAULT).")
    since = Family("vrrpd_instance_last_transition_timestamp_seconds", "gauge",
                   "When the instance entered its current state (Unix time).")
    for inst in instances:
        labels = _labels(inst)
        try:
            since.add(labels, datetime.fromisoformat(str(inst.get("since")).replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
        track = inst.get("track") if isinstance(inst.get("track"), dict) else {}
        weights = track.get("weights") or {}
        for kind, objects in (("interface", track.get("interfaces") or {}), ("script", track.get("scripts") or {})):
            for name, status in objects.items():
                if status == "pending":
                    continue
                object_labels = labels + (("kind", kind), ("tracked", name))
                state.add(object_labels, int(status == "up"))
                weight.add(object_labels, weights.get(name))
    return [since, state, weight]


def _instance_families(instances: list[dict]) -> list[Family]:
    state = Family("vrrpd_instance_state", "gauge", "1 for the state the instance is in, 0 for the others.")
    gauges = [
        (Family("vrrpd_instance_priority", "gauge", "Configured priority (255: address owner)."), "priority"),
        (Family("vrrpd_instance_effective_priority", "gauge",
                "Priority advertised now, after track_interface and track_script weights."), "effective_priority"),
        (Family("vrrpd_instance_advert_interval_seconds", "gauge", "Configured advertisement interval."),
         "advert_interval"),
        (Family("vrrpd_instance_master_adver_interval_seconds", "gauge",
                "Advertisement interval learnt from the master (RFC 5798 Master_Adver_Interval)."),
         "master_adver_interval"),
    ]
    for inst in instances:
        labels = _labels(inst)
        current = inst.get("state")
        for name in STATES + ((current,) if current not in STATES and current is not None else ()):
            state.add(labels + (("state", name),), int(name == current))
        for family, key in gauges:
            family.add(labels, inst.get(key))
    return [state, *(family for family, _ in gauges)]


def _counter_families(instances: list[dict], status: dict) -> list[Family]:
    router_stats = _numbers(status.get("stats"))
    per_instance = [(_labels(inst), _numbers(inst.get("stats"))) for inst in instances]
    names = list(COUNTER_HELP)
    for stats in [router_stats, *(stats for _, stats in per_instance)]:
        names += [name for name in stats if name not in names]
    families = []
    for name in names:
        if any(name in stats for _, stats in per_instance):
            family = Family(f"vrrpd_{metric_name(name)}_total", "counter", _counter_help(name))
            for labels, stats in per_instance:
                family.add(labels, stats.get(name))
            families.append(family)
    for name in names:
        if name in router_stats:
            help_ = f"{_counter_help(name)} Router-wide: packets no instance can be blamed for."
            family = Family(f"vrrpd_router_{metric_name(name)}_total", "counter", help_)
            family.add((), router_stats[name])
            families.append(family)
    notify = _numbers(status.get("notify"))
    for key, help_ in (("completed", "Notify commands that ran and exited 0."),
                       ("failed", "Notify commands that failed, timed out or could not start."),
                       ("dropped", "Notify commands dropped because the queue was full."),
                       ("fifo_written", "Lines written to the notify FIFO."),
                       ("fifo_dropped", "Lines for the notify FIFO dropped (its reader too slow, the pipe full).")):
        if key in notify:
            family = Family(f"vrrpd_notify_{key}_total", "counter", help_)
            family.add((), notify[key])
            families.append(family)
    raw = status.get("notify") if isinstance(status.get("notify"), dict) else {}
    if isinstance(raw.get("exits"), dict):
        exits = Family("vrrpd_notify_exits_total", "counter",
                       "Notify commands by how they ended: the exit code, timeout or spawn_error.")
        for code, count in sorted(raw["exits"].items()):
            exits.add((("code", code),), count)
        families.append(exits)
    if "seconds" in notify:
        seconds = Family("vrrpd_notify_seconds_total", "counter", "Time spent running notify commands.")
        seconds.add((), notify["seconds"])
        families.append(seconds)
    return families


def _labels(inst: dict) -> tuple[tuple[str, object], ...]:
    return tuple((label, inst.get(key, "")) for label, key in _INSTANCE_LABELS)


def _numbers(stats) -> dict[str, int | float]:
    if not isinstance(stats, dict):
        return {}
    return {str(k): v for k, v in stats.items() if isinstance(v, (int, float))}


def _counter_help(name: str) -> str:
    return COUNTER_HELP.get(name, f"The {name} counter.")
