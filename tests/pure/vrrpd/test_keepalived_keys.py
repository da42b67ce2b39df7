"""keepalived's instance keys on the fake LAN: excluded addresses, virtual routes and rules, the advert source,
the own interface's tracking, and the unicast TTL."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

import pytest

from tests.pure.vrrpd.nodes import Host, Lan, Raw, config, instance
from vrrpd.config import ConfigError, Route, Rule, parse
from vrrpd.core import events as n
from vrrpd.core import packet
from vrrpd.core.fsm import State

ROUTES = Raw('[{ to = "198.51.100.0/24", via = "192.0.2.254" }, { to = "203.0.113.0/24", src = "192.0.2.100" }]')
RULES = Raw('[{ from = "192.0.2.100/32", table = 100, priority = 1000 }]')


def lone(**kw) -> Host:
    host = Host(Lan(), "a", config(instance(priority=200, **kw)), "192.0.2.1/24")
    host.start()
    host.lan.run_until(4.0)
    return host


def queued_kinds(host: Host) -> list[str]:
    return [type(e.effect).__name__ for e in host.effects if isinstance(e.effect, n.QUEUED)]


def test_excluded_addresses_move_with_the_vips_are_announced_but_never_advertised():
    host = lone(virtual_ipaddress_excluded=["192.0.2.200/24", "2001:db8::200/64"])
    assert host.state() is State.MASTER
    assert host.holds("192.0.2.100/24") and host.holds("192.0.2.200/24") and host.holds("2001:db8::200/64")
    advert = packet.decode(host.sent[-1][1].packets[0][1], src=ip_address("192.0.2.1"), dst=packet.MCAST_V4, ttl=255)
    assert advert.addresses == (ip_address("192.0.2.100"),)
    assert len(host.of_type(n.Announce)[0].frames) == 3  # one GARP or NA for each address, excluded ones too
    host.set_link(False)
    assert not host.holds("192.0.2.200/24") and not host.holds("2001:db8::200/64")


def test_routes_and_rules_follow_the_addresses_in_and_out():
    host = lone(virtual_routes=ROUTES, virtual_rules=RULES)
    assert queued_kinds(host)[:3] == ["AddAddresses", "AddRoutes", "Announce"]
    added = host.of_type(n.AddRoutes)[0]
    assert added.routes == (Route(ip_network("198.51.100.0/24"), via=ip_address("192.0.2.254")),
                            Route(ip_network("203.0.113.0/24"), src=ip_address("192.0.2.100")))
    assert added.rules == (Rule(100, from_=ip_network("192.0.2.100/32"), priority=1000),)
    host.set_link(False)
    kinds = queued_kinds(host)
    assert kinds[kinds.index("RemoveRoutes") + 1] == "RemoveAddresses"
    assert host.of_type(n.RemoveRoutes)[0].routes == added.routes


def test_a_reload_of_a_master_changes_only_the_routes_that_changed():
    host = lone(virtual_routes=ROUTES)
    new = Raw('[{ to = "198.51.100.0/24", via = "192.0.2.254" }, { to = "192.0.2.128/25", via = "192.0.2.254" }]')
    host.feed(n.Reconfigure(config(instance(priority=200, virtual_routes=new))))
    assert [str(r) for r in host.of_type(n.RemoveRoutes)[-1].routes] == ["203.0.113.0/24 src 192.0.2.100"]
    assert [str(r) for r in host.of_type(n.AddRoutes)[-1].routes] == ["192.0.2.128/25 via 192.0.2.254"]


def test_a_route_that_was_there_before_us_is_not_removed_by_us():
    host = lone(virtual_routes=ROUTES)
    router = host.node.router("VI_1")
    first = host.of_type(n.AddRoutes)[0]
    host.feed(n.EffectFailed(router.id, n.AddRoutes("eth0", first.routes[:1], ()), "File exists", True))
    host.set_link(False)
    assert host.of_type(n.RemoveRoutes)[-1].routes == first.routes[1:]
    assert router.stats.route_add_errors == 0


def test_a_failed_route_is_counted():
    host = lone(virtual_rules=RULES)
    router = host.node.router("VI_1")
    host.feed(n.EffectFailed(router.id, n.AddRoutes("eth0", (), router.inst.virtual_rules), "Permission denied"))
    assert router.stats.route_add_errors == 1


def test_dont_track_primary_keeps_a_master_through_its_link_going_down():
    host = lone(dont_track_primary=True)
    host.set_link(False)
    assert host.state() is State.MASTER and host.holds("192.0.2.100/24")
    tracked = lone()
    tracked.set_link(False)
    assert tracked.state() is State.FAULT


def test_mcast_src_ip_is_the_source_while_it_is_on_the_interface():
    lan = Lan()
    host = Host(lan, "a", config(instance(priority=200, mcast_src_ip="192.0.2.9")), "192.0.2.1/24")
    host.start()
    lan.run_until(4.0)
    assert host.state() is State.FAULT  # not on the interface: no source, as with unicast_src
    host.add_address("192.0.2.9/24")
    lan.run_until(10.0)
    assert host.state() is State.MASTER and host.sent[-1][1].src == ip_address("192.0.2.9")


def unicast_pair(ttl: int) -> tuple[Host, Host]:
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=200, unicast_src="192.0.2.1", unicast_peers=["192.0.2.2"],
                                       unicast_ttl=ttl)), "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=100, unicast_src="192.0.2.2", unicast_peers=["192.0.2.1"],
                                       unicast_ttl=ttl)), "192.0.2.2/24")
    a.start()
    b.start()
    lan.run_until(5.0)
    return a, b


@pytest.mark.parametrize(("ttl", "accepted"), [(255, False), (64, True)])
def test_unicast_ttl_is_sent_and_below_255_a_lower_ttl_is_accepted(ttl, accepted):
    a, b = unicast_pair(ttl)
    assert a.sent[-1][1].ttl == ttl
    message = a.sent[-1][1].packets[0][1]
    routed_before = b.node.router("VI_1").stats.adverts_rx
    b.node.receive("eth0", "ipv4", message, ip_address("192.0.2.1"), ip_address("192.0.2.2"), ttl - 2, 5.0)
    stats = b.node.router("VI_1").stats
    assert (stats.adverts_rx - routed_before, stats.ttl_errors) == ((1, 0) if accepted else (0, 1))


def test_multicast_still_needs_255_whatever_unicast_ttl_says():
    a, b = unicast_pair(64)
    message = packet.encode(packet.Advert(3, 51, 200, 100, (ip_address("192.0.2.100"),)),
                            src=ip_address("192.0.2.1"), dst=packet.MCAST_V4)
    b.node.receive("eth0", "ipv4", message, ip_address("192.0.2.1"), packet.MCAST_V4, 62, 5.0)
    assert b.node.router("VI_1").stats.ttl_errors == 1


@pytest.mark.parametrize(("keys", "message"), [
    ("unicast_ttl = 64", "only for unicast adverts"),
    ('unicast_src = "192.0.2.1"\nunicast_peers = ["192.0.2.2"]\nmcast_src_ip = "192.0.2.1"', "use unicast_src alone"),
    ('mcast_src_ip = "2001:db8::1"', "is IPv6 but the virtual addresses are IPv4"),
    ('virtual_ipaddress_excluded = ["192.0.2.100/24"]', "listed twice"),
    ("virtual_routes = [{ to = \"198.51.100.1/24\" }]", "host bits"),
    ("virtual_routes = [{ to = \"198.51.100.0/24\", via = \"2001:db8::1\" }]", "is IPv6 but the route"),
    ("virtual_routes = [{ to = \"198.51.100.0/24\", table = 255 }]", "the kernel's"),
    ("virtual_routes = [{ to = \"198.51.100.0/24\", scope = \"planet\" }]", "must be one of"),
    ("virtual_rules = [{ table = 100 }]", "needs from or to"),
    ("virtual_rules = [{ from = \"192.0.2.100/32\" }]", "required, missing"),
    ("virtual_rules = [{ from = \"192.0.2.100/32\", table = 100, colour = 1 }]", "unknown key"),
    ("dont_track_primary = 1", "must be a boolean"),
])
def test_bad_keys_are_refused_with_file_line_and_key(keys, message):
    with pytest.raises(ConfigError) as caught:
        parse(instance() + keys + "\n", "k.toml")
    assert any(message in p.message and p.line and p.line > 6 for p in caught.value.problems), caught.value


def test_an_excluded_address_of_another_instance_is_refused():
    text = instance() + 'virtual_ipaddress_excluded = ["192.0.2.200/24"]\n\n' + \
        instance(name="VI_2", vrid=52, vips=("192.0.2.200/24",))
    with pytest.raises(ConfigError, match="already a virtual address of instance"):
        parse(text, "k.toml")
    assert parse(instance(virtual_ipaddress_excluded=["2001:db8::1/64"]), "k.toml").instances[0].addresses == (
        ip_interface("192.0.2.100/24"), ip_interface("2001:db8::1/64"))


def test_status_json_and_table_show_the_keepalived_keys_in_force():
    from vrrpd.core.status import status
    from vrrpd.ops.status_table import format_table

    h = lone(virtual_routes=ROUTES, accept_mode=False, use_vmac=True, version=2, interval=1, auth_type="PASS",
             auth_pass="s3cret", garp_master_delay=2.5)
    view = status(h.node, lambda t: "T")
    options = view["instances"][0]["options"]
    assert (options["auth_type"], options["auth_pass_set"], options["use_vmac"], options["vmac_address"]) == (
        "PASS", True, "vrrp.51", "00:00:5e:00:01:33")
    assert options["accept_mode"] is False and options["garp"]["master_delay"] == 2.5
    assert options["virtual_routes"] == ["198.51.100.0/24 via 192.0.2.254", "203.0.113.0/24 src 192.0.2.100"]
    assert "s3cret" not in str(view)  # the password itself is never shown
    table = format_table({**view, "pid": 1, "version": "x"})
    line = next(line for line in table.splitlines() if line.startswith("options VI_1:"))
    assert "auth_type PASS" in line and "vmac vrrp.51 (00:00:5e:00:01:33)" in line and "accept_mode false" in line
