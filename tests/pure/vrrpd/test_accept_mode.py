"""accept_mode (RFC 5798 6.1): the Node's own nftables table per instance, made before it can hold a VIP,
changed with its addresses, deleted with it; its rules as text."""

from __future__ import annotations

import pytest

from tests.pure.vrrpd.nodes import Host, Lan, config, instance
from vrrpd.config import ConfigError, parse
from vrrpd.core import accept
from vrrpd.core import events as n


def started(**kw) -> Host:
    h = Host(Lan(), "a", config(instance(priority=200, **kw)))
    h.start()
    h.lan.run_until(4.0)
    return h


def filters(h: Host) -> list[n.FilterRules]:
    return h.of_type(n.FilterRules)


def test_the_default_accepts_as_keepalived_does_and_makes_no_table():
    h = started()
    assert filters(h) == [] and h.of_type(n.PruneFilters) == [n.PruneFilters(())]


def test_accept_mode_false_makes_the_table_first_in_the_queue_and_drops_every_address_of_the_instance():
    h = started(accept_mode=False, vips=("192.0.2.100/24", "192.0.2.101/24"),
                virtual_ipaddress_excluded=["2001:db8::100/64"])
    [made] = filters(h)
    assert made.table == "vrrpd_51_ipv4_eth0"
    queued = [type(e.effect).__name__ for e in h.effects if isinstance(e.effect, n.QUEUED)]
    assert queued[0] == "FilterRules" and queued.index("AddAddresses") > 0
    assert "ip daddr { 192.0.2.100, 192.0.2.101 } drop" in made.script
    assert "ip6 daddr { 2001:db8::100 } icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept" in made.script
    assert made.script.startswith("add table inet vrrpd_51_ipv4_eth0\ndelete table inet vrrpd_51_ipv4_eth0\n")
    h.stop()
    assert filters(h)[-1].script == accept.removal("vrrpd_51_ipv4_eth0")


def test_a_reload_changes_the_table_with_the_addresses_and_removes_it_with_the_instance():
    h = started(accept_mode=False)
    h.feed(n.Reconfigure(config(instance(priority=200, accept_mode=False, vips=("192.0.2.100/24", "192.0.2.7/24")))))
    assert "192.0.2.7" in filters(h)[-1].script
    h.feed(n.Reconfigure(config(instance(priority=200, accept_mode=False, vips=("192.0.2.100/24", "192.0.2.7/24")))))
    assert len(filters(h)) == 2  # nothing changed: no nft run
    h.feed(n.Reconfigure(config(instance(priority=200))))  # accept_mode back to true
    assert filters(h)[-1].script == accept.removal("vrrpd_51_ipv4_eth0")
    h.feed(n.Reconfigure(config(instance(priority=200, accept_mode=False))))
    h.feed(n.Reconfigure(config(instance(name="OTHER", vrid=60, priority=200, vips=("192.0.2.60/24",)))))
    assert filters(h)[-1].script == accept.removal("vrrpd_51_ipv4_eth0")  # the removed instance's table went too


def test_a_failed_nft_run_is_counted():
    h = started(accept_mode=False)
    r = h.node.router("VI_1")
    h.feed(n.EffectFailed(r.id, filters(h)[0], "nft failed"))
    assert r.stats.filter_errors == 1


def test_an_owner_always_accepts_and_names_stay_nft_identifiers():
    with pytest.raises(ConfigError, match="address owner"):
        parse(instance(priority=255, accept_mode=False), "t.toml")
    inst = parse(instance(accept_mode=False).replace('interface = "eth0"', 'interface = "br-lan.10@x"'),
                 "t.toml").instances[0]
    assert accept.table_name(inst) == "vrrpd_51_ipv4_br_lan_10_x"
