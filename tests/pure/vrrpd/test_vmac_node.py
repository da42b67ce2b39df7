"""use_vmac decided by the Node: the macvlan asked for, the VIPs, adverts and announcements on it, its
faults, and its end; on the fake kernel of nodes.py."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from tests.pure.vrrpd.nodes import Host, Lan, config, instance
from vrrpd.config import ConfigError, parse
from vrrpd.core import events as n
from vrrpd.core.frames import garp_frame
from vrrpd.core.fsm import State


def vmac_host(lan: Lan | None = None, priority: int = 200, **kw) -> Host:
    lan = lan or Lan()
    h = Host(lan, "a", config(instance(priority=priority, use_vmac=True, **kw)), "192.0.2.1/24")
    h.start()
    lan.run_until(4.0)
    return h


def test_the_macvlan_is_asked_for_once_and_holds_the_vips_and_sends_the_adverts():
    h = vmac_host()
    assert h.of_type(n.SetUpVmac) == [n.SetUpVmac("vrrp.51", "eth0", "00:00:5e:00:01:33", create=True)]
    assert h.state() is State.MASTER
    assert h.holds("192.0.2.100/24", "vrrp.51") and not h.holds("192.0.2.100/24", "eth0")
    assert {tx.ifname for _, tx in h.sent} == {"vrrp.51"}  # from the virtual MAC
    assert n.OpenSocket("vrrp.51", "ipv4", send_only=True) in h.of_type(n.OpenSocket)
    assert n.OpenSocket("eth0", "ipv4") in h.of_type(n.OpenSocket)  # adverts are heard on the base
    [announce] = h.of_type(n.Announce)[:1]
    assert announce.ifname == "vrrp.51"
    assert announce.frames[0] == garp_frame(ip_interface("192.0.2.100/24").ip, "00:00:5e:00:01:33")


def test_vmac_xmit_base_sends_from_the_base_interface():
    h = vmac_host(vmac_xmit_base=True)
    assert h.state() is State.MASTER and {tx.ifname for _, tx in h.sent} == {"eth0"}
    assert h.holds("192.0.2.100/24", "vrrp.51")


def test_until_the_macvlan_is_there_the_instance_is_fault_and_it_is_made_again_with_the_base():
    h = vmac_host()
    h.delete_interface("vrrp.51")  # someone deleted it: the VIPs went with it
    assert [s for s in h.of_type(n.StateChanged) if s.new is State.FAULT][-1].reason == "no_vmac"
    assert len(h.of_type(n.SetUpVmac)) == 2  # asked for again (the fake kernel makes it at once)
    h.lan.run_until(12.0)
    assert h.state() is State.MASTER and h.holds("192.0.2.100/24", "vrrp.51")


def test_an_interface_of_that_name_with_another_mac_is_not_ours():
    lan = Lan()
    h = Host(lan, "a", config(instance(priority=200, use_vmac=True)), "192.0.2.1/24")
    h.index["vrrp.51"], h.up["vrrp.51"] = 7, True
    h.addresses["vrrp.51"] = {}
    h.feed(h.link_event("vrrp.51"))  # 02:00:00:00:00:07, not the virtual MAC
    h.start()
    lan.run_until(10.0)
    assert h.state() is State.FAULT and h.of_type(n.SetUpVmac) == []
    assert any(log.event == "vmac_name_taken" for log in h.of_type(n.Log))


def test_an_existing_macvlan_of_the_right_mac_is_adopted_and_left_behind_at_stop():
    lan = Lan()
    h = Host(lan, "a", config(instance(priority=200, use_vmac="vip51")), "192.0.2.1/24")
    h.index["vip51"], h.up["vip51"], h.macs["vip51"] = 7, True, "00:00:5e:00:01:33"
    h.addresses["vip51"] = {}
    h.feed(h.link_event("vip51"))
    h.start()
    lan.run_until(5.0)
    assert h.of_type(n.SetUpVmac) == [n.SetUpVmac("vip51", "eth0", "00:00:5e:00:01:33", create=False)]
    h.stop()
    assert h.of_type(n.TearDownVmac) == [n.TearDownVmac("vip51", "eth0", delete=False)]


def test_the_macvlan_made_goes_with_the_instance_after_its_addresses():
    h = vmac_host()
    h.stop()
    queued = [type(e.effect).__name__ for e in h.effects if isinstance(e.effect, n.QUEUED)]
    assert queued.index("TearDownVmac") > len(queued) - 1 - queued[::-1].index("RemoveAddresses")
    assert h.of_type(n.TearDownVmac) == [n.TearDownVmac("vrrp.51", "eth0", delete=True)]
    assert "vrrp.51" not in h.index


def test_ipv6_uses_its_own_virtual_mac_and_the_base_link_local_on_the_macvlan():
    lan = Lan()
    h = Host(lan, "a", config(instance(priority=200, use_vmac=True, vips=("2001:db8::100/64",))), "2001:db8::1/64")
    h.start()
    lan.run_until(5.0)
    assert h.of_type(n.SetUpVmac)[0] == n.SetUpVmac("vrrp6.51", "eth0", "00:00:5e:00:02:33", create=True)
    assert h.holds("fe80::1/64", "vrrp6.51")  # the adverts' source, on the interface they leave from
    assert h.state() is State.MASTER and h.sent[-1][1].ifname == "vrrp6.51"


@pytest.mark.parametrize(("text", "message"), [
    (instance(use_vmac="eth0"), "the instance's own interface"),
    (instance(use_vmac=3), "must be true, false or the macvlan's name"),
    (instance(vmac_xmit_base=True), "only with use_vmac"),
    (instance(use_vmac="bad name"), "not a Linux interface name"),
    (instance(use_vmac=True) + instance(name="VI_2", vrid=52, vips=("192.0.2.2/24",), use_vmac="vrrp.51"),
     "already the macvlan of instance"),
])
def test_bad_vmac_settings_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text, "v.toml")
