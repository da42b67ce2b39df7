"""The notify FIFO's lines, decided by the Node: keepalived's format, after the commands, in transition order."""

from __future__ import annotations

from tests.pure.vrrpd.nodes import Host, Lan, config, instance
from vrrpd.core import events as n
from vrrpd.core.notify import fifo_line

FIFO = '[global]\nnotify_fifo = "/run/vrrpd.fifo"\n\n'
GROUP = '[[sync_group]]\nname = "G1"\ninstances = ["VI_1", "VI_2"]\n'


def lines(host: Host) -> list[str]:
    return [e.line for e in host.of_type(n.FifoLine)]


def test_keepalived_format():
    assert fifo_line("INSTANCE", "VI_1", "MASTER", 150) == 'INSTANCE "VI_1" MASTER 150\n'
    assert fifo_line("GROUP", "G1", "BACKUP", 0) == 'GROUP "G1" BACKUP 0\n'


def test_every_transition_is_a_line_after_its_notify_commands():
    lan = Lan()
    host = Host(lan, "a", config(instance(priority=120, notify="/bin/true"), FIFO))
    host.start()
    lan.run_until(5.0)
    host.set_link(False)
    host.set_link(True)
    host.stop()
    assert lines(host) == ['INSTANCE "VI_1" BACKUP 120\n', 'INSTANCE "VI_1" MASTER 120\n',
                           'INSTANCE "VI_1" FAULT 120\n', 'INSTANCE "VI_1" BACKUP 120\n',
                           'INSTANCE "VI_1" STOP 120\n']
    queued = [type(e.effect).__name__ for e in host.effects if isinstance(e.effect, (n.Notify, n.FifoLine))]
    assert queued == ["Notify", "FifoLine"] * 5  # keepalived starts the commands, then writes the line


def test_no_lines_without_notify_fifo():
    host = Host(Lan(), "a", config(instance()))
    host.start()
    assert lines(host) == []


def test_a_sync_group_line_when_the_group_as_a_whole_changes():
    lan = Lan()
    text = instance(name="VI_1", vrid=51) + instance(name="VI_2", vrid=52, vips=("192.0.2.101/24",)) + GROUP
    host = Host(lan, "a", config(text, FIFO))
    host.start()
    lan.run_until(5.0)
    host.stop()
    got = lines(host)
    groups = [line for line in got if line.startswith("GROUP")]
    assert groups == ['GROUP "G1" BACKUP 0\n', 'GROUP "G1" MASTER 0\n', 'GROUP "G1" STOP 0\n']
    # the group's line follows its members' lines
    assert got.index('GROUP "G1" MASTER 0\n') > got.index('INSTANCE "VI_2" MASTER 100\n')


def test_a_master_hearing_a_lower_priority_master_writes_keepalived_event_line():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=200), FIFO), "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=100)), "192.0.2.2/24")
    a.start()
    b.start()
    lan.cut.add("a")
    lan.run_until(5.0)
    lan.cut.clear()
    lan.run_until(6.0)
    assert 'INSTANCE "VI_1" MASTER_RX_LOWER_PRI 200\n' in lines(a)
