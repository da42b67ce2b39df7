"""The RFC 5798 state machine on a fake clock: exact deadlines, elections, preemption, faults."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from vrrpd.core.fsm import (
    AddAddresses,
    AdvertReceived,
    Announce,
    FaultChanged,
    LinkDown,
    TrackedScriptDown,
    REANNOUNCE_DELAY_S,
    PriorityChanged,
    RemoveAddresses,
    RouterParams,
    SendAdvert,
    Shutdown,
    Startup,
    State,
    StateChanged,
    SyncTo,
    VirtualRouter,
    master_down_interval_cs,
    skew_time_cs,
)
from vrrpd.core.packet import Advert

A = IPv4Address("192.0.2.1")
B = IPv4Address("192.0.2.2")
VIP = (IPv4Address("192.0.2.100"),)


def router(priority=100, interval_cs=100, addr=A, **kw) -> VirtualRouter:
    return VirtualRouter(RouterParams(vrid=51, priority=priority, advert_interval_cs=interval_cs, primary_address=addr, **kw))


def advert(priority, interval_cs=100, version=3) -> Advert:
    return Advert(version=version, vrid=51, priority=priority, adver_int_cs=interval_cs, addresses=VIP)


def kinds(effects):
    return [type(e) for e in effects]


def test_rfc_timer_formulas_in_centiseconds():
    # RFC 5798 6.1 with Master_Adver_Interval = 100 cs.
    assert skew_time_cs(100, 100) == 60  # (256-100)*100/256 = 60.9 -> 60
    assert master_down_interval_cs(100, 100) == 360
    assert skew_time_cs(254, 100) == 0
    assert master_down_interval_cs(150, 10) == 34  # 30 + (106*10)/256 = 4.14
    # RFC 3768: v2 skew does not scale with the interval.
    assert skew_time_cs(100, 300, version=2) == 60
    assert master_down_interval_cs(100, 300, version=2) == 960


def test_backup_takes_over_at_exactly_master_down_interval():
    r = router(priority=100)
    assert r.handle(Startup(), now=10.0) == [StateChanged(State.INIT, State.BACKUP, "startup")]
    assert r.next_deadline() == pytest.approx(13.6)
    assert r.handle_timer(13.59) == []
    effects = r.handle_timer(13.6)
    assert kinds(effects) == [SendAdvert, AddAddresses, Announce, StateChanged]
    assert effects[0] == SendAdvert(100) and effects[2] == Announce(5)
    assert r.state is State.MASTER
    assert r.next_deadline() == pytest.approx(14.6)  # Adver_Timer = Advertisement_Interval


def test_master_advertises_every_interval():
    r = router(priority=255)
    r.handle(Startup(), 0.0)
    assert r.state is State.MASTER
    sent = []
    now = 0.0
    for _ in range(5):
        now = r.next_deadline()
        sent.append((round(now, 2), r.handle_timer(now)))
    assert [t for t, _ in sent] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(e == [SendAdvert(255)] for _, e in sent)


def test_owner_becomes_master_at_once():
    r = router(priority=255)
    effects = r.handle(Startup(), 5.0)
    assert r.state is State.MASTER
    assert effects[-1] == StateChanged(State.INIT, State.MASTER, "address_owner")


def test_advert_from_higher_priority_resets_master_down_timer_and_learns_interval():
    r = router(priority=100)
    r.handle(Startup(), 0.0)
    r.handle(AdvertReceived(advert(200, interval_cs=50), B), 1.0)
    # Master_Adver_Interval learned from the advert (v3): 3*50 + (156*50)/256 = 150 + 30 = 180 cs.
    assert r.master_adver_interval_cs == 50
    assert r.next_deadline() == pytest.approx(2.8)
    assert r.master_address == B


def test_priority_zero_makes_backup_take_over_after_skew_time():
    r = router(priority=100)
    r.handle(Startup(), 0.0)
    r.handle(AdvertReceived(advert(200), B), 1.0)
    r.handle(AdvertReceived(advert(0), B), 2.0)
    assert r.next_deadline() == pytest.approx(2.0 + 0.60)  # Skew_Time = 60 cs
    assert r.handle_timer(2.6)[-1] == StateChanged(State.BACKUP, State.MASTER, "master_down")


def test_master_re_advertises_at_once_on_priority_zero():
    r = router(priority=150)
    r.handle(Startup(), 0.0)
    r.handle_timer(r.next_deadline())
    assert r.state is State.MASTER
    assert r.handle(AdvertReceived(advert(0), B), 4.2) == [SendAdvert(150)]
    assert r.next_deadline() == pytest.approx(5.2)


def test_master_yields_to_higher_priority_and_releases_addresses():
    r = router(priority=100)
    r.handle(Startup(), 0.0)
    r.handle_timer(r.next_deadline())
    effects = r.handle(AdvertReceived(advert(200), B), 5.0)
    assert kinds(effects) == [SendAdvert, RemoveAddresses, StateChanged]
    assert r.state is State.BACKUP
    assert r.next_deadline() == pytest.approx(6.0)  # the last advert, said again (see below)
    r.handle_timer(6.0), r.handle_timer(7.0)
    assert r.next_deadline() == pytest.approx(5.0 + 3.60)


def test_master_re_advertises_and_re_announces_on_lower_priority_advert():
    # RFC 9568 6.4.3 and keepalived issue 166: the lower node held the VIP while we were cut off.
    r = router(priority=200, garp_repeat=3)
    r.handle(Startup(), 0.0)
    r.handle_timer(r.next_deadline())
    assert r.handle(AdvertReceived(advert(100), B), 7.0) == [SendAdvert(200)]
    # a backlog of such adverts (a daemon resuming from a freeze) makes one burst of announcements, not one
    # per advert, and it goes out shortly after the first, after whatever the other node announced
    # (and the immediate answer is rate-limited to one per advert interval: no ping-pong at link speed)
    assert r.handle(AdvertReceived(advert(100), B), 7.001) == []
    assert r.next_deadline() == pytest.approx(7.0 + REANNOUNCE_DELAY_S)
    assert r.handle_timer(7.0 + REANNOUNCE_DELAY_S) == [Announce(3)]
    assert r.handle_timer(7.5) == []
    assert r.state is State.MASTER


def test_a_master_that_yields_sends_one_last_advert_so_the_winner_re_announces():
    # A healed split brain: the winner's advert reaches us first. Our last advert (at our priority) makes
    # the winner re-announce, so hosts stop sending to us; without it they would until their ARP expires.
    loser, winner = router(priority=100, addr=A), router(priority=200, addr=B, garp_repeat=2)
    for r in (loser, winner):
        r.handle(Startup(), 0.0)
        r.handle_timer(r.next_deadline())
    effects = loser.handle(AdvertReceived(advert(200), B), 9.0)
    assert kinds(effects) == [SendAdvert, RemoveAddresses, StateChanged] and effects[0] == SendAdvert(100)
    assert winner.handle(AdvertReceived(advert(100), A), 9.001) == [SendAdvert(200)]
    assert winner.handle_timer(9.001 + REANNOUNCE_DELAY_S) == [Announce(2)]
    # ... and says it twice more, an interval apart, in case the winner could not hear it yet (a partition
    # heals one side first): then only the Master_Down_Timer is left.
    assert loser.next_deadline() == pytest.approx(10.0)
    assert loser.handle_timer(10.0) == [SendAdvert(100)]
    assert loser.handle_timer(11.0) == [SendAdvert(100)]
    assert loser.next_deadline() == pytest.approx(9.0 + master_down_interval_cs(100, 100) / 100)
    assert loser.state is State.BACKUP


def test_equal_priority_higher_address_wins_both_ways():
    low, high = router(priority=100, addr=A), router(priority=100, addr=B)
    for r in (low, high):
        r.handle(Startup(), 0.0)
        r.handle_timer(r.next_deadline())
    assert low.state is high.state is State.MASTER
    high.handle(AdvertReceived(advert(100), A), 5.0)
    low.handle(AdvertReceived(advert(100), B), 5.0)
    assert (low.state, high.state) == (State.BACKUP, State.MASTER)


def test_backup_with_higher_priority_preempts_lower_master():
    r = router(priority=200)
    r.handle(Startup(), 0.0)
    for t in (1.0, 2.0, 3.0):
        r.handle(AdvertReceived(advert(100), B), t)
    # the lower master's adverts do not reset the timer: takeover at Master_Down_Interval after start
    assert r.next_deadline() == pytest.approx(master_down_interval_cs(200, 100) / 100)


def test_preempt_false_never_takes_over_from_live_lower_master():
    r = router(priority=200, preempt=False)
    r.handle(Startup(), 0.0)
    for t in range(1, 30):
        r.handle(AdvertReceived(advert(100), B), float(t))
        assert r.handle_timer(float(t) + 0.5) == []
    assert r.state is State.BACKUP


def test_preempt_delay_counts_from_the_first_lower_priority_master_heard():
    """keepalived's semantics: the delay starts when a lower-priority master is first heard in BACKUP (here
    at 3 s, long after start-up), not at start-up; until it ends the lower master is left alone."""
    r = router(priority=200, preempt_delay_cs=1000)
    r.handle(Startup(), 0.0)
    r.handle(AdvertReceived(advert(250), B), 1.0)  # a higher master first: no window
    for t in range(3, 13):
        r.handle(AdvertReceived(advert(100), B), float(t))
        assert r.handle_timer(float(t) + 0.5) == []
    # from 13 s on (3 + 10), the lower master's adverts no longer reset the timer
    r.handle(AdvertReceived(advert(100), B), 13.0)
    deadline = r.next_deadline()
    assert deadline == pytest.approx(12.0 + master_down_interval_cs(200, 100) / 100)
    assert r.handle_timer(deadline)[-1].new is State.MASTER


def test_preempt_delay_window_closes_on_a_higher_master_and_restarts_after():
    r = router(priority=200, preempt_delay_cs=1000)
    r.handle(Startup(), 0.0)
    r.handle(AdvertReceived(advert(100), B), 1.0)  # window 1..11
    r.handle(AdvertReceived(advert(220), B), 5.0)  # a higher master: the window is forgotten
    r.handle(AdvertReceived(advert(100), B), 9.0)  # a new window 9..19
    for t in range(10, 19):
        r.handle(AdvertReceived(advert(100), B), float(t))
    assert r.state is State.BACKUP
    assert r.next_deadline() == pytest.approx(18.0 + master_down_interval_cs(200, 100) / 100)


def test_an_equal_priority_backup_leaves_a_live_master_alone_whatever_its_address():
    # RFC 5798 6.4.2: accepted when >=; B (the higher address) restarted and must not take over from A.
    r = router(priority=100, addr=B)
    r.handle(Startup(), 0.0)
    for t in range(1, 30):
        r.handle(AdvertReceived(advert(100), A), float(t))
        assert r.handle_timer(float(t) + 0.5) == []
    assert r.state is State.BACKUP and r.master_address == A


def test_two_address_owners_settle_the_lower_address_yields():
    low, high = router(priority=255, addr=A), router(priority=255, addr=B)
    for r in (low, high):
        r.handle(Startup(), 0.0)
    assert low.state is high.state is State.MASTER
    assert high.handle(AdvertReceived(advert(255), A), 1.0) == [SendAdvert(255)]
    assert kinds(low.handle(AdvertReceived(advert(255), B), 1.0)) == [SendAdvert, RemoveAddresses, StateChanged]
    assert (low.state, high.state) == (State.BACKUP, State.MASTER)
    for t in range(2, 20):  # and they stay that way
        assert low.handle(AdvertReceived(advert(255), B), float(t)) == []
    assert low.state is State.BACKUP


def test_fault_from_master_sends_priority_zero_and_recovers_to_backup():
    r = router(priority=150)
    r.handle(Startup(), 0.0)
    r.handle_timer(r.next_deadline())
    effects = r.handle(FaultChanged(True, LinkDown()), 9.0)
    assert effects == [SendAdvert(0), RemoveAddresses(), StateChanged(State.MASTER, State.FAULT, "link_down")]
    assert r.next_deadline() is None
    assert r.handle(AdvertReceived(advert(10), B), 9.5) == []
    effects = r.handle(FaultChanged(False, LinkDown()), 12.0)
    assert effects == [StateChanged(State.FAULT, State.BACKUP, "link_down_recovered")]
    assert r.next_deadline() == pytest.approx(12.0 + master_down_interval_cs(150, 100) / 100)


def test_fault_needs_every_reason_cleared():
    r = router()
    r.handle(Startup(), 0.0)
    r.handle(FaultChanged(True, LinkDown()), 1.0)
    r.handle(FaultChanged(True, TrackedScriptDown("chk")), 1.0)
    assert r.handle(FaultChanged(False, LinkDown()), 2.0) == []
    assert r.state is State.FAULT
    r.handle(FaultChanged(False, TrackedScriptDown("chk")), 3.0)
    assert r.state is State.BACKUP


def test_fault_before_startup_starts_in_fault():
    r = router()
    r.handle(FaultChanged(True, LinkDown()), 0.0)
    assert r.handle(Startup(), 0.0) == [StateChanged(State.INIT, State.FAULT, "link_down")]


def test_shutdown_as_master_resigns_with_priority_zero():
    r = router(priority=150)
    r.handle(Startup(), 0.0)
    r.handle_timer(r.next_deadline())
    assert r.handle(Shutdown(), 3.0) == [
        SendAdvert(0),
        RemoveAddresses(),
        StateChanged(State.MASTER, State.STOP, "shutdown"),
    ]
    assert r.handle(Startup(), 4.0) == [] and r.next_deadline() is None


def test_lowered_priority_is_advertised_at_once():
    r = router(priority=150)
    r.handle(Startup(), 0.0)
    r.handle_timer(r.next_deadline())
    assert r.handle(PriorityChanged(90), 5.0) == [SendAdvert(90)]
    assert r.handle(PriorityChanged(90), 5.1) == []


def test_garp_refresh_while_master():
    r = router(priority=255, garp_refresh_cs=250)
    r.handle(Startup(), 0.0)
    announced = []
    now = 0.0
    while now < 10.0:
        now = r.next_deadline()
        if Announce(1) in r.handle_timer(now):
            announced.append(round(now, 2))
    assert announced == [2.5, 5.0, 7.5, 10.0]


def test_sync_group_follow_moves_state():
    r = router(priority=100)
    r.handle(Startup(), 0.0)
    assert kinds(r.handle(SyncTo(State.MASTER, "sync_group"), 1.0))[-1] is StateChanged
    assert r.state is State.MASTER
    assert kinds(r.handle(SyncTo(State.FAULT, "sync_group"), 2.0)) == [SendAdvert, RemoveAddresses, StateChanged]


class FakeLan:
    """Routers joined by a perfect LAN: every advert one sends reaches all others at once."""

    def __init__(self, *routers: VirtualRouter):
        self.routers = list(routers)
        self.now = 0.0
        self.links_up = {id(r): True for r in routers}
        self.last_sent: dict[int, float] = {}

    def deliver(self, sender: VirtualRouter, effects):
        for e in effects:
            if isinstance(e, SendAdvert) and self.links_up[id(sender)]:
                self.last_sent[id(sender)] = self.now
                for other in self.routers:
                    if other is not sender and self.links_up[id(other)]:
                        self.deliver(other, other.handle(AdvertReceived(advert(e.priority), sender.params.primary_address), self.now))

    def run_until(self, end: float):
        while True:
            deadlines = [(r.next_deadline(), i) for i, r in enumerate(self.routers) if r.next_deadline() is not None]
            if not deadlines or min(deadlines)[0] > end:
                self.now = end
                return
            self.now, i = min(deadlines)
            self.deliver(self.routers[i], self.routers[i].handle_timer(self.now))


def test_two_routers_elect_fail_over_and_fail_back():
    a, b = router(priority=150, addr=A), router(priority=100, addr=B)
    lan = FakeLan(a, b)
    for r in (a, b):
        lan.deliver(r, r.handle(Startup(), 0.0))
    lan.run_until(10.0)
    assert (a.state, b.state) == (State.MASTER, State.BACKUP)
    # A's link goes silent: B takes over within Master_Down_Interval of A's last advert.
    lan.links_up[id(a)] = False
    takeover = lan.last_sent[id(a)] + master_down_interval_cs(100, 100) / 100
    lan.run_until(takeover - 0.001)
    assert b.state is State.BACKUP
    lan.run_until(takeover)
    assert b.state is State.MASTER
    # A comes back (still MASTER on its side): B's lower advert makes A re-assert, B yields.
    lan.links_up[id(a)] = True
    lan.run_until(20.0)
    assert (a.state, b.state) == (State.MASTER, State.BACKUP)
