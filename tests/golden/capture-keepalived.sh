#!/bin/sh
# How the keepalived golden adverts in tests/pure/vrrpd/test_packet.py were captured (keepalived 2.2.7, tshark 4.0):
# keepalived runs as master of four instances in namespace vpk-a, tshark listens on the veth end in vpk-b.
# Usage: capture-keepalived.sh OUT.pcap   (root; deletes its namespaces on exit). The test stores, per
# instance, the IP source/destination and the bytes after the IP header (scapy: bytes(pkt[IP].payload)).
set -eu
out=${1:?usage: capture-keepalived.sh OUT.pcap}
work=$(mktemp -d /tmp/vpk-capture.XXXXXX)
kpid=""
cleanup() {
    if [ -n "$kpid" ]; then kill "$kpid" 2>/dev/null || true; wait "$kpid" || true; fi
    ip netns del vpk-a 2>/dev/null || true
    ip netns del vpk-b 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
ip netns add vpk-a
ip netns add vpk-b
ip link add vpk-a0 netns vpk-a type veth peer name vpk-b0 netns vpk-b
for ns in vpk-a vpk-b; do
    ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n vpk-a addr add 192.0.2.1/24 dev vpk-a0
ip -n vpk-b addr add 192.0.2.2/24 dev vpk-b0
ip -n vpk-a link set lo up; ip -n vpk-a link set vpk-a0 up
ip -n vpk-b link set lo up; ip -n vpk-b link set vpk-b0 up
cat > "$work/keepalived.conf" <<CONF
global_defs {
    router_id vpk-a
}
vrrp_instance V3_IPV4 {
    state MASTER
    interface vpk-a0
    version 3
    virtual_router_id 51
    priority 150
    advert_int 1
    virtual_ipaddress {
        192.0.2.100/24
        192.0.2.101/24
    }
}
vrrp_instance V3_IPV4_UNICAST {
    state MASTER
    interface vpk-a0
    version 3
    virtual_router_id 54
    priority 120
    advert_int 1.25
    unicast_src_ip 192.0.2.1
    unicast_peer {
        192.0.2.2
    }
    virtual_ipaddress {
        192.0.2.104/24
    }
}
vrrp_instance V3_IPV6 {
    state MASTER
    interface vpk-a0
    version 3
    virtual_router_id 52
    priority 200
    advert_int 0.75
    virtual_ipaddress {
        2001:db8::100/64
        2001:db8::101/64
    }
}
vrrp_instance V2_IPV4 {
    state MASTER
    interface vpk-a0
    version 2
    virtual_router_id 53
    priority 100
    advert_int 2
    virtual_ipaddress {
        192.0.2.102/24
    }
}
CONF
ip netns exec vpk-b tshark -q -i vpk-b0 -f "ip proto 112 or ip6 proto 112" -a duration:7 -w "$work/cap.pcap" 2>"$work/tshark.log" &
tpid=$!
deadline=$(($(date +%s) + 10))
until grep -q "Capturing on" "$work/tshark.log"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "tshark did not start" >&2; exit 1; }
    sleep 0.1
done
ip netns exec vpk-a keepalived -n -l -D -f "$work/keepalived.conf" \
    -p "$work/k.pid" -r "$work/v.pid" -c "$work/c.pid" >"$work/keepalived.log" 2>&1 &
kpid=$!
wait $tpid
cp "$work/cap.pcap" "$out"
tail -5 "$work/keepalived.log"
