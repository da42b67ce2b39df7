"""The config layer: SPEC section 3's file parses to the right values; every bad file gives FILE:LINE: key: message."""

from __future__ import annotations

import os
import socket
import textwrap
from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonkit.net import HostPort
from vrrpd.config import ConfigError, Problem, Script, TrackInterface, load, parse
from daemonkit.tomlwrite import toml_value
from vrrpd import config as config_module

REPO = Path(__file__).resolve().parents[3]
KNOWN_INSTANCE_KEYS = ", ".join(config_module._INSTANCE_KEYS)

SPEC_EXAMPLE = """\
[global]
router_id = "node-a"                      # default: host name
control_socket = "/run/vrrpd/vrrpd.sock"  # default shown
log_format = "json"                       # "json" | "console"; default: console on a tty, else json
log_level = "info"

[[script]]                  # a health check whose result changes priority (keepalived vrrp_script)
name = "chk_cs"
command = ["/usr/bin/curl", "-fsS", "-m", "1", "http://127.0.0.1:9100/healthz"]
interval = 1.0              # seconds
timeout = 1.0
rise = 2                    # consecutive successes to count as up
fall = 2                    # consecutive failures to count as down
weight = -60                # <0: added when down; >0: added when up; 0: down means FAULT

[[instance]]
name = "VI_A"               # unique, required
interface = "eth0"          # required
vrid = 51                   # 1..255, required
priority = 150              # 1..255; 255 = address owner; default 100
version = 3                 # 2 | 3; default 3
advert_interval = 1.0       # seconds; v3: 0.01..40.95 in 0.01 steps; v2: 1..255 whole seconds
virtual_ipaddress = ["192.0.2.100/24"]   # required; all IPv4 or all IPv6 in one instance
preempt = true              # default true
preempt_delay = 0.0         # seconds, 0..1000
unicast_src = "192.0.2.1"   # optional; with unicast_peers, adverts go unicast to each peer
unicast_peers = []          # empty: multicast 224.0.0.18 / ff02::12
garp_repeat = 5             # gratuitous ARP / NA messages sent on becoming master
garp_refresh = 0.0          # seconds; >0 re-announces while master
track_interface = [{ name = "eth1", weight = 0 }]   # weight 0: link down means FAULT
track_script = ["chk_cs"]
notify = "/usr/local/bin/vrrp-notify"   # run as: notify INSTANCE <name> <MASTER|BACKUP|FAULT|STOP> <priority>
notify_master = ""          # optional per-state commands
notify_backup = ""
notify_fault = ""
notify_stop = ""

[[instance]]
name = "VI_B"
interface = "eth0"
vrid = 52
virtual_ipaddress = ["192.0.2.101/24"]

[[sync_group]]              # instances that change state together
name = "G1"
instances = ["VI_A", "VI_B"]
"""

MINIMAL = """\
[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_ipaddress = ["192.0.2.100/24"]
"""


def problems(text: str) -> list[str]:
    """Every problem `parse` reports for `text` (which must be invalid), as printed by `vrrpd check`."""
    with pytest.raises(ConfigError) as info:
        parse(textwrap.dedent(text), "t.toml")
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def instance(**changes) -> str:
    """MINIMAL with keys replaced or added (values as TOML text); a value of None drops the key."""
    lines = {line.split(" = ")[0]: line for line in MINIMAL.splitlines()[1:]}
    for key, value in changes.items():
        if value is None:
            lines.pop(key)
        else:
            lines[key] = f"{key} = {value}"
    return "[[instance]]\n" + "\n".join(lines.values()) + "\n"


# ---- valid files ----------------------------------------------------------------------------------------

