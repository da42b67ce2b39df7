"""VRRPv2 authentication (RFC 2338 5.3.6, as keepalived does it): PASS and AH on the wire, checked and counted.

A compatibility feature for keepalived peers that send it, not security: PASS is a clear-text password and
AH's key is the same 8 bytes. What an operator relies on: two nodes with the same type and password elect one
master; a wrong password or type is dropped (so the node takes over, as keepalived would) and counted in the
one counter that says why, with auth_errors their total.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.pure.vrrpd.nodes import Host, Lan, config, instance
from vrrpd.config import ConfigError, parse
from vrrpd.core import packet
from vrrpd.core.fsm import State
from vrrpd.core.packet import Advert, decode, encode

SRC, MCAST = IPv4Address("192.0.2.1"), packet.MCAST_V4
VIP = (IPv4Address("192.0.2.100"),)
KEY = b"secret\0\0"


def test_pass_puts_the_password_in_the_auth_data_and_decodes_it_back():
    advert = Advert(2, 51, 100, 100, VIP, packet.ChecksumForm.MESSAGE, packet.AUTH_PASS, KEY)
    data = encode(advert, src=SRC, dst=MCAST)
    assert data[4] == 1 and data[-8:] == KEY  # RFC 2338 5.3.6 type 1, 5.3.10 the password, NUL-padded
    assert decode(data, src=SRC, dst=MCAST, ttl=255) == advert


def test_ah_datagram_layout_and_digest_verify_as_keepalived_builds_them():
    message = encode(Advert(2, 51, 100, 100, VIP, auth_type=packet.AUTH_AH), src=SRC, dst=MCAST)
    datagram = packet.ah_datagram(message, src=SRC, dst=MCAST, key=KEY, sequence=7, ip_id=3)
    header, rest = datagram[:20], datagram[20:]
    assert header[9] == packet.IPPROTO_AH and header[1] == 0xC0 and header[8] == 255
    assert int.from_bytes(header[2:4], "big") == len(datagram) and int.from_bytes(header[4:6], "big") == 3
    ah = packet.parse_ah(rest)
    assert (ah.next_header, ah.spi, ah.sequence, ah.message) == (112, int(SRC), 7, message)
    assert ah.digest == packet.ah_digest(header, rest, message, KEY, unicast=False)
    # The digest ignores what routers may change (TOS, the checksum the kernel fills in) and covers the rest.
    mutable = bytearray(header)
    mutable[1], mutable[10:12] = 0, b"\x12\x34"
    assert packet.ah_digest(bytes(mutable), rest, message, KEY, False) == ah.digest
    assert packet.ah_digest(header, rest, message, b"other\0\0\0", False) != ah.digest
    assert packet.ah_digest(header[:8] + b"\x40" + header[9:], rest, message, KEY, False) != ah.digest
    assert packet.ah_digest(header[:8] + b"\x40" + header[9:], rest, message, KEY, True) == \
        packet.ah_digest(header, rest, message, KEY, True)  # unicast: the TTL is mutable too


# ---- config ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("keys", "message"), [
    ('version = 3\nauth_type = "PASS"\nauth_pass = "x"', "VRRPv3 has no authentication"),
    ('version = 2\nauth_type = "PASS"', "needs an auth_pass"),
    ('version = 2\nauth_pass = "x"', 'auth_type is "none"'),
    ('version = 2\nauth_type = "AH"\nauth_pass = "123456789"', "at most 8 bytes"),
    ('version = 2\nauth_type = "pass"\nauth_pass = "x"', "must be one of none, PASS, AH"),
])
def test_bad_authentication_settings_name_the_line_and_key(keys, message):
    text = instance(interval=1) + keys + "\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, "v.toml")
    problem = caught.value.problems[0]
    assert message in problem.message and problem.key.split(".")[-1] in ("auth_type", "auth_pass")
    assert str(problem).startswith("v.toml:") and problem.line > 6


# ---- two nodes -------------------------------------------------------------------------------------------


def v2_pair(auth_a: str, auth_b: str) -> tuple[Lan, Host, Host]:
    lan = Lan()
    a = Host(lan, "a", config(instance(priority=150, version=2, **_auth(auth_a))), "192.0.2.1/24")
    b = Host(lan, "b", config(instance(priority=100, version=2, **_auth(auth_b))), "192.0.2.2/24")
    a.start()
    b.start()
    lan.run_until(10.0)
    return lan, a, b


def _auth(spec: str) -> dict:
    if spec == "none":
        return {}
    kind, password = spec.split(":")
    return {"auth_type": kind, "auth_pass": password}


@pytest.mark.parametrize("kind", ["PASS", "AH"])
def test_same_type_and_password_elect_one_master(kind):
    lan, a, b = v2_pair(f"{kind}:secret", f"{kind}:secret")
    assert (a.state(), b.state()) == (State.MASTER, State.BACKUP)
    stats = b.node.router("VI_1").stats
    assert stats.adverts_rx >= 6 and stats.auth_errors == 0
    if kind == "AH":  # every advert went out as a whole datagram, its sequence one higher than the last
        sent = [tx for _, tx in a.sent]
        assert all(tx.header_included for tx in sent)
        sequences = [packet.parse_ah(p[20:]).sequence for tx in sent for _, p in tx.packets]
        assert sequences == list(range(1, len(sequences) + 1))


@pytest.mark.parametrize(("a_auth", "b_auth", "counter"), [
    ("PASS:secret", "PASS:wrong", "auth_failure"),
    ("AH:secret", "AH:wrong", "auth_failure"),
    ("PASS:secret", "none", "auth_mismatch"),
    ("AH:secret", "PASS:secret", "auth_mismatch"),
    ("none", "AH:secret", "auth_mismatch"),
])
def test_a_wrong_password_or_type_is_dropped_counted_and_the_node_takes_over(a_auth, b_auth, counter):
    lan, a, b = v2_pair(a_auth, b_auth)
    stats = b.node.router("VI_1").stats
    assert b.state() is State.MASTER  # it never heard a master it may believe (keepalived does the same)
    assert stats.adverts_rx == 0 and getattr(stats, counter) >= 3
    assert stats.auth_errors == stats.auth_invalid + stats.auth_mismatch + stats.auth_failure


def test_an_unknown_auth_type_is_invalid_and_counted_on_its_instance():
    lan, a, b = v2_pair("PASS:secret", "PASS:secret")
    bad = encode(Advert(2, 51, 200, 100, VIP), src=SRC, dst=MCAST)
    bad = bytearray(bad)
    bad[4], bad[6:8] = 3, b"\0\0"
    bad[6:8] = packet.internet_checksum(bytes(bad)).to_bytes(2, "big")
    b.node.receive("eth0", "ipv4", bytes(bad), IPv4Address("192.0.2.9"), MCAST, 255, lan.now)
    stats = b.node.router("VI_1").stats
    assert (stats.auth_invalid, stats.auth_errors) == (1, 1)


def test_ah_replay_a_changed_byte_or_a_forged_spi_is_an_auth_failure():
    lan, a, b = v2_pair("AH:secret", "AH:secret")
    last = [tx for _, tx in a.sent][-1]
    datagram = last.packets[0][1]
    src = IPv4Address("192.0.2.1")
    stats = b.node.router("VI_1").stats

    def hear(data: bytes) -> None:
        b.node.receive_ah("eth0", data[20:], data[:20], src, MCAST, 255, lan.now)

    hear(datagram)  # heard already: a replay
    datagram = packet.ah_datagram(datagram[44:], src=src, dst=MCAST, key=KEY,
                                  sequence=b.node.router("VI_1").ah_sequence + 1, ip_id=1)
    tampered = bytearray(datagram)
    tampered[5] ^= 1  # the IP id: the VRRP checksum still holds, the digest no longer does
    hear(bytes(tampered))
    router = b.node.router("VI_1")
    message = datagram[44:]
    forged = packet.ah_datagram(message, src=IPv4Address("192.0.2.77"), dst=MCAST, key=KEY,
                                sequence=router.ah_sequence + 5, ip_id=9)
    hear(forged[:12] + src.packed + forged[16:])  # another sender's SPI under our source address
    assert (stats.auth_failure, stats.auth_errors) == (3, 3)
    assert b.state() is State.BACKUP  # the genuine master is still believed


def test_a_returning_master_continues_the_sequence_it_heard():
    # keepalived keeps one sequence per virtual router: the node that took over continued it, and the
    # returning master, hearing it first as backup, must send higher numbers than that or be dropped.
    lan, a, b = v2_pair("AH:secret", "AH:secret")
    a.set_link(False)
    lan.run_until(lan.now + 10.0)
    assert b.state() is State.MASTER
    heard_by_b = b.node.router("VI_1").ah_sequence
    a.set_link(True)
    lan.run_until(lan.now + 10.0)
    assert (a.state(), b.state()) == (State.MASTER, State.BACKUP)
    assert a.node.router("VI_1").ah_sequence > heard_by_b
    assert b.node.router("VI_1").stats.auth_failure == 0

