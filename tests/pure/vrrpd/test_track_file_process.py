"""track_file and track_process as keepalived has them, decided by the Node on the fake clock."""

from __future__ import annotations

import pytest

from tests.pure.vrrpd.nodes import Host, Lan, Raw, config, instance
from vrrpd.config import ConfigError, TrackProcess, parse
from vrrpd.core import events as n
from vrrpd.core.fsm import State
from vrrpd.core.tracking import process_matches

FILE = '[[track_file]]\nname = "f1"\nfile = "/run/app/weight"\nweight = {weight}\n\n'
PROCESS = '[[track_process]]\nname = "p1"\nprocess = "haproxy"\nquorum = 2\nweight = {weight}\ndelay = {delay}\n\n'


def host(tables: str, **kw) -> Host:
    h = Host(Lan(), "a", config(instance(priority=100, **kw), tables))
    h.start()
    h.lan.run_until(4.0)
    return h


def effective(h: Host) -> int:
    return h.node.router("VI_1").fsm.effective_priority


def test_the_node_asks_for_the_tracked_files_and_processes_only():
    h = host(FILE.format(weight=1) + PROCESS.format(weight=0, delay=0) +
             '[[track_file]]\nname = "unused"\nfile = "/x"\n\n', track_file=Raw('[{ name = "f1" }]'),
             track_process=Raw('[{ name = "p1" }]'))
    assert [f.name for f in h.of_type(n.WatchFiles)[0].files] == ["f1"]
    assert [p.name for p in h.of_type(n.WatchProcesses)[0].processes] == ["p1"]


@pytest.mark.parametrize(("weight", "value", "priority", "fault"), [
    (2, 10, 120, False),  # value x weight added
    (-3, 5, 85, False),
    (1, -300, None, True),  # below -253: FAULT
    (0, 0, 100, False),  # weight 0: zero is OK ...
    (0, 7, None, True),  # ... anything else FAULT
    (10, 30, 254, False),  # clamped to 1..254
])
def test_a_files_value_times_its_weight_moves_the_priority_or_means_fault(weight, value, priority, fault):
    h = host(FILE.format(weight=weight), track_file=Raw('[{ name = "f1" }]'))
    h.feed(n.FileValue("f1", value))
    if fault:
        assert h.state() is State.FAULT and "track_file:f1" in {f.label for f in h.node.router("VI_1").fsm.faults}
    else:
        assert effective(h) == priority and h.state() is not State.FAULT
    h.feed(n.FileValue("f1", 0))
    assert effective(h) == 100 and h.state() is not State.FAULT


def test_the_instances_own_weight_overrides_the_files_and_an_unreadable_file_counts_as_zero():
    h = host(FILE.format(weight=1), track_file=Raw('[{ name = "f1", weight = -5 }]'))
    h.feed(n.FileValue("f1", 4))
    assert effective(h) == 80
    h.feed(n.FileValue("f1", None))
    assert effective(h) == 100


def test_an_owners_priority_is_never_moved_but_a_fault_still_counts():
    h = Host(Lan(), "a", config(instance(priority=255, track_file=Raw('[{ name = "f1" }]')), FILE.format(weight=5)))
    h.start()
    h.feed(n.FileValue("f1", -10))
    assert effective(h) == 255 and h.state() is State.MASTER
    h.feed(n.FileValue("f1", -100))
    assert h.state() is State.FAULT


def test_a_process_quorum_lost_means_fault_at_once_without_delay():
    h = host(PROCESS.format(weight=0, delay=0), track_process=Raw('[{ name = "p1" }]'))
    h.feed(n.ProcessCount("p1", 2))
    assert h.state() is State.MASTER
    h.feed(n.ProcessCount("p1", 1))
    assert h.state() is State.FAULT
    h.feed(n.ProcessCount("p1", 3))
    assert h.state() is State.BACKUP