def test_spec_example_parses_to_the_expected_values():
    config = parse(SPEC_EXAMPLE, "spec.toml")
    assert config.path == "spec.toml"
    g = config.global_
    assert (g.router_id, g.control_socket, g.log_format, g.log_level, g.metrics_listen) == (
        "node-a", "/run/vrrpd/vrrpd.sock", "json", "info", None)
    assert config.scripts == (Script("chk_cs", ("/usr/bin/curl", "-fsS", "-m", "1", "http://127.0.0.1:9100/healthz"),
                                     1.0, 1.0, 2, 2, -60),)
    a = config.instance("VI_A")
    assert (a.name, a.interface, a.vrid, a.priority, a.version) == ("VI_A", "eth0", 51, 150, 3)
    assert (a.advert_interval, a.advert_interval_cs, a.preempt, a.preempt_delay, a.preempt_delay_cs) == (
        1.0, 100, True, 0.0, 0)
    assert a.virtual_ipaddress == (ip_interface("192.0.2.100/24"),)
    assert a.unicast_src == ip_address("192.0.2.1") and a.unicast_peers == ()
    assert (a.garp_repeat, a.garp_refresh) == (5, 0.0)
    assert a.track_interface == (TrackInterface("eth1", 0),)
    assert a.track_script == ("chk_cs",)
    assert a.notify == ("/usr/local/bin/vrrp-notify",)
    assert (a.notify_master, a.notify_backup, a.notify_fault, a.notify_stop) == (None, None, None, None)
    assert (a.family, a.key) == ("ipv4", ("eth0", 51, "ipv4"))
    assert config.sync_groups[0].name == "G1" and config.sync_groups[0].instances == ("VI_A", "VI_B")
    assert config.script("chk_cs").weight == -60
    with pytest.raises(KeyError):
        config.script("nope")
    with pytest.raises(KeyError):
        config.instance("nope")


def test_defaults_of_a_minimal_file():
    config = parse(MINIMAL)
    g = config.global_
    assert (g.router_id, g.control_socket, g.log_format, g.log_level, g.metrics_listen) == (
        socket.gethostname(), "/run/vrrpd/vrrpd.sock", None, "info", None)
    inst = config.instances[0]
    assert (inst.priority, inst.version, inst.advert_interval, inst.preempt, inst.preempt_delay) == (
        100, 3, 1.0, True, 0.0)
    assert (inst.unicast_src, inst.unicast_peers, inst.garp_repeat, inst.garp_refresh) == (None, (), 5, 0.0)
    assert (inst.track_interface, inst.track_script, inst.notify) == ((), (), None)
    assert config.scripts == () and config.sync_groups == ()


def test_ipv6_unicast_v2_fractions_and_script_defaults():
    text = (
        '[[script]]\nname = "chk"\ncommand = ["/bin/true"]\ninterval = 2\n'
        + instance(vrid=7, virtual_ipaddress='["2001:db8::10/64", "2001:db8::11"]', advert_interval=0.05,
                   unicast_peers='["2001:db8::2", "fe80::2"]', track_script='["chk"]', preempt_delay=2.5)
        + instance(name='"VI_2"', version=2, advert_interval=3, vrid=7, virtual_ipaddress='["192.0.2.7"]')
        + '[global]\nmetrics_listen = "[::1]:9101"\n'
    )
    config = parse(text)
    v6, v2 = config.instances
    assert v6.family == "ipv6" and v6.key == ("eth0", 7, "ipv6")  # same VRID and link as v2: another family
    assert v6.virtual_ipaddress == (ip_interface("2001:db8::10/64"), ip_interface("2001:db8::11/128"))
    assert v6.advert_interval_cs == 5 and v6.preempt_delay_cs == 250
    assert v6.unicast_peers == (ip_address("2001:db8::2"), ip_address("fe80::2"))
    assert v2.version == 2 and v2.advert_interval_cs == 300 and v2.virtual_ipaddress == (ip_interface("192.0.2.7/32"),)
    assert config.script("chk") == Script("chk", ("/bin/true",), 2.0, 2.0, 1, 1, 0)  # timeout defaults to interval
    assert config.global_.metrics_listen == HostPort("::1", 9101)


@pytest.mark.parametrize("name", ["node-a.toml", "node-b.toml"])
def test_dual_master_samples_parse(name):
    config = load(str(REPO / "conf" / name))
    me, peer = ("VI_A", "VI_B") if name == "node-a.toml" else ("VI_B", "VI_A")
    assert config.instance(me).priority == 150 and config.instance(peer).priority == 100
    assert {i.name: i.vrid for i in config.instances} == {"VI_A": 51, "VI_B": 52}
    assert [str(v) for v in config.instance("VI_A").virtual_ipaddress] == ["192.0.2.100/24"]
    assert [str(v) for v in config.instance("VI_B").virtual_ipaddress] == ["192.0.2.101/24"]
    script = config.script("chk_csserver")
    assert "http://127.0.0.1:9100/healthz" in script.command
    # A failing csserver must move this node's VIP to the peer: 150 + weight below the peer's 100.
    assert config.instance(me).priority + script.weight < config.instance(peer).priority
    assert all(i.interface == "eth0" and i.track_script == ("chk_csserver",) for i in config.instances)


