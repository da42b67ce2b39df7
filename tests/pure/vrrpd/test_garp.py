"""Gratuitous ARP / unsolicited NA timing as keepalived has it, on the fake clock: when rounds go out, how many
messages each holds, how far apart the edge must space them, and what is counted."""

from __future__ import annotations

import pytest

from tests.pure.vrrpd.nodes import Host, Lan, config, instance
from vrrpd.config import ConfigError, parse
from vrrpd.core import events as n
from vrrpd.core.fsm import State


def master(lan: Lan | None = None, vips=("192.0.2.100/24",), **kw) -> Host:
    """A lone node (priority 200) that has become master at Master_Down_Interval, 3.2 s."""
    lan = lan or Lan()
    host = Host(lan, "a", config(instance(priority=200, vips=vips, **kw)),
                "192.0.2.1/24" if ":" not in vips[0] else "2001:db8::1/64")
    host.start()
    lan.run_until(3.5)
    assert host.state() is State.MASTER
    return host


def announcements(host: Host) -> list[tuple[int, float]]:
    return [(e.repeat, e.interval) for e in host.of_type(n.Announce)]


def test_a_second_round_goes_out_garp_master_delay_after_the_takeover_and_is_counted():
    host = master(garp_repeat=3, garp_master_delay=2.0)
    assert announcements(host) == [(3, 0.0)]
    host.lan.run_until(3.2 + 1.99)
    assert len(announcements(host)) == 1
    host.lan.run_until(3.2 + 2.01)
    assert announcements(host) == [(3, 0.0), (3, 0.0)]
    assert host.node.router("VI_1").stats.garp_delays == 1
    host.lan.run_until(30.0)
    assert len(announcements(host)) == 2  # one delayed round per takeover, not a refresh


def test_keepalived_default_is_a_second_round_after_five_seconds_and_zero_means_none():
    assert parse(instance(), "t.toml").instances[0].garp_master_delay == 5.0
    host = master(garp_master_delay=0)
    host.lan.run_until(60.0)
    assert len(announcements(host)) == 1 and host.node.router("VI_1").stats.garp_delays == 0


def test_no_delayed_round_after_leaving_master_before_it_is_due():
    host = master(garp_master_delay=5.0)
    host.set_link(False)
    host.lan.run_until(20.0)
    assert len(announcements(host)) == 1 and host.node.router("VI_1").stats.garp_delays == 0


def test_refresh_sends_garp_master_refresh_repeat_messages_every_garp_master_refresh():
    host = master(garp_master_refresh=2.0, garp_master_refresh_repeat=3, garp_master_delay=0, garp_master_repeat=1)
    host.lan.run_until(3.2 + 6.5)
    assert announcements(host) == [(1, 0.0), (3, 0.0), (3, 0.0), (3, 0.0)]


@pytest.mark.parametrize(("repeat", "expected"), [(None, 4), (2, 2), (0, None)])
def test_a_lower_priority_master_heard_gets_garp_lower_prio_repeat_messages(repeat, expected):
    lan = Lan()
    kw = {"garp_lower_prio_repeat": repeat} if repeat is not None else {}
    host = master(lan, garp_repeat=4, garp_master_delay=0, **kw)
    other = Host(lan, "b", config(instance(priority=100)), "192.0.2.2/24")
    other.start()
    lan.cut.add("a")  # b hears nothing of a, becomes master too: a split brain
    lan.run_until(10.0)
    lan.cut.clear()
    lan.run_until(12.0)
    after = announcements(host)[1:]
    # one burst per lower-priority advert heard (the yielding node says its last word more than once)
    assert (not after) if expected is None else (after and set(after) == {(expected, 0.0)})
    assert other.state() is State.BACKUP


@pytest.mark.parametrize(("vips", "expected"), [(("192.0.2.100/24",), 0.02), (("2001:db8::100/64",), 0.03)])
def test_the_edge_is_told_to_space_arps_by_garp_interval_and_nas_by_gna_interval(vips, expected):
    host = master(vips=vips, garp_interval=0.02, gna_interval=0.03)
    assert announcements(host) == [(5, expected)]


@pytest.mark.parametrize(("keys", "message"), [
    ("garp_repeat = 2\ngarp_master_repeat = 3", "the same setting as garp_repeat"),
    ("garp_master_delay = -1", "must be 0..3600 seconds"),
    ("garp_master_delay = 0.001", "at least 0.01 seconds"),
    ("garp_interval = 2", "must be 0..1 seconds"),
    ("garp_master_refresh_repeat = 0", "must be 1..100"),
    ("garp_lower_prio_repeat = 101", "must be 0..100"),
])
def test_bad_garp_settings_are_refused_with_their_line(keys, message):
    with pytest.raises(ConfigError) as caught:
        parse(instance() + keys + "\n", "g.toml")
    assert any(message in str(p) and str(p).startswith("g.toml:") and p.line and p.line > 6
               for p in caught.value.problems), caught.value


def test_keepalived_spellings_are_the_same_settings():
    inst = parse(instance(garp_master_repeat=2, garp_master_refresh=30.0), "t.toml").instances[0]
    assert (inst.garp_repeat, inst.garp_refresh) == (2, 30.0)
