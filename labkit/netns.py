"""Lab harness: hosts as network namespaces on a bridge, processes in them, captures and address watchers.

Every lab gets a random id, so its namespaces (`vl<id>-<host>`, `vl<id>-sw`) never collide with another
run's. The bridge lives in its own "switch" namespace, never in the machine's own one; each host gets a
veth whose far end is a port of that bridge. `Lab.close()` always runs (context manager / fixture): it
stops every process it started by pid, then anything still left inside its namespaces, then deletes them.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, Callable, NamedTuple

PREFIX = "vl"  # namespace-name prefix of this project's labs
SWITCH = "sw"
BRIDGE = "br0"
IFNAME = "eth0"
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when cleaning up
CLONE_NEWNET = 0x40000000
KEEP_ENV = "VRRPD_LAB_KEEP"  # set to keep each lab's captures (its tmpdir) after close, for debugging

# Host sysctls: addresses usable at once (no DAD), and no router solicitations cluttering captures.
HOST_SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.router_solicitations=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.default.accept_ra=0",
)


class CommandFailed(subprocess.CalledProcessError):
    """A lab command exited non-zero; its message carries the command's stderr."""

    def __str__(self) -> str:
        detail = (self.stderr or "").strip() if isinstance(self.stderr, str) else self.stderr
        return f"{super().__str__()}\n{detail}"


def _run(args: list[str], check: bool = True, timeout: float = 10, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run(args, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, args, proc.stdout, proc.stderr)
    return proc


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.005, message: str = "") -> Any:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout:.3f}s")
        time.sleep(interval)


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(where: str | Host, fn: Callable[..., Any], *args, **kw) -> Any:
    """Call `fn` in a throwaway thread that has entered namespace `where` (a Host or a namespace name).

    setns() moves only the calling thread, so the test process itself never leaves its namespace; sockets
    (netlink, raw, packet) created by `fn` stay in that namespace for their whole life.
    """
    ns = where.ns if isinstance(where, Host) else where
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            with open(f"/run/netns/{ns}") as nsfile:
                _libc_setns(nsfile.fileno())
            result["value"] = fn(*args, **kw)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def netns_socket(where: str | Host, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace `where`."""
    return in_netns(where, socket.socket, family, type_, proto)


class Host:
    """One network namespace = one host, with `eth0` on the lab's bridge."""

    ifname = IFNAME

    def __init__(self, lab: Lab, name: str, index: int):
        self.lab = lab
        self.name = name
        self.ns = f"{lab.prefix}{lab.labid}-{name}"
        self.ipv4 = IPv4Address(f"192.0.2.{index}")
        self.ipv6 = IPv6Address(f"2001:db8::{index:x}")
        self.mac = f"02:76:6c:00:00:{index:02x}"
        self.peer = f"p-{name}"  # the bridge port (switch namespace) at the other end of eth0

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r})"

    def run(self, args: list[str], check: bool = True, timeout: float = 10, **kw) -> subprocess.CompletedProcess:
        """Run a command in this host's namespace and wait for it (stdout/stderr captured as text)."""
        return _run(["ip", "netns", "exec", self.ns, *args], check=check, timeout=timeout, **kw)

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        """Start a process in this host's namespace; the lab stops it by pid at close."""
        # `ip netns exec` execs the command, so the pid is the command's own.
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *args], **kw)
        self.lab.processes.append(proc)
        return proc

    def addresses(self, ifname: str = IFNAME) -> set[str]:
        """Addresses on `ifname` right now, without prefix lengths ("192.0.2.1", "fe80::...")."""
        out = _run(["ip", "-n", self.ns, "-j", "address", "show", "dev", ifname]).stdout
        return {str(ip_address(a["local"])) for link in json.loads(out or "[]") for a in link.get("addr_info", [])}

    def has_address(self, addr: str, ifname: str = IFNAME) -> bool:
        return str(ip_address(addr)) in self.addresses(ifname)

    def link_local(self) -> IPv6Address:
        for addr in self.addresses():
            ip = ip_address(addr)
            if ip.version == 6 and ip.is_link_local:
                return ip
        raise AssertionError(f"{self.name}: no IPv6 link-local address on {IFNAME}")

    def set_link(self, up: bool, *, host_side: bool = False) -> None:
        """Lose (or restore) the link truly: by default the bridge-side end goes down, as if the cable were
        pulled, so eth0 loses carrier but keeps its addresses; `host_side=True` sets eth0 itself down."""
        state = "up" if up else "down"
        if host_side:
            _run(["ip", "-n", self.ns, "link", "set", IFNAME, state])
        else:
            _run(["ip", "-n", self.lab.switch_ns, "link", "set", self.peer, state])

    def sysctl(self, *settings: str) -> None:
        self.run(["sysctl", "-qw", *settings])

    def recreate_veth(self, addresses: bool = True) -> None:
        """Delete the host's veth and make a new one (a new ifindex, as a container restart does), back on the
        bridge with the same MAC and, unless told otherwise, the same addresses."""
        _run(["ip", "-n", self.lab.switch_ns, "link", "del", self.peer])
        _run(["ip", "-n", self.lab.switch_ns, "link", "add", self.peer, "type", "veth", "peer", "name", IFNAME,
              "netns", self.ns])
        _run(["ip", "-n", self.lab.switch_ns, "link", "set", self.peer, "master", BRIDGE, "up"])
        self.sysctl(f"net.ipv6.conf.{IFNAME}.accept_dad=0", f"net.ipv6.conf.{IFNAME}.accept_ra=0")
        commands = ["link set {0} address {1} up".format(IFNAME, self.mac)]
        if addresses:
            commands += [f"address add {self.ipv4}/24 dev {IFNAME}", f"address add {self.ipv6}/64 dev {IFNAME} nodad"]
        _run(["ip", "-n", self.ns, "-batch", "-"], input="\n".join(commands) + "\n")

    def add_macvlan(self, name: str, address: str | None = None, mac: str | None = None) -> None:
        """A macvlan `name` on eth0 (bridge mode: its traffic reaches the lab's bridge), up, with `address`."""
        self.run(["ip", "link", "add", name, "link", IFNAME, *(["address", mac] if mac else []),
                  "type", "macvlan", "mode", "bridge"])
        self.sysctl(f"net.ipv6.conf.{name}.accept_dad=0", f"net.ipv6.conf.{name}.accept_ra=0")
        self.run(["ip", "link", "set", name, "up"])
        if address:
            self.run(["ip", "address", "add", address, "dev", name])

    def block_vrrp(self, on: bool) -> None:
        """Drop every VRRP packet (IP protocol 112) in and out of this host, links staying up: a partition
        of VRRP alone. nftables, in a table of the lab's own inside the host's namespace."""
        if on:
            self.run(["nft", "-f", "-"], input=(
                "table inet lab_vrrp_block {\n"
                " chain input { type filter hook input priority 0; policy accept; meta l4proto 112 drop; }\n"
                " chain output { type filter hook output priority 0; policy accept; meta l4proto 112 drop; }\n}\n"))
        else:
            self.run(["nft", "delete", "table", "inet", "lab_vrrp_block"])

    def delete_link(self, name: str) -> None:
        self.run(["ip", "link", "del", name])