def test_csserver_samples_follow_spec_section_6():
    import tomllib

    for alias, name in (("cs-a", "csserver-a.toml"), ("cs-b", "csserver-b.toml")):
        data = tomllib.loads((REPO / "conf" / name).read_text())
        assert data["node"] == {"alias": alias, "listen": "0.0.0.0:9100"}
        assert data["cluster"] == {"aliases": {"cs-a": "192.0.2.100", "cs-b": "192.0.2.101"},
                                   "backup": {"cs-a": "cs-b", "cs-b": "cs-a"}}
        # Two hosts share one PostgreSQL (issue 12): a SQLite file per host is no shared store.
        assert data["store"] == {"url": "postgresql://csserver@pg1.example,pg2.example/csserver"
                                        "?target_session_attrs=read-write"}


# ---- every rule gives FILE:LINE: key: message --------------------------------------------------------

RULES = [
    # (changes to MINIMAL's instance, expected problem); the changed key is on the line given
    (dict(vrid=0), "t.toml:4: instance[VI_1].vrid: must be 1..255, not 0"),
    (dict(vrid=256), "t.toml:4: instance[VI_1].vrid: must be 1..255, not 256"),
    (dict(vrid="true"), "t.toml:4: instance[VI_1].vrid: must be an integer, not a boolean (true)"),
    (dict(vrid="51.0"), "t.toml:4: instance[VI_1].vrid: must be an integer, not a float (51.0)"),
    (dict(vrid='"51"'), 't.toml:4: instance[VI_1].vrid: must be an integer, not a string ("51")'),
    (dict(vrid=None), "t.toml:1: instance[VI_1].vrid: required, missing"),
    (dict(interface=None), "t.toml:1: instance[VI_1].interface: required, missing"),
    (dict(interface='"a/b"'), 't.toml:3: instance[VI_1].interface: not a Linux interface name: "a/b"'),
    (dict(interface='"eth0:1"'), 't.toml:3: instance[VI_1].interface: not a Linux interface name: "eth0:1"'),
    (dict(interface='"abcdefghijklmnop"'),
     't.toml:3: instance[VI_1].interface: not a Linux interface name: "abcdefghijklmnop"'),
    (dict(name=None), "t.toml:1: instance[#1].name: required, missing"),
    (dict(name='""'), "t.toml:2: instance[#1].name: must not be empty"),
    (dict(name='"VI 1"'), 't.toml:2: instance[VI 1].name: must not contain spaces or control characters: "VI 1"'),
    (dict(priority=0), "t.toml:6: instance[VI_1].priority: must be 1..255, not 0"),
    (dict(priority=300), "t.toml:6: instance[VI_1].priority: must be 1..255, not 300"),
    (dict(priority="false"), "t.toml:6: instance[VI_1].priority: must be an integer, not a boolean (false)"),
    (dict(version=4), "t.toml:6: instance[VI_1].version: must be 2..3, not 4"),
    (dict(advert_interval=0), "t.toml:6: instance[VI_1].advert_interval: must be 0.01..255 seconds, not 0"),
    (dict(advert_interval=41),
     "t.toml:6: instance[VI_1].advert_interval: VRRPv3 needs 0.01..40.95 seconds in steps of 0.01 "
     "(RFC 5798 5.2.7: 12 bits of centiseconds), not 41"),
    (dict(advert_interval=0.015),
     "t.toml:6: instance[VI_1].advert_interval: VRRPv3 needs 0.01..40.95 seconds in steps of 0.01 "
     "(RFC 5798 5.2.7: 12 bits of centiseconds), not 0.015"),
    (dict(advert_interval="nan"), "t.toml:6: instance[VI_1].advert_interval: must be a finite number, not nan"),
    (dict(advert_interval="inf"), "t.toml:6: instance[VI_1].advert_interval: must be a finite number, not inf"),
    (dict(advert_interval="true"),
     "t.toml:6: instance[VI_1].advert_interval: must be a number, not a boolean (true)"),
    (dict(version=2, advert_interval=1.5),
     "t.toml:7: instance[VI_1].advert_interval: VRRPv2 needs whole seconds 1..255 (RFC 3768 5.3.7), not 1.5"),
    (dict(version=2, advert_interval=256),
     "t.toml:7: instance[VI_1].advert_interval: must be 0.01..255 seconds, not 256"),
    (dict(virtual_ipaddress="[]"), "t.toml:5: instance[VI_1].virtual_ipaddress: must list at least one address"),
    (dict(virtual_ipaddress=None), "t.toml:1: instance[VI_1].virtual_ipaddress: required, missing"),
    (dict(virtual_ipaddress='"192.0.2.1"'),
     't.toml:5: instance[VI_1].virtual_ipaddress: must be an array, not a string ("192.0.2.1")'),
    (dict(virtual_ipaddress='["192.0.2.300/24"]'),
     't.toml:5: instance[VI_1].virtual_ipaddress: "192.0.2.300/24" is not an IP address with an optional /prefix'),
    (dict(virtual_ipaddress="[42]"),
     "t.toml:5: instance[VI_1].virtual_ipaddress: elements must be strings, not an integer (42)"),
    (dict(virtual_ipaddress='["192.0.2.1/24", "192.0.2.1/25"]'),
     "t.toml:5: instance[VI_1].virtual_ipaddress: 192.0.2.1 is listed twice"),
    (dict(virtual_ipaddress='["224.0.0.18"]'),
     "t.toml:5: instance[VI_1].virtual_ipaddress: 224.0.0.18 cannot be a virtual address "
     "(multicast, unspecified, loopback or broadcast)"),
    (dict(virtual_ipaddress='["fe80::1%eth0"]'),
     't.toml:5: instance[VI_1].virtual_ipaddress: "fe80::1%eth0": a zone index (%...) is not allowed; '
     "the instance's interface is used"),
    (dict(virtual_ipaddress='["192.0.2.1", "2001:db8::1"]'),
     "t.toml:5: instance[VI_1].virtual_ipaddress: 2001:db8::1 mixes IPv6 into an IPv4 instance; "
     "use one instance per family"),
    (dict(virtual_ipaddress='["2001:db8::1"]', version=2),
     "t.toml:6: instance[VI_1].version: VRRPv2 is IPv4 only (RFC 3768); IPv6 needs version = 3"),
    (dict(virtual_ipaddress="[" + ", ".join(f'"2001:db8::{i:x}"' for i in range(1, 92)) + "]"),
     "t.toml:5: instance[VI_1].virtual_ipaddress: at most 90 ipv6 addresses fit in one advert"),
    (dict(preempt=1), "t.toml:6: instance[VI_1].preempt: must be a boolean, not an integer (1)"),
    (dict(priority=255, preempt="false"),
     "t.toml:7: instance[VI_1].preempt: priority 255 (address owner) always takes over (RFC 5798 6.4.1); "
     "preempt = false cannot hold: lower the priority or remove preempt"),
    (dict(preempt_delay=-1), "t.toml:6: instance[VI_1].preempt_delay: must be 0..1000 seconds, not -1"),
    (dict(preempt_delay=1000.5), "t.toml:6: instance[VI_1].preempt_delay: must be 0..1000 seconds, not 1000.5"),
    (dict(unicast_src='"192.0.2.999"'), 't.toml:6: instance[VI_1].unicast_src: "192.0.2.999" is not an IP address'),
    (dict(unicast_src='"2001:db8::1"'),
     "t.toml:6: instance[VI_1].unicast_src: 2001:db8::1 is IPv6 but the virtual addresses are IPv4"),
    (dict(unicast_peers='["192.0.2.2", "2001:db8::2"]'),
     "t.toml:6: instance[VI_1].unicast_peers: 2001:db8::2 is IPv6 but the virtual addresses are IPv4"),
    (dict(unicast_peers='["224.0.0.18"]'),
     "t.toml:6: instance[VI_1].unicast_peers: 224.0.0.18 must be a unicast address"),
    (dict(unicast_peers='["192.0.2.2", "192.0.2.2"]'),
     "t.toml:6: instance[VI_1].unicast_peers: 192.0.2.2 is listed twice"),
    (dict(unicast_src='"192.0.2.1"', unicast_peers='["192.0.2.1"]'),
     "t.toml:7: instance[VI_1].unicast_peers: 192.0.2.1 is this node's own unicast_src"),
    (dict(garp_repeat=-1), "t.toml:6: instance[VI_1].garp_repeat: must be 0..100, not -1"),
    (dict(garp_repeat=101), "t.toml:6: instance[VI_1].garp_repeat: must be 0..100, not 101"),
    (dict(garp_refresh=-0.5), "t.toml:6: instance[VI_1].garp_refresh: must be 0..86400 seconds, not -0.5"),
    (dict(garp_refresh=0.001),
     "t.toml:6: instance[VI_1].garp_refresh: must be 0 (off) or at least 0.01 seconds, not 0.001"),
    (dict(track_interface='["eth1"]'),
     't.toml:6: instance[VI_1].track_interface: elements must be tables like { name = "eth1", weight = 0 }, '
     'not a string ("eth1")'),
    (dict(track_interface='[{ name = "eth1", weight = 254 }]'),
     "t.toml:6: instance[VI_1].track_interface.weight: must be -253..253, not 254"),
    (dict(track_interface='[{ name = "eth1", wieght = 1 }]'),
     "t.toml:6: instance[VI_1].track_interface.wieght: unknown key; did you mean 'weight'?"),
    (dict(track_interface='[{ weight = 1 }]'), "t.toml:6: instance[VI_1].track_interface.name: required, missing"),
    (dict(track_interface='[{ name = "eth0" }]'),
     "t.toml:6: instance[VI_1].track_interface.name: eth0 is the instance's own interface, always tracked "
     "(link down means FAULT)"),
    (dict(track_interface='[{ name = "eth1" }, { name = "eth1", weight = 5 }]'),
     "t.toml:6: instance[VI_1].track_interface.name: eth1 is tracked twice"),
    (dict(track_script='["nope"]'), 't.toml:6: instance[VI_1].track_script: "nope" names no [[script]]'),
    (dict(track_script='"nope"'), 't.toml:6: instance[VI_1].track_script: must be an array, not a string ("nope")'),
    (dict(notify='"/bin/x \'unclosed"'),
     "t.toml:6: instance[VI_1].notify: cannot be split into arguments: No closing quotation"),
    (dict(notify_master='"   "'), "t.toml:6: instance[VI_1].notify_master: holds no command"),
    (dict(notify_fault="[]"), "t.toml:6: instance[VI_1].notify_fault: must be a string, not an array"),
    (dict(vird=51), "t.toml:6: instance[VI_1].vird: unknown key; did you mean 'vrid'?"),
    (dict(colour='"red"'),
     f"t.toml:6: instance[VI_1].colour: unknown key (known: {KNOWN_INSTANCE_KEYS})"),
]


