"""Which node serves a context (SPEC 6), and the address table that tells which VIPs are local."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from csserver.config import parse
from csserver.localaddrs import AddressTable, StaticAddresses
from csserver.routing import Adopt, Malformed, Misdirected, Serve, creation_primary, ownership, route

CLUSTER = parse("""\
[node]
alias = "cs-a"
[cluster]
aliases = { "cs-a" = "192.0.2.100", "cs-b" = "192.0.2.101", "cs-c" = "2001:db8::c" }
backup  = { "cs-a" = "cs-b", "cs-b" = "cs-a", "cs-c" = "cs-a" }
[store]
url = "sqlite:x.db"
""").cluster
VIP_A, VIP_B, VIP_C = ip_address("192.0.2.100"), ip_address("192.0.2.101"), ip_address("2001:db8::c")
A_CTX, B_CTX = "4-4--cs-acs-b7", "4-4--cs-bcs-a9"


def test_malformed_first():
    assert isinstance(route("4-4--cs-acs-b", "cs-a", CLUSTER, {VIP_A}), Malformed)
    assert route("nonsense", "cs-a", CLUSTER, {VIP_A}).status == 400


def test_the_primary_holding_its_vip_serves():
    assert route(A_CTX, "cs-a", CLUSTER, {VIP_A}) == Serve(route(A_CTX, "cs-a", CLUSTER, {VIP_A}).haid)


def test_a_stranger_is_misdirected_to_the_primarys_vip():
    decision = route("4-4--cs-ccs-b9", "cs-a", CLUSTER, {VIP_A, VIP_B, VIP_C})
    assert isinstance(decision, Misdirected) and decision.status == 421 and decision.vip == VIP_C
    unknown = route("4-4--cs-xcs-y1", "cs-a", CLUSTER, {VIP_A})
    assert isinstance(unknown, Misdirected) and unknown.vip is None


def test_the_backup_serves_only_while_it_holds_the_primarys_vip():
    assert isinstance(route(A_CTX, "cs-b", CLUSTER, {VIP_B}), Misdirected)  # A is up: A serves
    assert isinstance(route(A_CTX, "cs-b", CLUSTER, {VIP_A, VIP_B}), Serve)  # A is down: its VIP is here


def test_a_primary_without_its_vip_sends_clients_to_it():
    """P's csserver is up, but VRRP put P's VIP on B (P's link to the clients is down, say)."""
    decision = route(A_CTX, "cs-a", CLUSTER, {VIP_B})
    assert isinstance(decision, Misdirected) and decision.vip == VIP_A


def test_a_standalone_node_skips_the_vip_check():
    standalone = parse('[node]\nalias = "solo"\n[cluster]\nbackup = { "solo" = "peer", "peer" = "solo" }\n'
                       '[store]\nurl = "sqlite:x.db"\n').cluster
    assert isinstance(route("4-4--solopeer1", "solo", standalone, set()), Serve)
    assert isinstance(route("4-4--peersolo1", "solo", standalone, set()), Serve)
    assert isinstance(route("4-4--peerxxxx1", "solo", standalone, set()), Misdirected)


def test_ownership_adopts_from_another_owner_only():
    assert ownership("cs-a", "cs-a") is None
    assert ownership("cs-b", "cs-a") == Adopt("cs-a")


def test_creation_primary_follows_the_vip_the_request_came_in_on():
    assert creation_primary("cs-a", CLUSTER, VIP_A) == "cs-a"
    assert creation_primary("cs-a", CLUSTER, None) == "cs-a"
    assert creation_primary("cs-a", CLUSTER, ip_address("127.0.0.1")) == "cs-a"
    assert creation_primary("cs-a", CLUSTER, VIP_B) == "cs-b"  # B is down; A holds VIP-B as its backup
    assert creation_primary("cs-b", CLUSTER, VIP_C) == "cs-b"  # B is not C's backup: its own


def test_address_table_tracks_addresses_across_interfaces():
    table = AddressTable()
    assert table.replace([(VIP_A, 2), (ip_address("127.0.0.1"), 1)]) == ({VIP_A, ip_address("127.0.0.1")}, set())
    assert table.apply("RTM_NEWADDR", VIP_A, 3) == (set(), set())  # the same VIP on a second interface
    assert table.apply("RTM_DELADDR", VIP_A, 2) == (set(), set())  # still on the second one
    assert VIP_A in table.addresses
    assert table.apply("RTM_DELADDR", VIP_A, 3) == (set(), {VIP_A})
    assert table.apply("RTM_NEWADDR", VIP_B, 2) == ({VIP_B}, set())
    assert table.apply("RTM_DELADDR", VIP_C, 2) == (set(), set())  # never seen: nothing changes


def test_static_addresses_tell_listeners_what_changed():
    seen = []
    local = StaticAddresses(["192.0.2.100"])
    local.add_listener(lambda added, removed: seen.append((added, removed)))
    local.set(["192.0.2.101"])
    local.set(["192.0.2.101"])
    assert seen == [({VIP_B}, {VIP_A})]
    assert VIP_B in local and VIP_A not in local


@pytest.mark.parametrize("haid", ["4-4--cs-acs-b1", "4-4--cs-bcs-a1"])
def test_routing_is_pure(haid):
    local = frozenset({VIP_A})
    assert route(haid, "cs-a", CLUSTER, local) == route(haid, "cs-a", CLUSTER, local)
