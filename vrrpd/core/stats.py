"""Per-instance counters, named after the RFC 6527 VRRPv3 MIB where it has a name (the status JSON's `stats`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from vrrpd.core.packet import DropReason


@dataclass(slots=True)
class Stats:
    master_transitions: int = 0
    master_releases: int = 0  # transitions out of MASTER (keepalived: release_master)
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
    auth_errors: int = 0  # VRRPv2 authentication not accepted, in total (the three below say why)
    auth_invalid: int = 0  # an unknown authentication type (keepalived: authentication_invalid)
    auth_mismatch: int = 0  # a known type other than ours (keepalived: authentication_mismatch)
    auth_failure: int = 0  # our type, but the password or the AH digest is wrong (keepalived: authentication_failure)
    peer_errors: int = 0
    # What the edges failed to do (logged too): a failure is counted and never stops the effects after it.
    send_errors: int = 0
    vip_add_errors: int = 0
    vip_remove_errors: int = 0
    announce_errors: int = 0
    route_add_errors: int = 0  # virtual_routes / virtual_rules netlink failed to add
    route_remove_errors: int = 0
    filter_errors: int = 0  # accept_mode = false: nft failed to make, change or delete the instance's table
    vips_restored: int = 0  # VIPs someone else removed from under this master, put back
    announcements_tx: int = 0  # gratuitous ARP / unsolicited NA frames handed to the socket
    garp_delays: int = 0  # delayed second rounds of announcements (garp_master_delay) sent
    duplicate_address: int = 0  # adverts from our own source address that are not ours
    split_brain_seen: int = 0  # as master, heard another master of equal or higher priority

    def count_drop(self, reason: DropReason) -> None:
        name = reason.value
        setattr(self, name, getattr(self, name) + 1)
        if reason in _AUTH_REASONS:
            self.auth_errors += 1

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_AUTH_REASONS = frozenset({DropReason.AUTH_INVALID, DropReason.AUTH_MISMATCH, DropReason.AUTH_FAILURE})
STAT_NAMES = tuple(f.name for f in fields(Stats))
