"""Per-instance counters, named after the RFC 6527 VRRPv3 MIB where it has a name (the status JSON's `stats`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from vrrpd.core.packet import DropReason


@dataclass(slots=True)
class Stats:
    master_transitions: int = 0
    adverts_rx: int = 0
    adverts_tx: int = 0
    priority_zero_rx: int = 0
    priority_zero_tx: int = 0
    ttl_errors: int = 0
    version_errors: int = 0
    checksum_errors: int = 0
    checksum_rfc9568_rx: int = 0
    invalid_type: int = 0
    packet_length_errors: int = 0
    address_list_errors: int = 0
    vrid_errors: int = 0
    adv_interval_errors: int = 0
    auth_errors: int = 0
    peer_errors: int = 0
    # What the edges failed to do (logged too): a failure is counted and never stops the effects after it.
    send_errors: int = 0
    vip_add_errors: int = 0
    vip_remove_errors: int = 0
    announce_errors: int = 0
    vips_restored: int = 0  # VIPs someone else removed from under this master, put back

    def count_drop(self, reason: DropReason) -> None:
        name = reason.value
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


STAT_NAMES = tuple(f.name for f in fields(Stats))