@pytest.mark.parametrize("changes, expected", RULES, ids=[e.split(": ", 1)[1][:60] for _, e in RULES])
def test_instance_rule(changes, expected):
    assert problems(instance(**changes)) == [expected]


@pytest.mark.parametrize("text, expected", [
    ('[global]\nlog_level = "loud"\n',
     't.toml:2: global.log_level: must be one of debug, info, warning, error, not "loud"'),
    ('[global]\nlog_format = "xml"\n', 't.toml:2: global.log_format: must be one of json, console, not "xml"'),
    ('[global]\nrouter_id = ""\n', "t.toml:2: global.router_id: must not be empty"),
    ('[global]\nrouter_id = 5\n', "t.toml:2: global.router_id: must be a string, not an integer (5)"),
    ('[global]\ncontrol_socket = "/' + "x" * 107 + '"\n',
     "t.toml:2: global.control_socket: a unix socket path is at most 107 bytes"),
    ('[global]\nmetrics_listen = "9101"\n',
     't.toml:2: global.metrics_listen: must be HOST:PORT (e.g. "127.0.0.1:9101" or "[::1]:9101"), not "9101"'),
    ('[global]\nmetrics_listen = "127.0.0.1:70000"\n',
     't.toml:2: global.metrics_listen: must be HOST:PORT (e.g. "127.0.0.1:9101" or "[::1]:9101"), '
     'not "127.0.0.1:70000"'),
    ('[global]\nmetrics_listen = "::1:9101"\n',
     't.toml:2: global.metrics_listen: must be HOST:PORT (e.g. "127.0.0.1:9101" or "[::1]:9101"), not "::1:9101"'),
    ('[global]\nlog_levle = "info"\n', "t.toml:2: global.log_levle: unknown key; did you mean 'log_level'?"),
    ('global = 3\n', "t.toml:1: global: must be a table ([global]), not an integer (3)"),
    ('[instances]\nx = 1\n', "t.toml:1: instances: unknown table; did you mean 'instance'?"),
    ('[instance]\nname = "x"\n', "t.toml:1: instance: must be an array of tables: write [[instance]], not [instance]"),
])
def test_global_and_top_level_rules(text, expected):
    assert expected in problems(text + (MINIMAL if "instance" not in text else ""))


