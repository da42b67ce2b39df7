"""The status JSON (SPEC section 5) as Prometheus text (format 0.0.4): what `metrics_listen` serves per scrape.

Pure: a status dict in, text out; the HTTP edge is `vrrpd.io.metrics_http`.
"""

from __future__ import annotations

from daemonkit.promtext import Family, metric_name, render as render_families
from vrrpd.core.fsm import State

STATES = tuple(state.value for state in State)
_INSTANCE_LABELS = (("instance", "name"), ("interface", "interface"), ("vrid", "vrid"), ("family", "family"))

# What each counter of Stats counts, with its RFC 6527 (VRRPv3 MIB) object where there is one.
COUNTER_HELP = {
    "master_transitions": "Transitions to MASTER (vrrpv3StatisticsMasterTransitions).",
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
    "split_brain_seen": "Adverts of another master of equal or higher priority heard while master.",
}



def render(status: dict) -> str:
    """The Prometheus text for a daemon status: SPEC section 5 plus "stats" and "notify"."""
    instances = [inst for inst in status.get("instances") or [] if isinstance(inst, dict)]
    info = Family("vrrpd_info", "gauge", "Version and router_id of this vrrpd; always 1.")
    info.add((("version", status.get("version", "")), ("router_id", status.get("router_id", ""))), 1)
    return render_families([info, *_instance_families(instances), *_counter_families(instances, status)])


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
    return families


def _labels(inst: dict) -> tuple[tuple[str, object], ...]:
    return tuple((label, inst.get(key, "")) for label, key in _INSTANCE_LABELS)


def _numbers(stats) -> dict[str, int | float]:
    if not isinstance(stats, dict):
        return {}
    return {str(k): v for k, v in stats.items() if isinstance(v, (int, float))}


def _counter_help(name: str) -> str:
    return COUNTER_HELP.get(name, f"The {name} counter.")