def test_process_delay_holds_a_change_back_and_a_bounce_inside_it_is_nothing():
    h = host(PROCESS.format(weight=-20, delay=2.0), track_process=Raw('[{ name = "p1" }]'))
    h.feed(n.ProcessCount("p1", 2))  # the scan at start counts at once
    assert effective(h) == 100
    t0, logged = h.lan.now, len(h.of_type(n.Log))
    h.feed(n.ProcessCount("p1", 0))  # a reload of haproxy: down ...
    assert h.node.next_deadline() <= t0 + 2.0
    h.lan.run_until(t0 + 1.0)
    h.feed(n.ProcessCount("p1", 2))  # ... and back within the delay: never counted
    h.lan.run_until(t0 + 5.0)
    assert effective(h) == 100 and not any(e.event == "process_status" for e in h.of_type(n.Log)[logged:])
    h.feed(n.ProcessCount("p1", 1))
    h.lan.run_until(h.lan.now + 1.99)
    assert effective(h) == 100
    h.lan.run_until(h.lan.now + 0.02)
    assert effective(h) == 80  # lost for the whole delay: the negative weight counts


def test_a_positive_process_weight_counts_while_up_and_quorum_max_bounds_it():
    tables = '[[track_process]]\nname = "p1"\nprocess = "haproxy"\nweight = 10\nquorum = 1\nquorum_max = 1\n\n'
    h = host(tables, track_process=Raw('[{ name = "p1" }]'))
    h.feed(n.ProcessCount("p1", 1))
    assert effective(h) == 110
    h.feed(n.ProcessCount("p1", 2))  # two haproxies where one belongs: not up
    assert effective(h) == 100


def tp(**kw) -> TrackProcess:
    return TrackProcess(name="p", **{"process": "haproxy", **kw})


@pytest.mark.parametrize(("track", "comm", "argv", "expected"), [
    (tp(), "haproxy", (), True),
    (tp(), "haproxy2", (), False),  # no regular expression: "haproxy" is not "haproxy2"
    (tp(process="/usr/sbin/haproxy", full_command=True), "haproxy", ("/usr/sbin/haproxy", "-f", "x"), True),
    (tp(process="/usr/sbin/haproxy", full_command=True), "haproxy", ("haproxy",), False),
    (tp(args=("-f", "a.cfg"), param_match="exact"), "x", ("haproxy", "-f", "a.cfg"), True),
    (tp(args=("-f", "a.cfg"), param_match="exact"), "x", ("haproxy", "-f", "a.cfg", "-D"), False),
    (tp(args=("-f",), param_match="partial"), "x", ("haproxy", "-f", "a.cfg"), True),
    (tp(args=("-f", "a"), param_match="initial"), "x", ("haproxy", "-f", "a.cfg"), True),
    (tp(args=("-f", "b"), param_match="initial"), "x", ("haproxy", "-f", "a.cfg"), False),
    (tp(args=(), param_match="exact"), "x", ("haproxy",), True),  # param_match alone: no arguments at all
    (tp(args=(), param_match="exact"), "x", ("haproxy", "-D"), False),
])
def test_process_matching_as_keepalived(track, comm, argv, expected):
    assert process_matches(track, comm, argv) is expected


@pytest.mark.parametrize(("tables", "ref", "message"), [
    (FILE.format(weight=1), '[{ name = "nope" }]', 'names no [[track_file]]'),
    ('[[track_file]]\nname = "f1"\nfile = "relative"\n\n', '[{ name = "f1" }]', "absolute path"),
    ('[[track_file]]\nname = "f1"\nfile = "/x"\nweight = 300\n\n', '[{ name = "f1" }]', "must be -254..254"),
    ('[[track_process]]\nname = "p1"\nprocess = "a-very-long-process-name"\n\n', None, "15 bytes"),
    ('[[track_process]]\nname = "p1"\nprocess = "x"\nquorum = 3\nquorum_max = 2\n\n', None, "below quorum"),
    ('[[track_process]]\nname = "p1"\nprocess = "x"\nparam_match = "fuzzy"\n\n', None, "must be one of"),
])
def test_bad_tracking_tables_are_refused_with_their_line(tables, ref, message):
    kw = {"track_file": Raw(ref)} if ref else {}
    with pytest.raises(ConfigError) as caught:
        parse(tables + instance(**kw), "t.toml")
    assert any(message in p.message and p.line for p in caught.value.problems), caught.value