SCRIPT = '[[script]]\nname = "chk"\ncommand = ["/bin/true"]\n'


@pytest.mark.parametrize("extra, expected", [
    ("interval = 0", "t.toml:4: script[chk].interval: must be more than 0 and at most 3600 seconds, not 0"),
    ("timeout = -1", "t.toml:4: script[chk].timeout: must be more than 0 and at most 3600 seconds, not -1"),
    ("rise = 0", "t.toml:4: script[chk].rise: must be 1..1000, not 0"),
    ("fall = 0", "t.toml:4: script[chk].fall: must be 1..1000, not 0"),
    ("fall = 1.0", "t.toml:4: script[chk].fall: must be an integer, not a float (1.0)"),
    ("weight = -254", "t.toml:4: script[chk].weight: must be -253..253, not -254"),
    ("weight = 254", "t.toml:4: script[chk].weight: must be -253..253, not 254"),
    ("weight = true", "t.toml:4: script[chk].weight: must be an integer, not a boolean (true)"),
    ("shell = true",
     "t.toml:4: script[chk].shell: unknown key (known: name, command, interval, timeout, rise, fall, weight)"),
])
def test_script_rule(extra, expected):
    assert problems(SCRIPT + extra + "\n" + MINIMAL) == [expected]


@pytest.mark.parametrize("script, expected", [
    ('[[script]]\nname = "chk"\ncommand = []\n', "t.toml:3: script[chk].command: must name a program to run"),
    ('[[script]]\nname = "chk"\ncommand = "/bin/true"\n',
     't.toml:3: script[chk].command: must be an array, not a string ("/bin/true")'),
    ('[[script]]\nname = "chk"\ncommand = ["", "x"]\n',
     "t.toml:3: script[chk].command: the program (first element) must not be empty"),
    ('[[script]]\nname = "chk"\n', "t.toml:1: script[chk].command: required, missing"),
    ('[[script]]\ncommand = ["/bin/true"]\n', "t.toml:1: script[#1].name: required, missing"),
    (SCRIPT + SCRIPT, 't.toml:5: script[chk].name: "chk" is already the name of an earlier [[script]]'),
])
def test_script_table_rule(script, expected):
    assert problems(script + MINIMAL) == [expected]


