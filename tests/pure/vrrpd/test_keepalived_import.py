"""`vrrpd import-keepalived`: keepalived.conf VRRP blocks become vrrpd TOML that parses and means the same."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrpd.ops.cli import main
from vrrpd.config import ConfigError, TrackInterface, parse
from daemonkit.tomlwrite import toml_value
from tests.support import DATA, require
from vrrpd.ops.keepalived.convert import convert
from vrrpd.ops.keepalived.parse import KeepalivedParseError

KEEPALIVED_SAMPLES = Path("/usr/share/doc/keepalived/samples")


def converted(name: str):
    """The converted text and its parsed Config for a file under tests/unit/data."""
    text = convert((DATA / name).read_text(), name)
    return text, parse(text, name)


def vips(instance) -> list[str]:
    return [str(v) for v in instance.virtual_ipaddress]


def test_dual_master_node_keeps_priorities_vrids_vips_and_tracking():
    text, config = converted("keepalived-dual-master.conf")
    assert config.global_.router_id == "node_a"
    a, b = config.instance("VI_A"), config.instance("VI_B")
    assert (a.interface, a.vrid, a.priority, a.version, a.advert_interval) == ("eth0", 51, 150, 3, 1.0)
    assert (b.interface, b.vrid, b.priority, b.version, b.advert_interval) == ("eth0", 52, 100, 3, 1.0)
    assert vips(a) == ["192.0.2.100/24"] and vips(b) == ["192.0.2.101/24"]
    assert a.preempt and not b.preempt and b.preempt_delay == 30.0
    assert (a.garp_repeat, a.garp_refresh, a.garp_master_delay) == (3, 60.0, 5.0)
    assert str(b.unicast_src) == "192.0.2.1" and [str(p) for p in b.unicast_peers] == ["192.0.2.2"]
    assert a.track_interface == (TrackInterface("eth1", -20), TrackInterface("eth2", 0))
    assert config.script("chk_csserver").command == (
        "/usr/bin/curl", "-fsS", "-m", "1", "-o", "/dev/null", "http://127.0.0.1:9100/healthz")
    chk = config.script("chk_csserver")
    assert (chk.interval, chk.timeout, chk.rise, chk.fall, chk.weight) == (1.0, 1.0, 2, 2, -60)
    # chk_haproxy is tracked only by VI_B with weight 10: the script carries that weight.
    assert b.track_script == ("chk_csserver", "chk_haproxy") and config.script("chk_haproxy").weight == 10
    assert config.script("chk_haproxy").command == ("killall", "-0", "haproxy")
    assert a.notify_master == ("/usr/local/bin/vrrp-notify.sh", "MASTER", "VI_A")
    assert a.notify_backup == ("/usr/local/bin/vrrp-notify.sh",)
    assert a.notify_fault == ("/usr/local/bin/vrrp-notify.sh", "FAULT", "VI_A")
    assert a.notify == ("/usr/local/bin/vrrp-all.sh",) and b.notify_stop == ("/usr/local/bin/vrrp-stop.sh",)
    for lost in ("# not carried: authentication { ... } (line 41): keepalived ignores authentication with VRRPv3",
                 "# not carried: smtp_alert (line 59)",
                 "# not carried: include /etc/keepalived/conf.d/*.conf (line 15)",
                 "# not carried: virtual_server 192.0.2.100 80 { ... } (line 84)",
                 "# not carried: user keepalived_script (line 24)",
                 "# not carried: user root of notify_fault (line 57)",
                 "# not carried: options of 192.0.2.100/24 dev eth0 label eth0:vip (line 46)",
                 "# not carried: notification_email { ... } (line 4)",
                 "# keepalived: state MASTER (line 33)"):
        assert lost in text


def test_sync_groups_v2_default_and_per_instance_script_weights():
    text, config = converted("keepalived-sync-v2.conf")
    assert [(g.name, g.instances) for g in config.sync_groups] == [("G1", ("VI_1", "VI_2")), ("G2", ("VI_3", "VI_4"))]
    # keepalived's default version is 2, not vrrpd's 3.
    assert {i.name: (i.vrid, i.priority, i.version) for i in config.instances} == {
        "VI_1": (51, 100, 2), "VI_2": (52, 100, 2), "VI_3": (53, 90, 2), "VI_4": (54, 90, 2)}
    assert config.instance("VI_2").advert_interval == 3.0
    assert vips(config.instance("VI_3")) == ["192.168.200.19/27"]

    def weights(name):
        return [(s, config.script(s).weight) for s in config.instance(name).track_script]

    # G1 has no sync_group_tracking_weight: keepalived zeroes the weights of its members' scripts.
    assert weights("VI_1") == [("chk_sshd_w0", 0)]
    # G2 keeps weights; the per-instance overrides survive as copies of the script.
    assert weights("VI_3") == [("chk_sshd", -4), ("chk_http_port", 5)]
    assert weights("VI_4") == [("chk_http_port_wm30", -30)]
    assert config.script("chk_http_port_wm30").command == ("/bin/sh", "-c", "</dev/tcp/127.0.0.1/80")
    assert "# not carried: notify_master /usr/local/bin/vrrp.mast arg1 arg2 (line 8)" in text


def test_ipv6_owner_nopreempt_and_corners():
    text, config = converted("keepalived-ipv6.conf")
    [inst] = config.instances
    assert (inst.vrid, inst.priority, inst.version, inst.advert_interval, inst.family) == (60, 255, 3, 0.25, "ipv6")
    assert vips(inst) == ["2001:db8:1::1/64", "2001:db8:1::2/64"]
    assert inst.preempt and inst.track_interface == ()  # own interface is always tracked
    assert [str(p) for p in inst.unicast_peers] == ["2001:db8:1::b"]
    assert [str(v) for v in inst.virtual_ipaddress_excluded] == ["2001:db8:1::100/64"]
    assert (inst.vmac, inst.vmac_xmit_base) == ("vrrp.60", False)
    for lost in ("# not carried: nopreempt: an address owner (priority 255) always takes over",
                 "# not carried: 192.0.2.60/24 (line 14): an IPv4 address in an IPv6 instance",
                 "# not carried: @node_a preempt_delay 10 (line 23): conditional configuration",
                 "# not carried: $IF=eth0 (line 2)",
                 "# not carried: eth0 (line 22): vrrpd always tracks the instance's own interface"):
        assert lost in text


def test_quotes_comments_and_braces_on_one_line():
    text = convert(
        'vrrp_script chk_one { script "/bin/sh -c \'exit 0\'"\n interval 3 }\n'
        "vrrp_instance VI_1 { interface eth0 ! a comment\n"
        "  virtual_router_id 9 # another\n"
        '  virtual_ipaddress { 198.51.100.9/24 }\n'
        '  track_script { "chk_one" weight -7 }\n'
        "  notify_master \"/usr/bin/logger -t vrrp 'became master'\"\n"
        "}\n", "k.conf")
    config = parse(text)
    inst = config.instance("VI_1")
    assert (inst.vrid, vips(inst)) == (9, ["198.51.100.9/24"])
    assert inst.notify_master == ("/usr/bin/logger", "-t", "vrrp", "became master")
    [script] = config.scripts
    assert inst.track_script == ("chk_one",) and script.weight == -7 and script.interval == 3.0
    assert script.command == ("/bin/sh", "-c", "exit 0")


def test_zero_values_are_carried_and_duplicate_names_do_not_mix():
    text = convert("vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n garp_master_repeat 0\n"
                   " preempt_delay 0\n virtual_ipaddress { 192.0.2.1 }\n track_interface { eth1 weight 0 }\n}\n"
                   "vrrp_instance VI_1 {\n interface eth1\n virtual_router_id 2\n virtual_ipaddress { 192.0.2.2 }\n"
                   " track_script { nope }\n}\n", "k.conf")
    [inst] = parse(text).instances
    assert (inst.vrid, inst.garp_repeat, inst.preempt_delay) == (1, 0, 0.0)
    assert inst.track_interface == (TrackInterface("eth1", 0),) and inst.track_script == ()
    assert "# not carried: vrrp_instance VI_1 { ... } (line 9): a vrrp_instance of that name comes earlier" in text


def test_the_converted_file_is_commented_toml():
    text, _ = converted("keepalived-dual-master.conf")
    assert text.startswith("# vrrpd configuration converted from keepalived-dual-master.conf")
    assert tomllib.loads(text)["instance"][0]["name"] == "VI_A"


def test_an_instance_vrrpd_cannot_run_is_commented_out_with_the_reason():
    text = convert("vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 192.0.2.1 }\n}\n"
                   "vrrp_instance VI_2 {\n interface eth0\n priority 300\n virtual_ipaddress { 192.0.2.2 }\n}\n"
                   "vrrp_instance VI_3 {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 192.0.2.3 }\n}\n",
                   "k.conf")
    config = parse(text)
    assert [i.name for i in config.instances] == ["VI_1"]
    assert "# not carried: vrrp_instance VI_2 (line 6): no usable virtual_router_id" in text
    assert "# not carried: priority 300 (line 8)" in text
    assert ('# not carried: instance VI_3: vrrpd check: VRID 1 on eth0 (ipv4) is already used by instance "VI_1"'
            in text)


@pytest.mark.parametrize("text, line, message", [
    ("vrrp_instance VI_1 {\n  interface eth0\n", 1, "block opened here is never closed with '}'"),
    ("vrrp_instance VI_1 {\n}\n}\n", 3, "'}' closes no block"),
    ('vrrp_script x {\n  script "/bin/true\n}\n', 2, 'unterminated " quote'),
    ("{\n}\n", 1, "'{' does not follow a keyword"),
])
def test_syntax_errors_name_file_and_line(text, line, message):
    with pytest.raises(KeepalivedParseError) as info:
        convert(text, "k.conf")
    assert (info.value.file, info.value.line, info.value.message) == ("k.conf", line, message)
    assert str(info.value) == f"k.conf:{line}: {message}"


def test_cli_prints_the_toml_and_exits_2_on_a_parse_error(tmp_path, capsys):
    assert main(["import-keepalived", str(DATA / "keepalived-sync-v2.conf")]) == 0
    parse(capsys.readouterr().out)
    broken = tmp_path / "broken.conf"
    broken.write_text("vrrp_instance VI_1 {\n")
    assert main(["import-keepalived", str(broken)]) == 2
    assert capsys.readouterr().err.strip() == f"{broken}:1: block opened here is never closed with '}}'"


V2_AUTH = """
vrrp_instance VI_1 {{
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {{ 192.0.2.100/24 }}
    authentication {{
{body}
    }}
}}
"""


@pytest.mark.parametrize(("body", "carried", "note"), [
    ("auth_type PASS\nauth_pass s3cret", ("PASS", "s3cret"), "not security"),
    ("auth_type AH\nauth_pass 1234567890", ("AH", "12345678"), "keepalived uses its first 8"),
    ("auth_pass s3cret", ("none", ""), "without both auth_type and auth_pass"),
])
def test_authentication_is_carried_as_keepalived_uses_it(body, carried, note):
    text = convert(V2_AUTH.format(body=body), "auth.conf")
    inst = parse(text).instance("VI_1")
    assert (inst.version, inst.auth_type, inst.auth_pass) == (2, *carried)
    assert note in text


GARP = """
global_defs {
  vrrp_garp_master_delay 10
  vrrp_garp_interval 0.001
  vrrp_gna_interval 0.002
  vrrp_garp_lower_prio_repeat 2
}
garp_group {
  garp_interval 0.01
  interface eth1
}
vrrp_instance A {
  interface eth0
  virtual_router_id 1
  garp_master_delay 3
  garp_master_refresh 30
  garp_master_refresh_repeat 2
  garp_lower_prio_repeat 0
  virtual_ipaddress { 192.0.2.1 }
}
vrrp_instance B {
  interface eth1
  virtual_router_id 2
  virtual_ipaddress { 192.0.2.2 }
}
"""


def test_garp_timing_is_carried_from_the_instance_global_defs_and_garp_groups():
    config = parse(convert(GARP, "garp.conf"))
    a, b = config.instance("A"), config.instance("B")
    assert (a.garp_master_delay, a.garp_refresh, a.garp_master_refresh_repeat, a.garp_lower_prio_repeat) == \
        (3.0, 30.0, 2, 0)
    assert (a.garp_interval, a.gna_interval) == (0.001, 0.002)  # global_defs, where the instance is silent
    assert (b.garp_master_delay, b.garp_lower_prio_repeat) == (10.0, 2)
    assert (b.garp_interval, b.gna_interval) == (0.01, 0.002)  # its interface's garp_group wins over global_defs


SOURCES_AND_ROUTES = """
vrrp_instance M {
  interface eth0
  virtual_router_id 1
  mcast_src_ip 192.0.2.5
  dont_track_primary
  virtual_ipaddress { 192.0.2.1 }
  virtual_ipaddress_excluded {
    192.0.2.2/24
    2001:db8::2/64
  }
  virtual_routes {
    src 192.0.2.1 to 198.51.100.0/24 via 192.0.2.254 dev eth1 metric 10
    unreachable 203.0.113.0/24
    198.51.100.128/25 via 192.0.2.1 or 192.0.2.2
  }
  virtual_rules {
    from 192.0.2.1 table 100 priority 100
    from all to 198.51.100.0/24 lookup 101
  }
}
vrrp_instance U {
  interface eth0
  virtual_router_id 2
  mcast_src_ip 192.0.2.6
  unicast_ttl 64
  unicast_peer { 192.0.2.7 }
  virtual_ipaddress { 192.0.2.3 }
}
"""


def test_sources_excluded_addresses_routes_and_rules_are_carried():
    text = convert(SOURCES_AND_ROUTES, "routes.conf")
    config = parse(text)
    m, u = config.instance("M"), config.instance("U")
    assert (str(m.mcast_src_ip), m.dont_track_primary, m.unicast_src) == ("192.0.2.5", True, None)
    assert [str(v) for v in m.virtual_ipaddress_excluded] == ["192.0.2.2/24", "2001:db8::2/64"]
    assert [str(r) for r in m.virtual_routes] == ["198.51.100.0/24 via 192.0.2.254 dev eth1 src 192.0.2.1 metric 10",
                                                  "unreachable 203.0.113.0/24",
                                                  "198.51.100.128/25 via 192.0.2.1 or 192.0.2.2"]
    assert [str(r) for r in m.virtual_rules] == ["from 192.0.2.1/32 priority 100 table 100",
                                                 "to 198.51.100.0/24 table 101"]
    # keepalived's mcast_src_ip is the source of unicast adverts too when unicast_src_ip is not set
    assert (str(u.unicast_src), u.mcast_src_ip, u.unicast_ttl) == ("192.0.2.6", None, 64)


def test_notify_fifo_is_carried_and_a_second_fifo_is_said_to_be_lost():
    text = convert("global_defs {\n notify_fifo /run/ka.fifo\n vrrp_notify_fifo /run/vrrp.fifo\n}\n"
                   "vrrp_instance I {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress { 192.0.2.1 }\n}\n",
                   "fifo.conf")
    assert parse(text).global_.notify_fifo == "/run/ka.fifo"
    assert "not carried: vrrp_notify_fifo /run/vrrp.fifo (line 3): vrrpd writes one notify FIFO" in text


TRACKERS = """
track_file tf1 {
  file /run/app/weight
  weight 2
  init_file 0 overwrite
}
vrrp_track_process haproxy {
  process haproxy -f "/etc/haproxy/haproxy.cfg"
  param_match partial
  quorum 2
  delay 1.5
  weight -10
}
vrrp_track_process nginx {
  process nginx
  weight 3 reverse
}
vrrp_sync_group G {
  group {
    A
    B
  }
}
vrrp_instance A {
  interface eth0
  virtual_router_id 1
  virtual_ipaddress { 192.0.2.1 }
  track_file { tf1 weight 3 }
  track_process { haproxy }
}
vrrp_instance B {
  interface eth0
  virtual_router_id 2
  virtual_ipaddress { 192.0.2.2 }
}
vrrp_instance C {
  interface eth0
  virtual_router_id 3
  priority 150
  virtual_ipaddress { 192.0.2.3 }
  track_file { tf1 }
  track_process { haproxy weight 5 }
}
"""


def test_track_file_and_track_process_are_carried_with_keepalived_weight_rules():
    text = convert(TRACKERS, "track.conf")
    config = parse(text)
    f, p = config.track_file("tf1"), config.track_process("haproxy")
    assert (f.file, f.weight, f.init_file, f.init_overwrite) == ("/run/app/weight", 2, 0, True)
    assert (p.process, p.args, p.param_match, p.quorum, p.fork_delay, p.terminate_delay, p.weight) == (
        "haproxy", ("-f", "/etc/haproxy/haproxy.cfg"), "partial", 2, 1.5, 1.5, -10)
    a, c = config.instance("A"), config.instance("C")
    # A is in a sync group without sync_group_tracking_weight: keepalived tracks with weight 0 there
    assert [(r.name, r.weight) for r in a.track_file + a.track_process] == [("tf1", 0), ("haproxy", 0)]
    assert "which keepalived sets to 0 for in a sync group" in text
    assert [(r.name, r.weight) for r in c.track_file + c.track_process] == [("tf1", None), ("haproxy", 5)]
    assert "not carried: weight 3 reverse (line 16): vrrpd has no reverse weights" in text


def test_accept_no_accept_and_vrrp_strict_are_carried_as_accept_mode():
    text = convert("global_defs {\n vrrp_strict\n}\n"
                   + "".join(f"vrrp_instance {name} {{\n interface eth0\n virtual_router_id {vrid}\n{extra}"
                             f" virtual_ipaddress {{ 192.0.2.{vrid} }}\n}}\n"
                             for name, vrid, extra in (("S", 1, ""), ("A", 2, " accept\n"),
                                                       ("O", 3, " priority 255\n"))), "strict.conf")
    config = parse(text)
    assert [config.instance(n).accept_mode for n in ("S", "A", "O")] == [False, True, True]
    assert "vrrp_strict (line 2): carried as accept_mode = false" in text
    assert parse(convert("vrrp_instance N {\n interface eth0\n virtual_router_id 9\n no_accept\n"
                         " virtual_ipaddress { 192.0.2.9 }\n}\n", "n.conf")).instance("N").accept_mode is False


def test_keepalived_documentation_samples_convert_to_valid_vrrpd_configs():
    require(None if KEEPALIVED_SAMPLES.is_dir() else "keepalived's samples are not installed (Debian package keepalived)")
    samples = [p for p in sorted(KEEPALIVED_SAMPLES.glob("keepalived.conf*")) if "vrrp_instance" in p.read_text()]
    assert samples
    for sample in samples:
        config = parse(convert(sample.read_text(), sample.name), sample.name)
        assert config.instances, sample
    text, config = convert((KEEPALIVED_SAMPLES / "keepalived.conf.vrrp").read_text(), "vrrp"), None
    config = parse(text)
    assert {i.name: (i.vrid, i.priority) for i in config.instances} == {
        "VI_1": (51, 100), "VI_2": (50, 50), "VI_3": (52, 100), "VI_4": (53, 50)}
    assert vips(config.instance("VI_1")) == ["192.168.200.16/32", "192.168.200.17/32", "192.168.200.18/32"]


# The keywords of issue 13: none of them may be left behind on keepalived's own samples.
PARITY_KEYWORDS = ("use_vmac", "vmac_xmit_base", "accept", "no_accept", "vrrp_strict", "authentication",
                   "auth_type", "auth_pass", "track_file", "vrrp_track_file", "vrrp_track_process", "track_process",
                   "notify_fifo", "vrrp_notify_fifo", "garp_master_delay", "garp_master_repeat",
                   "garp_master_refresh", "garp_master_refresh_repeat", "garp_lower_prio_repeat", "vrrp_garp_interval",
                   "vrrp_gna_interval", "garp_interval", "gna_interval", "unicast_ttl", "mcast_src_ip",
                   "dont_track_primary", "virtual_ipaddress_excluded", "virtual_routes", "virtual_rules")


def test_keepalived_samples_carry_every_keyword_operators_bring():
    require(None if KEEPALIVED_SAMPLES.is_dir() else "keepalived's samples are not installed (Debian package keepalived)")
    seen: set[str] = set()
    for sample in sorted(KEEPALIVED_SAMPLES.glob("keepalived.conf*")):
        text = sample.read_text()
        if "vrrp_instance" not in text:
            continue
        blocks = {"virtual_routes": _block_lines(text, "virtual_routes"),
                  "virtual_rules": _block_lines(text, "virtual_rules")}
        seen |= {kw for kw in PARITY_KEYWORDS if kw in text}
        for line in convert(text, sample.name).splitlines():
            if "not carried:" not in line:
                continue
            statement = line.split("not carried:", 1)[1].split()
            assert not statement or statement[0] not in PARITY_KEYWORDS, (sample.name, line)
            number = int(line.rsplit("(line ", 1)[1].split(")")[0]) if "(line " in line else None
            for kw, lines in blocks.items():
                # a line inside these blocks may be left out only when keepalived cannot read it either
                if number in lines:
                    assert "is not a network" in line or "is not an IP address" in line, (sample.name, kw, line)
    assert {"use_vmac", "virtual_routes", "virtual_rules", "authentication"} <= seen  # the samples do use them


def _block_lines(text: str, keyword: str) -> set[int]:
    """The line numbers inside every `keyword { ... }` block of a keepalived.conf."""
    lines, inside = set(), False
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#")[0].split("!")[0].split()
        if words[:1] == [keyword]:
            inside = True
        elif inside and words[:1] == ["}"]:
            inside = False
        elif inside:
            lines.add(number)
    return lines


# ---- whatever keepalived.conf comes in, the output parses ----------------------------------------

WORDS = st.sampled_from([
    "eth0", "eth1", "1", "51", "0", "256", "-3", "0.5", "2", "3", "255", "x y", "weight", "-20", "reverse",
    "192.0.2.9/24", "192.0.2.9", "2001:db8::9", "198.51.100.1", "dev", "label", "chk_a", "chk_b", "VI_1", "VI_2",
    "/bin/true", "'unclosed", "", "min_ttl", "via", "table", "from", "PASS", "AH", "auth_type", "auth_pass", "or",
    "blackhole", "198.51.100.0/24",
])
KEYWORDS = st.sampled_from([
    "state", "interface", "virtual_router_id", "priority", "advert_int", "version", "nopreempt", "preempt_delay",
    "unicast_src_ip", "mcast_src_ip", "garp_master_repeat", "garp_master_refresh", "notify", "notify_master",
    "notify_stop", "smtp_alert", "use_vmac", "@node_a", "authentication", "vmac_xmit_base", "accept", "no_accept",
    "dont_track_primary", "unicast_ttl", "garp_master_delay", "garp_lower_prio_repeat", "garp_master_refresh_repeat",
])
BLOCKS = st.sampled_from(["virtual_ipaddress", "unicast_peer", "track_interface", "track_script", "authentication",
                          "virtual_ipaddress_excluded", "virtual_routes", "virtual_rules", "track_file",
                          "track_process"])


def _quoted(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def keepalived_confs(draw) -> str:
    weight = draw(st.one_of(st.integers(-260, 260).map(str), WORDS))
    lines = ["vrrp_script chk_a {", '  script "/bin/true"', f"  weight {_quoted(weight)}",
             f"  interval {_quoted(draw(WORDS))}", "}"]
    if draw(st.booleans()):
        lines += ["vrrp_script chk_b {", f"  script {_quoted(draw(WORDS))}", f"  rise {_quoted(draw(WORDS))}", "}"]
    for n in range(draw(st.integers(1, 3))):
        lines.append(f"vrrp_instance VI_{n} {{")
        for _ in range(draw(st.integers(0, 8))):
            if draw(st.booleans()):
                words = " ".join(_quoted(w) for w in draw(st.lists(WORDS, max_size=2)))
                lines.append(f"  {draw(KEYWORDS)} {words}")
            else:
                items = draw(st.lists(st.lists(WORDS, min_size=1, max_size=3), max_size=3))
                lines.append(f"  {draw(BLOCKS)} {{")
                lines += ["    " + " ".join(_quoted(w) for w in item) for item in items]
                lines.append("  }")
        lines.append("}")
    # One instance that is certainly valid, so that the output must be a config vrrpd runs.
    lines += ["vrrp_instance SANE {", " interface eth9", " virtual_router_id 200",
              " virtual_ipaddress { 203.0.113.1/24 }", "}"]
    if draw(st.booleans()):
        members = " ".join(_quoted(w) for w in draw(st.lists(WORDS, max_size=3)))
        lines += ["vrrp_sync_group G {", "  group {", f"    {members}", "  }", "}"]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keepalived_confs())
def test_any_keepalived_conf_converts_to_a_config_that_parses(text):
    output = convert(text, "fuzz.conf")
    try:
        config = parse(output, "out.toml")
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{exc}\n--- input\n{text}\n--- output\n{output}")
    assert config.instance("SANE").vrid == 200


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}\"'#!\n ab1")), max_size=60))
def test_random_text_converts_or_raises_a_parse_error(text):
    """The importer's promise: a parse error, or TOML that vrrpd accepts, or (nothing convertible) TOML whose
    only problem is that no instance survived."""
    try:
        output = convert(text, "fuzz.conf")
    except KeepalivedParseError:
        return
    try:
        parse(output, "out.toml")
    except ConfigError as exc:
        assert [p.message for p in exc.problems] == ["at least one [[instance]] is required"], output


@given(st.text(max_size=30))
def test_toml_strings_round_trip(value):
    assert tomllib.loads(f"x = {toml_value(value)}")["x"] == value
