"""The optional Prometheus endpoint (`metrics_listen` in [global]): the status JSON of SPEC section 5 as text
exposition format 0.0.4, served on GET /metrics.

`render` is pure (status dict in, text out); `MetricsServer` is the thin aiohttp edge that calls it per scrape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from daemonkit import log as logging

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("INIT", "BACKUP", "MASTER", "FAULT", "STOP")
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
    "auth_errors": "Packets dropped: VRRPv2 authentication not accepted.",
    "peer_errors": "Packets dropped: source is not a configured unicast peer.",
}


# ---- rendering (pure) -----------------------------------------------------------------------------------

@dataclass
class _Family:
    """One metric family: its HELP and TYPE lines, then its samples as (labels, value)."""

    name: str
    kind: str  # "gauge" | "counter"
    help: str
    samples: list[tuple[tuple[tuple[str, str], ...], object]] = field(default_factory=list)

    def add(self, labels: Iterable[tuple[str, object]], value) -> None:
        if isinstance(value, (int, float)):  # a missing or null value gives no sample, not a wrong 0
            self.samples.append((tuple((k, str(v)) for k, v in labels), value))

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            pairs = ",".join(f'{key}="{_escape_label(text)}"' for key, text in labels)
            out.append(f"{self.name}{{{pairs}}} {_number(value)}" if pairs else f"{self.name} {_number(value)}")
        return out


def render(status: dict) -> str:
    """The Prometheus text (format 0.0.4) for a daemon status: SPEC section 5 plus "stats" and "notify"."""
    instances = [inst for inst in status.get("instances") or [] if isinstance(inst, dict)]
    info = _Family("vrrpd_info", "gauge", "Version and router_id of this vrrpd; always 1.")
    info.add((("version", status.get("version", "")), ("router_id", status.get("router_id", ""))), 1)
    families = [info, *_instance_families(instances), *_counter_families(instances, status)]
    return "".join(line + "\n" for family in families for line in family.lines())


def _instance_families(instances: list[dict]) -> list[_Family]:
    state = _Family("vrrpd_instance_state", "gauge", "1 for the state the instance is in, 0 for the others.")
    gauges = [
        (_Family("vrrpd_instance_priority", "gauge", "Configured priority (255: address owner)."), "priority"),
        (_Family("vrrpd_instance_effective_priority", "gauge",
                 "Priority advertised now, after track_interface and track_script weights."),
         "effective_priority"),
        (_Family("vrrpd_instance_advert_interval_seconds", "gauge", "Configured advertisement interval."),
         "advert_interval"),
        (_Family("vrrpd_instance_master_adver_interval_seconds", "gauge",
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


def _counter_families(instances: list[dict], status: dict) -> list[_Family]:
    router_stats = _numbers(status.get("stats"))
    per_instance = [(_labels(inst), _numbers(inst.get("stats"))) for inst in instances]
    names = list(COUNTER_HELP)
    for stats in [router_stats, *(stats for _, stats in per_instance)]:
        names += [name for name in stats if name not in names]
    families = []
    for name in names:
        if any(name in stats for _, stats in per_instance):
            family = _Family(f"vrrpd_{_metric_name(name)}_total", "counter", _counter_help(name))
            for labels, stats in per_instance:
                family.add(labels, stats.get(name))
            families.append(family)
    for name in names:
        if name in router_stats:
            help_ = f"{_counter_help(name)} Router-wide: packets no instance can be blamed for."
            family = _Family(f"vrrpd_router_{_metric_name(name)}_total", "counter", help_)
            family.add((), router_stats[name])
            families.append(family)
    notify = _numbers(status.get("notify"))
    for key, help_ in (("completed", "Notify commands that ran and exited 0."),
                       ("failed", "Notify commands that failed, timed out or could not start.")):
        if key in notify:
            family = _Family(f"vrrpd_notify_{key}_total", "counter", help_)
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


def _metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _number(value) -> str:
    if isinstance(value, int):  # bool too
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


# ---- the HTTP edge --------------------------------------------------------------------------------------

def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT -> (host, port); port 0 asks the kernel for a free one."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"metrics_listen {listen!r}: write an IPv6 address in brackets, as [::1]:9101")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics_listen {listen!r} is not HOST:PORT")
    return host, int(port)


class MetricsServer:
    """Serves GET /metrics (render of `status()` at each scrape) on `listen`; anything else is 404."""

    def __init__(self, listen: str, status: Callable[[], dict]):
        self.host, self.port = parse_listen(listen)
        self.status = status
        self._runner: web.AppRunner | None = None
        self._log = logging.get("vrrpd.metrics")

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._log.info("metrics_listening", addresses=[f"{a[0]}:{a[1]}" for a in self.addresses])

    @property
    def addresses(self) -> list[tuple]:
        """The socket addresses actually bound (with the real port when 0 was asked for)."""
        return list(self._runner.addresses) if self._runner else []

    async def close(self) -> None:
        if self._runner:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            body = render(self.status())
        except Exception as exc:  # a scrape must never take the daemon down
            self._log.error("metrics_render_failed", error=f"{type(exc).__name__}: {exc}")
            return web.Response(status=500, text="status unavailable\n")
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