def test_duplicate_instance_names_vrids_and_vips_point_at_the_second_one():
    text = MINIMAL + instance(vrid=52, virtual_ipaddress='["192.0.2.101/24"]') + instance(
        name='"VI_3"', virtual_ipaddress='["192.0.2.200/24", "192.0.2.100/24"]')
    assert problems(text) == [
        't.toml:7: instance[VI_1].name: "VI_1" is already the name of an earlier [[instance]]',
        't.toml:14: instance[VI_3].vrid: VRID 51 on eth0 (ipv4) is already used by instance "VI_1"',
        't.toml:15: instance[VI_3].virtual_ipaddress: 192.0.2.100 is already a virtual address of instance "VI_1"',
    ]


def test_same_vrid_on_another_interface_is_fine():
    parse(MINIMAL + instance(name='"VI_2"', interface='"eth1"', virtual_ipaddress='["198.51.100.1/24"]'))


@pytest.mark.parametrize("groups, expected", [
    ('[[sync_group]]\nname = "G"\ninstances = ["VI_1", "VI_X"]\n',
     't.toml:8: sync_group[G].instances: "VI_X" names no [[instance]]'),
    ('[[sync_group]]\nname = "G"\ninstances = []\n',
     "t.toml:8: sync_group[G].instances: must list at least one instance"),
    ('[[sync_group]]\nname = "G"\ninstances = ["VI_1", "VI_1"]\n',
     't.toml:8: sync_group[G].instances: "VI_1" is listed twice'),
    ('[[sync_group]]\nname = "G"\ninstances = ["VI_1"]\n[[sync_group]]\nname = "H"\ninstances = ["VI_1"]\n',
     't.toml:11: sync_group[H].instances: "VI_1" is already in sync group "G"'),
    ('[[sync_group]]\nname = "G"\ninstances = ["VI_1"]\n[[sync_group]]\nname = "G"\ninstances = []\n',
     't.toml:10: sync_group[G].name: "G" is already the name of an earlier [[sync_group]]'),
    ('[[sync_group]]\nname = "G"\nmembers = ["VI_1"]\n',
     "t.toml:8: sync_group[G].members: unknown key (known: name, instances)"),
])
def test_sync_group_rule(groups, expected):
    assert expected in problems(MINIMAL + groups)


