"""tshark's verdict on what vrrpd sends: adverts with good checksums, announcements as ARP and NA."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address as V4
from ipaddress import IPv6Address as V6

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from tests.support import require_program
from vrrpd.core.packet import MCAST_V4, MCAST_V6, Advert, ChecksumForm, encode
from vrrpd.core.frames import eui64_link_local, garp_frame, na_frame

SRC4 = V4("192.0.2.1")
SRC6 = V6("fe80::1")


def ip_packet(message: bytes, src, dst):
    if src.version == 4:
        return IP(src=str(src), dst=str(dst), proto=112, ttl=255) / Raw(message)
    return IPv6(src=str(src), dst=str(dst), nh=112, hlim=255) / Raw(message)


def tshark_or_skip() -> str:
    return require_program("tshark")


def tshark_fields(tshark: str, pcap, *prefs: str) -> list[list[str]]:
    options = [arg for pref in prefs for arg in ("-o", pref)]
    out = subprocess.run(
        [tshark, "-r", str(pcap), *options, "-T", "fields", "-E", "separator=,",
         "-e", "vrrp.version", "-e", "vrrp.virt_rtr_id", "-e", "vrrp.checksum.status"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return [line.split(",") for line in out.splitlines()]


def test_tshark_decodes_our_adverts_with_good_checksums(tmp_path):
    tshark = tshark_or_skip()
    v4 = [
        (Advert(3, 51, 150, 100, (V4("192.0.2.100"), V4("192.0.2.101"))), MCAST_V4),
        (Advert(3, 54, 120, 125, (V4("192.0.2.104"),)), V4("192.0.2.2")),
        (Advert(2, 53, 100, 300, (V4("192.0.2.102"),)), MCAST_V4),
        (Advert(3, 55, 100, 100, (V4("192.0.2.105"),), ChecksumForm.MESSAGE), MCAST_V4),
    ]
    v6 = [(Advert(3, 52, 200, 75, (V6("2001:db8::100"),)), MCAST_V6)]
    # One file per family: a pcap has one link type, and scapy writes IPv4 and IPv6 as different ones.
    wrpcap(str(tmp_path / "v4.pcap"), [ip_packet(encode(a, src=SRC4, dst=d), SRC4, d) for a, d in v4])
    wrpcap(str(tmp_path / "v6.pcap"), [ip_packet(encode(a, src=SRC6, dst=d), SRC6, d) for a, d in v6])
    good, bad = "1", "0"  # Wireshark's PROTO_CHECKSUM_E_GOOD / _BAD
    # Default preferences: VRRPv3 over IPv4 is checked with the pseudo-header (as keepalived sends it).
    assert tshark_fields(tshark, tmp_path / "v4.pcap") == [
        ["3", "51", good], ["3", "54", good], ["2", "53", good], ["3", "55", bad]]
    assert tshark_fields(tshark, tmp_path / "v6.pcap") == [["3", "52", good]]
    # vrrp.v3_checksum_as_in_v2 makes tshark check IPv4 VRRPv3 the RFC 9568 way (message only).
    assert tshark_fields(tshark, tmp_path / "v4.pcap", "vrrp.v3_checksum_as_in_v2:TRUE") == [
        ["3", "51", bad], ["3", "54", bad], ["2", "53", good], ["3", "55", good]]


def test_tshark_decodes_our_announcements(tmp_path):
    tshark = tshark_or_skip()
    mac = "02:76:6c:00:00:01"
    link_local = eui64_link_local(mac)
    frames = [garp_frame(V4("192.0.2.100"), mac), na_frame(V6("2001:db8::100"), mac, link_local, router=True),
              na_frame(V6("2001:db8::101"), mac, link_local)]
    wrpcap(str(tmp_path / "announce.pcap"), [Ether(f) for f in frames])
    fields = ["frame.protocols", "eth.dst", "arp.opcode", "arp.isgratuitous", "arp.src.hw_mac", "arp.src.proto_ipv4",
              "ipv6.src", "ipv6.dst", "ipv6.hlim", "icmpv6.nd.na.target_address", "icmpv6.nd.na.flag.r",
              "icmpv6.nd.na.flag.s", "icmpv6.nd.na.flag.o", "icmpv6.opt.linkaddr", "icmpv6.checksum.status"]
    out = subprocess.run([tshark, "-r", str(tmp_path / "announce.pcap"), "-T", "fields", "-E", "separator=/t",
                          *(arg for f in fields for arg in ("-e", f))],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    rows = [dict(zip(fields, line.split("\t"))) for line in out.splitlines()]
    assert [r["frame.protocols"] for r in rows] == ["eth:ethertype:arp", "eth:ethertype:ipv6:icmpv6",
                                                    "eth:ethertype:ipv6:icmpv6"]
    garp = {k: v for k, v in rows[0].items() if k.startswith(("arp", "eth"))}
    assert garp == {"eth.dst": "ff:ff:ff:ff:ff:ff", "arp.opcode": "1", "arp.isgratuitous": "1",
                    "arp.src.hw_mac": mac, "arp.src.proto_ipv4": "192.0.2.100"}
    for row, target, router in ((rows[1], "2001:db8::100", "1"), (rows[2], "2001:db8::101", "0")):
        assert {k: v for k, v in row.items() if k.startswith(("ipv6", "icmpv6", "eth"))} == {
            "eth.dst": "33:33:00:00:00:01", "ipv6.src": str(link_local), "ipv6.dst": "ff02::1", "ipv6.hlim": "255",
            "icmpv6.nd.na.target_address": target, "icmpv6.nd.na.flag.r": router, "icmpv6.nd.na.flag.s": "0",
            "icmpv6.nd.na.flag.o": "1", "icmpv6.opt.linkaddr": mac, "icmpv6.checksum.status": "1"}

