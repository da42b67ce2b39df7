"""The Node's receive path: a message decoded, routed by VRID, checked against its instance, counted, believed."""

from __future__ import annotations

from daemonkit.net import Address
from vrrpd.core import fsm, packet
from vrrpd.core.checks import addresses_differ, check_advert
from vrrpd.core.events import FifoLine, Routed
from vrrpd.core.fsm import State
from vrrpd.core.notify import fifo_line
from vrrpd.core.router import Router

MAX_HEARD = 4096  # distinct accepted messages remembered (a LAN repeats a few per instance)


class Hearing:
    """A part of `Node` (vrrpd.core.node), which holds all the state; one concern per file, as the node's sections."""

    def receive(self, ifname: str, family: str, payload: bytes, src: Address, dst: Address, ttl: int,
                now: float) -> list[Routed]:
        """One received message: decoded, routed by VRID, checked against its instance, counted, then believed.

        A master re-sends the same bytes every interval: a message accepted once is remembered by its bytes
        (with the very address objects, TTL and link it came with), and its twin skips decoding and checks."""
        heard = self._heard.get(payload)
        if heard is not None and heard[0] is src and heard[1] is dst and heard[2] == ttl \
                and heard[3] == ifname and heard[4] == family:
            return self._believe(heard[5], heard[6], heard[7], src, now)
        routers = self._by_link.get((ifname, family), {})
        decoded = self._decode(routers, payload, src, dst, ttl)
        if decoded is None:
            return []
        r, result = decoded
        if src == r.primary:
            if payload in (p for _, p in r.cache.adverts(r.fsm.effective_priority)):
                return []  # our own advert, looped back (unicast to ourselves)
            # Another host sends from our address (cloned VMs share a MAC and so an EUI-64 link-local; a
            # duplicate IPv4 address): neither can tell the other's adverts from its own. Say so.
            r.stats.duplicate_address += 1
            self._warn(r, "duplicate_address", now, address=str(src),
                       detail="another host sends VRRP from this node's own source address")
            return self._finish(now)
        reason = check_advert(result, src, r.inst, r.vips)
        if reason is not None:
            r.stats.count_drop(reason)
            if reason is packet.DropReason.ADDRESS_LIST:
                self._warn(r, "address_list_mismatch", now, src=str(src), action="dropped (VRRPv2, RFC 3768 7.1)",
                           theirs=sorted(map(str, result.addresses)), ours=sorted(map(str, r.vips)))
            return self._finish(now) if self._out else []
        differ = result.version == 3 and addresses_differ(result, r.vips)
        if len(self._heard) >= MAX_HEARD:
            self._heard.clear()
        self._heard[payload] = (src, dst, ttl, ifname, family, r, result, differ)
        return self._believe(r, result, differ, src, now)

    def receive_ah(self, ifname: str, data: bytes, ip_header: bytes, src: Address, dst: Address, ttl: int,
                   now: float) -> list[Routed]:
        """An IPv4 datagram of protocol 51: an AH header (RFC 2402), then, if it protects VRRP, a message for a
        router with auth_type AH, whose digest, SPI and sequence number are checked as keepalived does."""
        ah = packet.parse_ah(data)
        routers = self._by_link.get((ifname, "ipv4"), {})
        if isinstance(ah, packet.Drop):
            target = routers.get(data[packet.AH_HEADER_LEN + 1]) if len(data) > packet.AH_HEADER_LEN + 1 else None
            (target.stats if target else self.global_stats).count_drop(ah.reason)
            return []
        if ah.next_header != packet.VRRP_PROTO:
            return []  # AH protecting something else: not ours to judge
        decoded = self._decode(routers, ah.message, src, dst, ttl)
        if decoded is None:
            return []
        r, result = decoded
        if src == r.primary:
            return []
        reason = check_advert(result, src, r.inst, r.vips, with_ah=True)
        if reason is None:
            unicast = bool(r.inst.unicast_peers)
            expected = packet.ah_digest(ip_header, data, ah.message, r.inst.auth_key, unicast)
            if not packet.digest_matches(expected, ah.digest) or ah.spi != int(src) or ah.sequence <= r.ah_sequence:
                reason = packet.DropReason.AUTH_FAILURE
        if reason is not None:
            r.stats.count_drop(reason)
            return []
        r.ah_sequence = ah.sequence
        return self._believe(r, result, False, src, now)  # VRRPv2: a differing address list was dropped above

    def _decode(self, routers: dict[int, Router], message: bytes, src: Address, dst: Address,
                ttl: int) -> tuple[Router, packet.Advert] | None:
        """The message decoded and routed by its VRID, or None: dropped and counted, on the instance whose VRID
        byte it carries, else router-wide."""
        if ttl != packet.REQUIRED_TTL:
            ttl = self._ttl_seen(routers, message, dst, ttl)
        result = packet.decode(message, src=src, dst=dst, ttl=ttl)
        if isinstance(result, packet.Drop):
            target = routers.get(message[1]) if len(message) > 1 else None
            (target.stats if target else self.global_stats).count_drop(result.reason)
            return None
        r = routers.get(result.vrid)
        if r is None:
            self.global_stats.count_drop(packet.DropReason.VRID)
            return None
        return r, result

    @staticmethod
    def _ttl_seen(routers: dict[int, Router], message: bytes, dst: Address, ttl: int) -> int:
        """The TTL the RFC 5798 7.1 check is to see: a unicast advert for an instance whose peers are beyond a
        router (unicast_ttl below 255) passes whatever TTL is left; keepalived checks none for unicast."""
        r = routers.get(message[1]) if len(message) > 1 else None
        if r is not None and r.inst.unicast_peers and r.inst.unicast_ttl < packet.REQUIRED_TTL \
                and not dst.is_multicast and ttl > 0:
            return packet.REQUIRED_TTL
        return ttl

    def _believe(self, r: Router, result: packet.Advert, differ: bool, src: Address, now: float) -> list[Routed]:
        stats = r.stats
        if differ:
            stats.address_list_errors += 1
            self._warn(r, "address_list_mismatch", now, src=str(src), action="accepted (RFC 5798 7.1)",
                       theirs=sorted(map(str, result.addresses)), ours=sorted(map(str, r.vips)))
        if result.priority == fsm.OWNER_PRIORITY and r.fsm.params.owner:
            self._warn(r, "owner_conflict", now, src=str(src), detail="both routers are configured as address "
                       "owner (priority 255); the lower primary address yields (RFC 9568 6.4.3)")
        stats.adverts_rx += 1
        if r.fsm.state is State.MASTER and result.priority >= r.fsm.effective_priority:
            stats.split_brain_seen += 1
        elif r.fsm.state is State.MASTER and result.priority and self.config.global_.notify_fifo:
            # keepalived's MASTER_RX_LOWER_PRI event: hosts may have followed the other node meanwhile.
            self._emit(r, FifoLine(fifo_line("INSTANCE", r.inst.name, "MASTER_RX_LOWER_PRI",
                                             r.fsm.effective_priority)))
        if result.priority == 0:
            stats.priority_zero_rx += 1
        if result.checksum_form is packet.ChecksumForm.MESSAGE and result.version == 3:
            stats.checksum_rfc9568_rx += 1
        effects = r.fsm.receive_advert(result, src, now) if r.fsm.state is not State.STOP else []
        if not effects and not self._out:
            # The common case, a backup hearing its master: nothing to do but keep the timer right (a
            # later deadline is found when the earlier entry comes due; an earlier one, Skew_Time after a
            # priority 0, is scheduled now).
            deadline = r.fsm.next_deadline()
            if deadline is not None and (r.scheduled is None or deadline < r.scheduled):
                self._schedule(r, deadline, now)
            return []
        self._apply(r, effects, now)
        return self._finish(now)
