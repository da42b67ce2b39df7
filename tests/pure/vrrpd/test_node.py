"""The Node on a fake clock and a fake LAN: every decision the runtime used to make, without root or sockets."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from vrrpd.core import events as n
from vrrpd.core.fsm import LinkDown, NoAddress, NoInterface, State, SyncHeld, TrackedScriptDown, master_down_interval_cs
from vrrpd.core.packet import Advert, encode
from tests.pure.vrrpd.nodes import Host, Lan, Raw, config, instance, v4

MDI_100 = master_down_interval_cs(100, 100) / 100  # 3.6 s
MDI_150 = master_down_interval_cs(150, 100) / 100


def pair(prio_a=150, prio_b=100, extra_a="", extra_b="", **kw):
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=prio_a, **kw) + extra_a), "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=prio_b, **kw) + extra_b), "192.0.2.2/24")
    return lan, a, b


def routed_to(effects, kind):
    return [(r, e) for r, e in effects if isinstance(e, kind)]


# ---- start-up ----------------------------------------------------------------------------------------------


def test_sockets_are_opened_before_start_so_no_router_starts_in_fault():
    lan, a, b = pair()
    assert a.sockets == {("eth0", "ipv4"): 2}
    a.start()
    assert a.state() is State.BACKUP
    assert a.transitions() == [("VI_1", "INIT", "BACKUP")]


def test_election_takeover_at_master_down_interval_and_one_holder():
    lan, a, b = pair()
    a.start(), b.start()
    lan.run_until(MDI_150 - 0.01)
    assert (a.state(), b.state()) == (State.BACKUP, State.BACKUP)
    lan.run_until(MDI_150)
    assert (a.state(), b.state()) == (State.MASTER, State.BACKUP)
    lan.run_until(30.0)
    assert a.holds("192.0.2.100") and not b.holds("192.0.2.100")
    assert b.transitions() == [("VI_1", "INIT", "BACKUP")]


def test_start_with_the_interface_missing_is_fault_until_it_appears():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150)), index=0)
    assert a.sockets == {}
    a.start()
    assert a.state() is State.FAULT
    assert NoInterface() in a.node.router("VI_1").fsm.faults
    effects = a.create_interface(7, address="192.0.2.1/24")
    assert routed_to(effects, n.OpenSocket) == [(None, n.OpenSocket("eth0", "ipv4"))]
    assert a.sockets == {("eth0", "ipv4"): 7}
    assert a.state() is State.BACKUP
    lan.run_until(MDI_150)
    assert a.state() is State.MASTER and a.holds("192.0.2.100")


def test_start_without_an_address_is_fault_and_recovers_when_one_arrives():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150)), address=None)
    a.start()
    assert a.state() is State.FAULT and NoAddress() in a.node.router("VI_1").fsm.faults
    a.add_address("192.0.2.1/24")
    assert a.state() is State.BACKUP
    assert a.node.router("VI_1").primary == ip_address("192.0.2.1")


def test_stale_vips_left_by_a_crash_are_removed_at_start_but_an_owners_address_is_kept():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=100) + instance("VI_OWN", vrid=52, priority=255,
                                                                 vips=("192.0.2.1/24",))), "192.0.2.1/24")
    a.add_address("192.0.2.100/24")  # left by a crashed run
    a.start()
    removed = [e.addresses for e in a.of_type(n.RemoveAddresses)]
    assert removed == [(v4("192.0.2.100/24"),)]
    assert a.state("VI_OWN") is State.MASTER and a.holds("192.0.2.1")
    a.stop()
    assert a.holds("192.0.2.1"), "the owner removed its own interface address"
    assert [e.addresses for e in a.of_type(n.RemoveAddresses)] == removed


# ---- receive pipeline --------------------------------------------------------------------------------------


def test_drops_are_counted_on_the_instance_whose_vrid_they_carry_or_router_wide():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=100)))
    a.start()
    good = encode(Advert(3, 51, 120, 100, (ip_address("192.0.2.100"),)), src=ip_address("192.0.2.9"),
                  dst=ip_address("224.0.0.18"))
    src, dst = ip_address("192.0.2.9"), ip_address("224.0.0.18")
    a.node.receive("eth0", "ipv4", good, src, dst, 64, 1.0)  # TTL
    a.node.receive("eth0", "ipv4", good[:-1] + bytes([good[-1] ^ 1]), src, dst, 255, 1.0)  # checksum
    other = encode(Advert(3, 77, 120, 100, (ip_address("192.0.2.100"),)), src=src, dst=dst)
    a.node.receive("eth0", "ipv4", other, src, dst, 255, 1.0)  # VRID 77 unknown here
    a.node.receive("eth0", "ipv4", good, src, dst, 255, 1.0)
    stats = a.node.router("VI_1").stats
    assert (stats.ttl_errors, stats.checksum_errors, stats.adverts_rx) == (1, 1, 1)
    assert a.node.global_stats.vrid_errors == 1
    assert a.node.router("VI_1").fsm.master_address == src


# ---- sync groups -------------------------------------------------------------------------------------------

GROUP = '[[sync_group]]\nname = "G"\ninstances = ["VI_1", "VI_2"]\n'
SCRIPT = '[[script]]\nname = "chk"\ncommand = ["/bin/true"]\nweight = 0\n\n'


def grouped(name, prio1, prio2, address, lan, track_1=()):
    text = SCRIPT + instance("VI_1", 51, prio1, ("192.0.2.100/24",), track_script=list(track_1)) + \
        instance("VI_2", 52, prio2, ("192.0.2.101/24",)) + GROUP
    return Host(lan, name, config(text), address)


def test_a_members_fault_holds_its_siblings_in_the_same_call():
    lan = Lan()
    a = grouped("a", 150, 150, "192.0.2.1/24", lan, track_1=("chk",))
    a.feed(n.ScriptChanged("chk", True))
    a.start()
    lan.run_until(MDI_150)
    assert (a.state("VI_1"), a.state("VI_2")) == (State.MASTER, State.MASTER)
    effects = a.feed(n.ScriptChanged("chk", False))  # one call: no netlink round trip in between
    changes = [(e.name, e.new) for _, e in routed_to(effects, n.StateChanged)]
    assert changes == [("VI_1", State.FAULT), ("VI_2", State.FAULT)]
    assert SyncHeld("G") in a.node.router("VI_2").fsm.faults
    assert TrackedScriptDown("chk") in a.node.router("VI_1").fsm.faults
    effects = a.feed(n.ScriptChanged("chk", True))
    assert [(e.name, e.new) for _, e in routed_to(effects, n.StateChanged)] == [
        ("VI_1", State.BACKUP), ("VI_2", State.BACKUP)]


def test_members_go_master_together_and_yield_together():
    lan = Lan()
    a = grouped("a", 150, 150, "192.0.2.1/24", lan)
    b = grouped("b", 100, 100, "192.0.2.2/24", lan)
    a.start(), b.start()
    lan.run_until(10.0)
    assert [a.state(x) for x in ("VI_1", "VI_2")] == [State.MASTER, State.MASTER]
    assert [b.state(x) for x in ("VI_1", "VI_2")] == [State.BACKUP, State.BACKUP]
    lan.cut.add("a")  # a falls silent: b's members want MASTER and go together
    lan.run_until(10.0 + MDI_100 + 1)
    assert [b.state(x) for x in ("VI_1", "VI_2")] == [State.MASTER, State.MASTER]
    lan.cut.clear()  # a is heard again: b's members yield together
    lan.run_until(30.0)
    assert [b.state(x) for x in ("VI_1", "VI_2")] == [State.BACKUP, State.BACKUP]
    assert [a.state(x) for x in ("VI_1", "VI_2")] == [State.MASTER, State.MASTER]


def test_no_thrash_when_the_members_peers_disagree():
    """b's VI_1 peer is silent, its VI_2 peer is a live higher-priority master: b's VI_1 wants MASTER, VI_2
    does not; keepalived prefers BACKUP to thrashing, so nothing moves (the old rule flapped every MDI)."""
    lan = Lan()
    live = Host(lan, "live", config(instance("VI_2", 52, 200, ("192.0.2.101/24",))), "192.0.2.9/24")
    b = grouped("b", 100, 100, "192.0.2.2/24", lan)
    live.start(), b.start()
    lan.run_until(60.0)
    assert live.state("VI_2") is State.MASTER
    assert [b.state(x) for x in ("VI_1", "VI_2")] == [State.BACKUP, State.BACKUP]
    assert b.node.router("VI_1").fsm.wants_master
    assert b.transitions() == [("VI_1", "INIT", "BACKUP"), ("VI_2", "INIT", "BACKUP")]
    assert not live.of_type(n.AddAddresses)[1:], "the live master lost its VIP even once"


# ---- tracking ----------------------------------------------------------------------------------------------


def test_tracking_weights_move_the_priority_and_weight_zero_means_fault():
    lan = Lan()
    text = ('[[script]]\nname = "minus"\ncommand = ["/bin/true"]\nweight = -60\n\n'
            + instance(priority=150, track_script=["minus"], track_interface=Raw('[{ name = "eth1", weight = 0 }]')))
    a = Host(lan, "a", config(text))
    a.up["eth1"], a.index["eth1"] = True, 3
    a.feed(a.link_event("eth1"))
    a.start()
    r = a.node.router("VI_1")
    assert r.fsm.effective_priority == 150
    a.feed(n.ScriptChanged("minus", False))
    assert r.fsm.effective_priority == 90
    a.set_link(False, "eth1")
    assert a.state() is State.FAULT
    a.set_link(True, "eth1")
    assert a.state() is State.BACKUP
    a.set_link(False)
    assert a.state() is State.FAULT and LinkDown() in r.fsm.faults


# ---- reload ------------------------------------------------------------------------------------------------


def test_a_reload_of_a_master_goes_through_its_queue_and_never_touches_a_vip_that_stays():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150, vips=("192.0.2.100/24", "192.0.2.101/24"))))
    a.start()
    lan.run_until(MDI_150)
    rid = a.node.router("VI_1").id
    effects = a.feed(n.Reconfigure(config(instance(priority=150, vips=("192.0.2.100/24", "192.0.2.102/24")))))
    addressing = [(r, type(e).__name__, getattr(e, "addresses", None)) for r, e in effects
                  if isinstance(e, (n.AddAddresses, n.RemoveAddresses))]
    assert addressing == [(rid, "AddAddresses", (v4("192.0.2.102/24"),)),
                          (rid, "RemoveAddresses", (v4("192.0.2.101/24"),))]
    assert all(isinstance(e, n.QUEUED) for _, e in effects if isinstance(e, (n.AddAddresses, n.RemoveAddresses)))
    announced = routed_to(effects, n.Announce)
    assert len(announced) == 1 and announced[0][0] == rid and len(announced[0][1].frames) == 1
    assert routed_to(effects, n.Transmit)  # the new list is advertised at once
    assert a.holds("192.0.2.100") and a.holds("192.0.2.102") and not a.holds("192.0.2.101")
    assert a.state() is State.MASTER and a.transitions() == [("VI_1", "INIT", "BACKUP"), ("VI_1", "BACKUP", "MASTER")]


def test_a_reload_removes_an_instance_like_a_shutdown_and_adds_one_on_a_missing_interface_alone():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150)))
    a.start()
    lan.run_until(MDI_150)
    old = a.node.router("VI_1").id
    text = instance("VI_2", 52, 150, ("192.0.2.110/24",)) + instance("VI_3", 53, 150, ("192.0.2.111/24",)).replace(
        'interface = "eth0"', 'interface = "eth9"')
    effects = a.feed(n.Reconfigure(config(text)))
    mine = [e for r, e in effects if r == old]
    assert [type(e).__name__ for e in mine if not isinstance(e, n.Notify)] == [
        "Transmit", "RemoveAddresses", "StateChanged", "Retire"]
    assert mine[0].packets and Advert is not None
    assert a.state("VI_3") is State.FAULT and a.state("VI_2") is State.BACKUP


def test_a_reload_changing_a_prefix_removes_the_old_one_first():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150, vips=("2001:db8::100/64",))), "192.0.2.1/24")
    a.start()
    lan.run_until(MDI_150)
    effects = a.feed(n.Reconfigure(config(instance(priority=150, vips=("2001:db8::100/128",)))))
    kinds = [(type(e).__name__, tuple(map(str, e.addresses))) for _, e in effects
             if isinstance(e, (n.AddAddresses, n.RemoveAddresses))]
    assert kinds == [("RemoveAddresses", ("2001:db8::100/64",)), ("AddAddresses", ("2001:db8::100/128",))]
    assert a.holds("2001:db8::100")


# ---- failures never drop what follows ------------------------------------------------------------------


def test_a_failed_send_is_counted_and_the_next_advert_still_goes():
    lan, a, b = pair()
    a.start(), b.start()
    lan.run_until(MDI_150)
    r = a.node.router("VI_1")
    sent = r.stats.adverts_tx
    a.failing_sends = 1
    lan.run_until(MDI_150 + 1.0)
    assert r.stats.send_errors == 1 and r.stats.adverts_tx == sent
    lan.run_until(MDI_150 + 2.0)
    assert r.stats.adverts_tx == sent + 1


def test_the_timer_heap_keeps_exact_deadlines_for_many_routers():
    """40 routers with 40 different intervals: each takes over at exactly its own Master_Down_Interval (the
    coarse grid a far-off backup timer is checked on never delays a takeover), then advertises on time."""
    lan = Lan()
    text = "".join(instance(f"VI_{i}", i, 150, (f"192.0.2.{100 + i}/24",), interval=1.0 + i / 100)
                   for i in range(1, 41))
    a = Host(lan, "a", config(text))
    a.start()
    lan.run_until(20.0)
    first = {}
    for t, tx in a.sent:
        vrid = tx.packets[0][1][1]
        first.setdefault(vrid, t)
    assert first == {i: pytest.approx(master_down_interval_cs(150, 100 + i) / 100, abs=1e-9) for i in range(1, 41)}
    assert all(r.fsm.state is State.MASTER for r in a.node.routers.values())
    assert len(a.sent) > 40 * 9


def test_a_backup_hearing_its_master_wakes_on_the_coarse_grid_only():
    lan, a, b = pair(interval=0.1)
    a.start(), b.start()
    lan.run_until(5.0)
    wakeups = []
    real = b.node.handle_timer

    def counting(now):
        wakeups.append(now)
        return real(now)

    b.node.handle_timer = counting
    lan.run_until(15.0)
    assert b.state() is State.BACKUP
    assert len(wakeups) <= 10 / 0.05 / 2 + 1, len(wakeups)  # at most one a grid step, here every other one
    assert all(abs(t / 0.05 - round(t / 0.05)) < 1e-6 for t in wakeups)


def test_a_takeover_advertises_then_takes_the_addresses_then_announces_then_notifies():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150, notify="/bin/true")))
    a.start()
    lan.run_until(MDI_150 - 0.01)
    effects = a.node.handle_timer(MDI_150)
    kinds = [type(e).__name__ for _, e in effects if not isinstance(e, n.Status)]
    assert kinds == ["Transmit", "AddAddresses", "Announce", "StateChanged", "Notify"]
    assert [isinstance(e, n.QUEUED) for _, e in effects if not isinstance(e, n.Status)] == [
        False, True, True, False, True]  # the advert never waits for netlink; the announcement and notify do
    leaving = a.stop()
    assert [type(e).__name__ for _, e in leaving if not isinstance(e, n.Status)] == [
        "Transmit", "RemoveAddresses", "StateChanged", "Notify"]
    assert leaving[0].effect.packets[0][1][2] == 0  # the resignation: priority 0


# ---- a host's life: rolling changes, owners, equal priorities (issue 11) -------------------------------


def test_a_rolling_vip_change_keeps_one_holder_and_says_so_once_a_minute():
    lan, a, b = pair()
    a.start(), b.start()
    lan.run_until(10.0)
    a.feed(n.Reconfigure(config(instance(priority=150, vips=("192.0.2.100/24", "192.0.2.101/24")))))
    lan.run_until(80.0)  # b still runs the old list: it hears a's longer list, and keeps a as its master
    assert (a.state(), b.state()) == (State.MASTER, State.BACKUP)
    assert a.holds("192.0.2.100") and a.holds("192.0.2.101") and not b.holds("192.0.2.100")
    assert b.node.router("VI_1").stats.address_list_errors >= 60
    warnings = [e for e in b.of_type(n.Log) if e.event == "address_list_mismatch"]
    assert len(warnings) == 2 and warnings[0].fields["theirs"] == ["192.0.2.100", "192.0.2.101"]
    b.feed(n.Reconfigure(config(instance(priority=100, vips=("192.0.2.100/24", "192.0.2.101/24")))))
    before = b.node.router("VI_1").stats.address_list_errors
    lan.run_until(90.0)
    assert b.node.router("VI_1").stats.address_list_errors == before


def test_vrrpv2_keeps_rfc_3768s_drop_of_a_differing_list_and_logs_it():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150, version=2, vips=("192.0.2.100/24", "192.0.2.101/24"))),
             "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=100, version=2)), "192.0.2.2/24")
    a.start(), b.start()
    lan.run_until(20.0)
    assert b.state() is State.MASTER  # it cannot believe a master whose list it must drop
    assert b.node.router("VI_1").stats.address_list_errors > 0
    assert [e.fields["action"] for e in b.of_type(n.Log) if e.event == "address_list_mismatch"][:1] == [
        "dropped (VRRPv2, RFC 3768 7.1)"]


def test_two_owners_settle_and_the_conflict_is_logged():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=255, vips=("192.0.2.1/24",))), "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=255, vips=("192.0.2.1/24",))), "192.0.2.2/24")
    a.start(), b.start()
    lan.run_until(30.0)
    assert {a.state(), b.state()} == {State.MASTER, State.BACKUP}
    assert b.state() is State.MASTER  # the higher primary address keeps it
    assert len(a.sent) + len(b.sent) < 100, "the owners ping-ponged adverts"
    assert any(e.event == "owner_conflict" for e in a.of_type(n.Log) + b.of_type(n.Log))


def test_a_restarted_equal_priority_backup_with_the_higher_address_leaves_the_master_alone():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=100)), "192.0.2.1/24")
    a.start()
    lan.run_until(10.0)
    b = Host(lan, "b", config(instance(priority=100)), "192.0.2.2/24")  # starts later, higher address
    b.start()
    lan.run_until(60.0)
    assert (a.state(), b.state()) == (State.MASTER, State.BACKUP)
    assert a.transitions() == [("VI_1", "INIT", "BACKUP"), ("VI_1", "BACKUP", "MASTER")]


def test_preempt_delay_after_a_track_script_dip_and_recovery():
    """a (150) tracks a script with weight -60: it dips to 90, yields to b (100); when the script recovers,
    a preempts only preempt_delay after it first hears the lower master again."""
    lan = Lan()
    text = '[[script]]\nname = "chk"\ncommand = ["/bin/true"]\nweight = -60\n\n' + instance(
        priority=150, track_script=["chk"], preempt_delay=5.0)
    a = Host(lan, "a", config(text), "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=100)), "192.0.2.2/24")
    a.feed(n.ScriptChanged("chk", True))
    a.start(), b.start()
    lan.run_until(10.0)
    assert a.state() is State.MASTER
    a.feed(n.ScriptChanged("chk", False))
    lan.run_until(20.0)
    assert (a.state(), b.state()) == (State.BACKUP, State.MASTER)
    a.feed(n.ScriptChanged("chk", True))  # at 20 s: a is 150 again, b (100) is master
    lan.run_until(24.9)
    assert a.state() is State.BACKUP, "preempted before preempt_delay ran out"
    lan.run_until(30.0)
    assert a.state() is State.MASTER
    took_over = [t for t, e in a.sent if e.packets and t >= 20.0]
    assert took_over and 25.0 <= took_over[0] <= 25.0 + MDI_150


def test_a_new_mac_is_announced_at_once_by_a_master_with_frames_of_the_new_mac():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150, vips=("192.0.2.100/24", "2001:db8::100/64")
                                       [:1])))
    a.start()
    lan.run_until(MDI_150)
    effects = a.feed(n.LinkChanged("eth0", 2, True, "02:00:00:00:aa:bb"))
    [announce] = [e for _, e in effects if isinstance(e, n.Announce)]
    assert announce.frames[0][6:12] == bytes.fromhex("020000 00aabb".replace(" ", ""))  # the Ethernet source
    assert announce.repeat == 5


def test_an_advert_from_our_own_address_that_we_did_not_send_is_a_duplicate_address():
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150)), "192.0.2.1/24")
    a.start()
    lan.run_until(MDI_150)
    r = a.node.router("VI_1")
    ours = r.cache.adverts(150)[0][1]
    src, dst = ip_address("192.0.2.1"), ip_address("224.0.0.18")
    assert a.node.receive("eth0", "ipv4", ours, src, dst, 255, 5.0) == []  # looped back: ours, ignored
    clone = encode(Advert(3, 51, 100, 100, (ip_address("192.0.2.100"),)), src=src, dst=dst)
    effects = a.node.receive("eth0", "ipv4", clone, src, dst, 255, 5.1)
    assert r.stats.duplicate_address == 1
    assert [e.effect.event for e in effects if isinstance(e.effect, n.Log)] == ["duplicate_address"]


def test_a_partition_healing_one_side_first_still_re_points_the_hosts():
    """The chaos run's finding: while VRRP is partitioned b is master of VI_A too and the hosts follow its
    gratuitous ARPs. The partition heals on b's side first: b hears a, yields VI_A, and its last advert is
    lost (a cannot hear b yet). a must still announce VI_A again once it hears b, or hosts keep sending to b
    until their neighbour entries expire: b says its last word twice more, and a yielding VI_B to b (a split
    brain just healed) re-announces the VIPs a still holds."""
    lan = Lan()
    node_a = instance("VI_A", 51, 150, ("192.0.2.100/24",)) + instance("VI_B", 52, 100, ("192.0.2.101/24",))
    node_b = instance("VI_A", 51, 100, ("192.0.2.100/24",)) + instance("VI_B", 52, 150, ("192.0.2.101/24",))
    a = Host(lan, "a", config(node_a), "192.0.2.1/24")
    b = Host(lan, "b", config(node_b), "192.0.2.2/24")
    a.start(), b.start()
    lan.run_until(10.0)
    lan.blocked |= {("a", "b"), ("b", "a")}
    lan.run_until(20.0)
    assert b.state("VI_A") is State.MASTER and a.state("VI_A") is State.MASTER  # a split brain
    lan.blocked.discard(("a", "b"))  # b hears a again; a does not hear b yet
    lan.run_until(20.5)
    assert b.state("VI_A") is State.BACKUP
    before = len(a.of_type(n.Announce))
    lan.blocked.clear()  # a's side heals 0.5 s later
    lan.run_until(21.6)
    frames = [f for e in a.of_type(n.Announce)[before:] for f in e.frames]
    assert garp_target("192.0.2.100", "02:00:00:00:00:02") in frames, "a never announced VIP-A again"


def garp_target(vip: str, mac: str) -> bytes:
    from vrrpd.core.frames import garp_frame
    return garp_frame(ip_address(vip), mac)