def test_no_instance_at_all():
    assert problems("[global]\n") == ["t.toml: instance: at least one [[instance]] is required"]
    assert problems("instance = []\n") == ["t.toml:1: instance: at least one [[instance]] is required"]


def test_every_problem_is_reported_at_once_in_file_order():
    text = '[global]\nlog_level = "x"\n' + instance(vrid=0, priority=0) + instance(name='"B"', vrid=-1)
    assert [p.split(": ")[0] for p in problems(text)] == ["t.toml:2", "t.toml:6", "t.toml:8", "t.toml:12"]


# ---- line numbers beyond one key per line -----------------------------------------------------------

def test_lines_inside_multiline_arrays_and_inline_tables():
    text = """\
        [[script]]
        name = "chk"
        command = ["/bin/true"]

        # a comment with [[instance]] in it
        [[instance]]
        name = "VI_1"
        description = '''
        [[instance]]
        vrid = 1 '''
        interface = "eth0"
        vrid = 51
        virtual_ipaddress = [
            "192.0.2.1/24",   # fine
            "192.0.2.x",
        ]
        track_interface = [
            { name = "eth1", weight = 1 },

            { name = "eth2", weight = 999 },
        ]
        track_script = ["chk",
                        "chk2"]
        """
    assert problems(text) == [
        f"t.toml:8: instance[VI_1].description: unknown key (known: {KNOWN_INSTANCE_KEYS})",
        't.toml:15: instance[VI_1].virtual_ipaddress: "192.0.2.x" is not an IP address with an optional /prefix',
        "t.toml:20: instance[VI_1].track_interface.weight: must be -253..253, not 999",
        't.toml:23: instance[VI_1].track_script: "chk2" names no [[script]]',
    ]


def test_lines_of_the_nth_instance_dotted_and_quoted_keys():
    text = MINIMAL + '\n[[instance]]\n"name" = "VI_2"\ninterface = "eth0"\n  vrid   =   300\n' \
                     'virtual_ipaddress = ["192.0.2.5"]\nnotify.x = "y"\n'
    assert problems(text) == [
        "t.toml:10: instance[VI_2].vrid: must be 1..255, not 300",
        "t.toml:12: instance[VI_2].notify: must be a string, not a table",
    ]


def test_instances_as_an_inline_array():
    text = 'instance = [\n  { name = "A", interface = "eth0", vrid = 1, virtual_ipaddress = ["192.0.2.1"] },\n' \
           '  { name = "B", interface = "eth0", vrid = 0, virtual_ipaddress = ["192.0.2.2"] },\n]\n'
    assert problems(text) == ["t.toml:3: instance[B].vrid: must be 1..255, not 0"]


# ---- files that are not TOML or cannot be read ------------------------------------------------------

def test_toml_syntax_error_carries_tomllibs_line():
    # tomllib's wording may change between Python versions; the place must not.
    for text, place in ((MINIMAL + "priority = = 3\n", "t.toml:6: toml: "),
                        (MINIMAL + "vrid = 52\n", "t.toml:6: toml: "),
                        ('x = "unterminated\n', "t.toml:1: toml: ")):
        [problem] = problems(text)
        assert problem.startswith(place) and problem.endswith(")"), problem


def test_absurd_nesting_is_a_problem_not_a_crash():
    assert problems("x = " + "[" * 5000 + "]" * 5000 + "\n") == ["t.toml: toml: nesting too deep"]