PROBE_ETHERTYPE = 0x88B5  # IEEE 802 local experimental: capture-readiness probes, never real traffic


def _send_probe(ifname: str, mac: str, token: bytes) -> None:
    mac_bytes = bytes.fromhex(mac.replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.bind((ifname, 0))
        sock.send(mac_bytes + mac_bytes + PROBE_ETHERTYPE.to_bytes(2, "big") + token.ljust(46, b"\0"))


class Capture:
    """A packet capture (dumpcap) running in one namespace, written packet by packet to a pcapng file.

    dumpcap says "Capturing on" before it really sees packets, so the capture counts as started only once
    a probe frame (local experimental ethertype, sent from the host itself) has reached the file; `decode`
    leaves the probes out.
    """

    def __init__(self, host: Host, bpf: str, path: Path, ifname: str = IFNAME):
        self.host = host
        self.path = path
        self._out = open(path, "wb")
        self._err_path = path.with_suffix(".err")
        self._err = open(self._err_path, "wb")
        bpf = f"({bpf}) or ether proto {PROBE_ETHERTYPE:#x}" if bpf else ""
        # `-w -` makes dumpcap flush after every packet, so the file can be decoded while capturing.
        args = ["dumpcap", "-q", "-i", ifname, *(["-f", bpf] if bpf else []), "-w", "-"]
        self.proc = host.popen(args, stdout=self._out, stderr=self._err)
        token = secrets.token_bytes(16)
        mac = host.mac if ifname == IFNAME else _interface_mac(host, ifname)

        def probe_seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"dumpcap exited {self.proc.returncode}: {self._stderr()}")
            if token in self.path.read_bytes():
                return True
            in_netns(host, _send_probe, ifname, mac, token)
            return False

        try:
            wait_until(probe_seen, 10, 0.02, message=f"capture on {host.name} never saw its probe: {self._stderr()}")
        except BaseException:
            self.stop()
            raise

    def _stderr(self) -> str:
        return self._err_path.read_text(errors="replace")

    def stop(self) -> Path:
        """Stop capturing (idempotent) and return the pcapng path."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for handle in (self._out, self._err):
            handle.close()
        return self.path

    def decode(self, fields: list[str], display_filter: str = "") -> list[dict[str, str]]:
        """One dict per matching packet, field name -> tshark's text ("" when absent; repeats joined by ",")."""
        args = ["tshark", "-n", "-r", str(self.path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]
        not_probe = f"!(eth.type == {PROBE_ETHERTYPE:#x})"
        args += ["-Y", f"({display_filter}) && {not_probe}" if display_filter else not_probe]
        for name in fields:
            args += ["-e", name]
        proc = _run(args, check=False, timeout=30)
        # Decoding a file still being written may end mid-packet; what came before is still good.
        if proc.returncode != 0 and "cut short" not in proc.stderr and "appears to be damaged" not in proc.stderr:
            raise CommandFailed(proc.returncode, args, proc.stdout, proc.stderr)
        return [dict(zip(fields, line.split("\t"))) for line in proc.stdout.splitlines() if line.strip()]


class AddressEvent(NamedTuple):
    time: float  # time.monotonic() of this process when the event was read
    kind: str  # "add" | "del"
    address: str  # no prefix length


RTM_NEWADDR, RTM_DELADDR = 20, 21
RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x10, 0x100
IFA_ADDRESS, IFA_LOCAL = 1, 2
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def parse_address_events(data: bytes) -> list[tuple[str, str, int]]:
    """(kind, address, ifindex) for each RTM_NEWADDR / RTM_DELADDR in one netlink datagram."""
    events = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if msg_type in (RTM_NEWADDR, RTM_DELADDR):
            body = data[offset + _NLMSGHDR.size : offset + length]
            parsed = _parse_ifaddrmsg(body)
            if parsed:
                events.append(("add" if msg_type == RTM_NEWADDR else "del", *parsed))
        offset += (length + 3) & ~3
    return events


def _parse_ifaddrmsg(body: bytes) -> tuple[str, int] | None:
    if len(body) < _IFADDRMSG.size:
        return None
    family, _prefixlen, _flags, _scope, ifindex = _IFADDRMSG.unpack_from(body)
    attrs: dict[int, bytes] = {}
    offset = _IFADDRMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        attrs[kind] = body[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    # IPv4 names the local address IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point links).
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if family not in (socket.AF_INET, socket.AF_INET6) or raw is None:
        return None
    return socket.inet_ntop(family, raw), ifindex


class AddressWatcher:
    """Records netlink address events of one host, stamped with this process's monotonic clock.

    The netlink socket is subscribed before `start()` returns, so nothing that happens afterwards is missed.
    """

    def __init__(self, host: Host):
        self.host = host
        self._events: list[AddressEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AddressWatcher:
        sock = netns_socket(self.host.ns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.settimeout(0.05)
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name=f"addrwatch-{self.host.ns}", daemon=True)
        self._thread.start()
        self.host.lab.closers.append(self.stop)
        return self

    def _read(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            now = time.monotonic()
            with self._lock:
                self._events += [AddressEvent(now, kind, addr) for kind, addr, _ in parse_address_events(data)]

    def events(self) -> list[AddressEvent]:
        with self._lock:
            return list(self._events)

    def first_add(self, address: str, after: float = 0.0) -> float | None:
        """When `address` was first added at or after `after` (monotonic), or None if it has not been."""
        times = [e.time for e in self.events() if e.kind == "add" and e.address == address and e.time >= after]
        return min(times) if times else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Lab:
    """N hosts on one bridge; always `close()` it (use it as a context manager or via the `lab` fixture)."""

    def __init__(self, n_hosts: int, names: list[str] | None = None, prefix: str = PREFIX, links: int = 1):
        names = list(names) if names else [chr(ord("a") + i) for i in range(n_hosts)]
        if len(names) != n_hosts or len(set(names)) != n_hosts:
            raise ValueError(f"need {n_hosts} distinct host names, got {names}")
        if n_hosts > 250 or any(not n.replace("-", "").isalnum() or len(n) > 12 for n in names):
            raise ValueError(f"host names must be short alphanumerics (dashes allowed): {names}")
        self.labid = secrets.token_hex(3)
        self.prefix = prefix  # namespaces are <prefix><labid>-<host>: a suite can tell its own apart
        if not 1 <= links <= 8:
            raise ValueError(f"1..8 links, not {links}")
        self.links = links  # eth0 on br0, and eth1.. on their own bridges (IPv6 only: 2001:db8:<k>::<host>/64)
        self.switch_ns = f"{prefix}{self.labid}-{SWITCH}"
        self.hosts = [Host(self, name, i + 1) for i, name in enumerate(names)]
        self.processes: list[subprocess.Popen] = []
        self.closers: list[Callable[[], None]] = []
        self.namespaces: list[str] = []
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{prefix}{self.labid}-"))
        self._closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def _add_namespace(self, ns: str) -> None:
        if Path(f"/run/netns/{ns}").exists():
            raise RuntimeError(f"namespace {ns} already exists")
        _run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)

    def _build(self) -> None:
        self._add_namespace(self.switch_ns)
        # The switch only forwards: no IPv6 of its own (no MLD/RS noise), no STP delay, no snooping that
        # would hold back multicast groups nobody reported.
        _run(["ip", "netns", "exec", self.switch_ns, "sysctl", "-qw",
              "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        batch = [
            "link set lo up",
            f"link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
            f"link set {BRIDGE} up",
        ]
        for host in self.hosts:
            self._add_namespace(host.ns)
            host.sysctl(*HOST_SYSCTLS)
            batch += [f"link add {host.peer} type veth peer name {IFNAME} netns {host.ns}",
                      f"link set {host.peer} master {BRIDGE} up"]
        for k in range(1, self.links):  # more links: each its own broadcast domain, its own bridge
            batch += [f"link add br{k} type bridge stp_state 0 forward_delay 0 mcast_snooping 0", f"link set br{k} up"]
            batch += [cmd for host in self.hosts for cmd in (
                f"link add {host.peer}-{k} type veth peer name eth{k} netns {host.ns}",
                f"link set {host.peer}-{k} master br{k} up")]
        _run(["ip", "-n", self.switch_ns, "-batch", "-"], input="\n".join(batch) + "\n")
        for host in self.hosts:
            if self.links > 1:
                index = self.hosts.index(host) + 1
                host.sysctl(*(f"net.ipv6.conf.eth{k}.{key}=0" for k in range(1, self.links)
                              for key in ("accept_dad", "accept_ra")))
                _run(["ip", "-n", host.ns, "-batch", "-"], input="".join(
                    f"link set eth{k} up\naddress add 2001:db8:{k}::{index:x}/64 dev eth{k} nodad\n"
                    for k in range(1, self.links)))
        for host in self.hosts:
            host.sysctl(f"net.ipv6.conf.{IFNAME}.accept_dad=0", f"net.ipv6.conf.{IFNAME}.accept_ra=0")
            commands = [
                "link set lo up",
                f"link set {IFNAME} address {host.mac} up",
                f"address add {host.ipv4}/24 dev {IFNAME}",
                f"address add {host.ipv6}/64 dev {IFNAME} nodad",
            ]
            _run(["ip", "-n", host.ns, "-batch", "-"], input="\n".join(commands) + "\n")
        for host in self.hosts:
            wait_until(lambda h=host: _has_link_local(h), 5, 0.01, message=f"{host.name}: no link-local address")

    def capture(self, host: Host, bpf: str, ifname: str = IFNAME) -> Capture:
        """Start capturing on `host`'s interface with a BPF filter; stop() it (or let close() do it)."""
        path = self.tmpdir / f"{host.name}-{len(self.processes)}.pcapng"
        capture = Capture(host, bpf, path, ifname)
        self.closers.append(capture.stop)
        return capture

    def close(self) -> None:
        """Stop every process and watcher, then delete every namespace this lab made (idempotent)."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception as exc:  # keep cleaning up
                errors.append(f"{closer}: {exc}")
        _stop_processes(self.processes)
        for ns in reversed(self.namespaces):
            _kill_namespace_pids(ns)
            proc = _run(["ip", "netns", "delete", ns], check=False)
            if proc.returncode != 0 and Path(f"/run/netns/{ns}").exists():
                errors.append(f"ip netns delete {ns}: {proc.stderr.strip()}")
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if errors:
            raise RuntimeError("lab cleanup incomplete: " + "; ".join(errors))


def _interface_mac(host: Host, ifname: str) -> str:
    out = _run(["ip", "-n", host.ns, "-j", "link", "show", "dev", ifname]).stdout
    return json.loads(out)[0]["address"]


def _has_link_local(host: Host) -> bool:
    try:
        host.link_local()
    except AssertionError:
        return False
    return True


def _stop_processes(processes: list[subprocess.Popen]) -> None:
    alive = [p for p in processes if p.poll() is None]
    for proc in alive:
        _signal(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for proc in alive:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_namespace_pids(ns: str) -> None:
    """Whatever still runs inside our namespace was started by this lab (e.g. a daemon's forked child)."""
    proc = _run(["ip", "netns", "pids", ns], check=False)
    pids = [int(p) for p in proc.stdout.split() if p.isdigit()]
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    if pids:
        wait_until(lambda: not any(pid_alive(p) for p in pids), STOP_GRACE, 0.01, message=f"pids left in {ns}: {pids}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