def test_load_reports_unreadable_files(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load(str(missing))
    assert str(info.value) == f"{missing}: file: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: file: cannot read: Is a directory"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[global]\n\nrouter_id = "n\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(str(latin1))
    assert str(info.value) == f"{latin1}:3: file: not UTF-8 text"
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    assert load(str(good)).path == str(good)


def test_problem_formats():
    assert str(Problem("f.toml", 3, "instance[A].vrid", "bad")) == "f.toml:3: instance[A].vrid: bad"
    assert str(Problem("f.toml", None, "file", "gone")) == "f.toml: file: gone"
    error = ConfigError([Problem("f", 1, "a", "b"), Problem("f", 2, "c", "d")])
    assert str(error) == "f:1: a: b\nf:2: c: d" and len(error.problems) == 2


# ---- nothing but ConfigError, whatever the input --------------------------------------------------

def _parse_or_problems(text: str):
    try:
        return parse(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems
        assert not any("internal error" in p.message for p in exc.problems), exc
        return exc.problems


TOML_ALPHABET = st.sampled_from(list('[]{}=",.\'#\n abc0123456789-_:/') + ["instance", "vrid", "name", "\"\"\""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOML_ALPHABET, max_size=60).map("".join))
def test_random_toml_ish_text_gives_a_config_or_problems(text):
    _parse_or_problems(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_a_config_or_problems(text):
    _parse_or_problems(text)


SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=20).map(toml_value),
    st.sampled_from(['"192.0.2.9/24"', '"2001:db8::9"', '"eth1"', '"chk"', '"VI_1"', '"1979-05-27"', "1979-05-27"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.sampled_from(["name", "weight", "x"]), inner, max_size=3).map(
            lambda d: "{ " + ", ".join(f"{k} = {v}" for k, v in d.items()) + " }"),
    ),
    max_leaves=6,
)
KEYS = [(table, key) for table, key in
        [("global", k) for k in ("router_id", "control_socket", "log_format", "log_level", "metrics_listen", "bogus")]
        + [("script", k) for k in ("name", "command", "interval", "timeout", "rise", "fall", "weight", "bogus")]
        + [("instance", k) for k in ("name", "interface", "vrid", "priority", "version", "advert_interval",
                                     "virtual_ipaddress", "preempt", "preempt_delay", "unicast_src", "unicast_peers",
                                     "garp_repeat", "garp_refresh", "track_interface", "track_script", "notify",
                                     "notify_stop", "bogus")]
        + [("sync_group", k) for k in ("name", "instances", "bogus")]]


def _full_file(table: str, key: str, value: str) -> tuple[str, int]:
    """SPEC_EXAMPLE with `key` of the first `table` set to `value`; returns the text and that key's line."""
    lines = SPEC_EXAMPLE.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith((f"[{table}]", f"[[{table}]]")))
    end = next((i for i in range(header + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    spot = next((i for i in range(header + 1, end) if lines[i].startswith(f"{key} =")), None)
    if spot is None:
        lines.insert(header + 1, f"{key} = {value}")
        spot = header + 1
    else:
        lines[spot] = f"{key} = {value}"
    return "\n".join(lines) + "\n", spot + 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEYS), VALUES)
def test_random_values_give_a_config_or_problems_with_lines(table_key, value):
    text, line = _full_file(*table_key, value)
    result = _parse_or_problems(text)
    if isinstance(result, tuple):
        # The changed key is to blame, at its line, or something elsewhere that refers to it.
        assert all(p.line is not None for p in result), result
        assert any(p.line == line for p in result) or all(
            "names no" in p.message or "already" in p.message or "own interface" in p.message for p in result), result


# ---- toml_positions on its own ------------------------------------------------------------------------

def test_positions_public_api():
    from daemonkit.tomlpos import Positions

    text = '[global]\nrouter_id = "a"\n\n[[instance]]\nname = "A"\n[[instance]]\nvips = [\n  "x",\n  "y"]\n'
    positions = Positions.of(text)
    assert positions.line(("global",)) == 1 and positions.line(("global", "router_id")) == 2
    assert positions.line(("instance", 1)) == 6 and positions.line(("instance", 1, "vips", 1)) == 9
    assert positions.line(("instance", 1, "nope")) == 6  # the deepest element found
    assert positions.line(("nope",)) is None
    # Text tomllib would refuse is not what it is for: it gives up quietly instead of raising.
    assert Positions.of('x = [\n  "a",\n').line(("x", 0)) is None


def test_load_refuses_what_is_not_a_config_file(tmp_path):
    """A device or FIFO would be read forever, a huge file is a mistake: refused at once, with the file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    for path, message in (("/dev/zero", "not a regular file"), (str(fifo), "not a regular file"),
                          (str(big), "larger than")):
        with pytest.raises(ConfigError) as caught:
            load(path)
        (problem,) = caught.value.problems
        assert (problem.file, problem.key) == (path, "file") and message in problem.message
