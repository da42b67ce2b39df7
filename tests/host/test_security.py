"""Security (issue 6.4): csserver's bearer token, the root-only control socket, unicast peer filtering, and
the capabilities the systemd units grant. (Peer filtering on the wire, under a flood of spoofed adverts, is
tests/lab/test_hostile_lab.py; here is the rule itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from ipaddress import ip_address
from pathlib import Path

import pytest
import requests

from tests import support
from tests.host.csserver_live import live_csserver
from tests.support import unit_file
from vrrpd.config import parse as parse_vrrpd
from vrrpd.io.control import ControlServer
from vrrpd.core.packet import Advert, DropReason
from vrrpd.core.checks import check_advert

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-Token_0123456789"


# ---- csserver: [node] token_file ---------------------------------------------------------------------

@pytest.fixture
def guarded(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with live_csserver(tmp_path, extra=f'token_file = "{token_file}"') as live:
        yield live


def v1_requests(haid: str) -> list[tuple[str, str, bytes | None]]:
    return [("POST", "/v1/contexts", b'{"labels": {"a": "b"}}'), ("GET", f"/v1/contexts/{haid}", None),
            ("DELETE", f"/v1/contexts/{haid}", None), ("GET", f"/v1/contexts/{haid}/values", None),
            ("PUT", f"/v1/contexts/{haid}/values/k", b"1"), ("GET", f"/v1/contexts/{haid}/values/k", None),
            ("DELETE", f"/v1/contexts/{haid}/values/k", None), ("GET", "/v1/nowhere", None)]


WRONG_AUTHORIZATION = [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                       f"Bearer x{TOKEN}", f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}", f"Bearer {TOKEN.upper()}",
                       f"Bearer {TOKEN} {TOKEN}", "Bearer \u00e9t\u00e9"]


def test_the_api_refuses_requests_without_the_right_bearer_token_and_writes_nothing(guarded):
    good = {"Authorization": f"Bearer {TOKEN}"}
    created = requests.post(f"{guarded.url}/v1/contexts", headers=good, timeout=10)
    assert created.status_code == 201, created.text
    haid = created.json()["haid"]
    assert requests.put(f"{guarded.url}/v1/contexts/{haid}/values/k", data=b"0", headers=good, timeout=10).ok
    before = guarded.rows()
    for authorization in WRONG_AUTHORIZATION:
        headers = {} if authorization is None else {"Authorization": authorization.encode("utf-8")}
        for method, path, body in v1_requests(haid):
            answer = requests.request(method, f"{guarded.url}{path}", data=body, headers=headers, timeout=10)
            assert answer.status_code == 401, (authorization, method, path, answer.status_code, answer.text)
            assert answer.json()["error"] == "unauthorized" and "Bearer" in answer.json()["detail"]
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")  # RFC 9110 11.6.1, RFC 6750 3
    # A token anywhere but the Authorization header does not count either.
    assert requests.get(f"{guarded.url}/v1/contexts/{haid}?access_token={TOKEN}", timeout=10).status_code == 401
    assert requests.get(f"{guarded.url}/v1/contexts/{haid}", cookies={"token": TOKEN}, timeout=10).status_code == 401
    assert guarded.rows() == before, "a refused request changed the store"
    # The right token, in any case of the scheme name (RFC 9110 11.1), with surrounding blanks.
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "):
        answer = requests.get(f"{guarded.url}/v1/contexts/{haid}/values/k", headers={"Authorization": authorization},
                              timeout=10)
        assert answer.status_code == 200 and answer.json()["value"] == 0, (authorization, answer.text)


def test_an_unauthenticated_body_is_never_read(guarded):
    """401 comes before the body: a stranger cannot make the node read (or wait for) megabytes."""
    port = int(guarded.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PUT /v1/contexts/4-4--cs-acs-b1/values/k HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000000\r\n\r\n")  # and no body at all
        head = conn.recv(4096)
    assert head.startswith(b"HTTP/1.1 401 "), head


def test_health_metrics_and_the_api_description_stay_open(guarded):
    """Probes (vrrpd's check_script, Prometheus) run without the token; what they show is no context data."""
    assert requests.get(f"{guarded.url}/healthz", timeout=10).json() == {"status": "ok", "alias": "cs-a"}
    assert requests.get(f"{guarded.url}/metrics", timeout=10).status_code == 200
    doc = requests.get(f"{guarded.url}/openapi.json", timeout=10).json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    open_paths = {path for path, item in doc["paths"].items() if any(op.get("security") == [] for op in item.values()
                                                                      if isinstance(op, dict))}
    assert open_paths == {"/healthz", "/metrics", "/openapi.json"}


def test_without_a_token_file_no_token_is_asked(tmp_path):
    with live_csserver(tmp_path) as live:
        assert requests.post(f"{live.url}/v1/contexts", timeout=10).status_code == 201
        assert "security" not in requests.get(f"{live.url}/openapi.json", timeout=10).json()


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read {token}: No such file or directory"),
    ("\n", "{token} must hold one token of printable ASCII without spaces"),
    ("two words\n", "{token} must hold one token of printable ASCII without spaces"),
    ("t\u00f6ken\n", "{token} must hold one token of printable ASCII without spaces"),
])
def test_check_refuses_an_unusable_token_file_at_its_line(tmp_path, content, problem):
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    config = tmp_path / "cs.toml"
    sample = (REPO / "conf" / "csserver-a.toml").read_text()
    config.write_text(sample.replace('listen = "0.0.0.0:9100"', f'listen = "0.0.0.0:9100"\ntoken_file = "{token}"'))
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if text.startswith("token_file"))
    for command in ("check", "run"):  # run refuses to start, as check predicts
        proc = subprocess.run([sys.executable, "-m", "csserver", command, "-c", str(config)], capture_output=True,
                              text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 2, proc
        assert proc.stderr == f"{config}:{line}: node.token_file: {problem.format(token=token)}\n"


# ---- vrrpd: the control socket is root's alone -------------------------------------------------------

def require_root() -> None:
    support.require_root("needs root to act as another user")


def connect_as_nobody(path: str) -> str:
    """Connect to `path` from a child process running as nobody (uid and gid 65534, no groups): 'connected'
    or the error's name. A bare fork: the child makes a few system calls and exits, it runs nothing else."""
    outcomes = {0: "connected", 1: "EACCES", 2: "other error"}
    pid = os.fork()
    if pid == 0:  # the child
        code = 2
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(5)
                probe.connect(path)
            code = 0
        except PermissionError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return outcomes.get(os.waitstatus_to_exitcode(status), f"status {status}")


def test_control_socket_refuses_other_users_even_under_a_permissive_umask():
    require_root()
    # A directory everyone may enter, so that only the socket's own mode stands between nobody and it.
    directory = tempfile.mkdtemp(prefix="vrrpd-sock-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "vrrpd.sock")

    async def scenario():
        old = os.umask(0)  # an operator's (or a unit's) umask must not widen the socket
        try:
            server = ControlServer(path, lambda: {"ok": True})
            await server.start()
        finally:
            os.umask(old)
        try:
            mode = os.stat(path).st_mode & 0o777
            refused = connect_as_nobody(path)  # the listen backlog completes the connect: no need to accept
            os.chmod(path, 0o666)  # the control: with the mode opened up, the same probe gets in
            allowed = connect_as_nobody(path)
        finally:
            await server.close()
        return mode, refused, allowed

    try:
        mode, refused, allowed = asyncio.run(scenario())
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    assert (mode, refused, allowed) == (0o600, "EACCES", "connected")


# ---- vrrpd: unicast mode hears only its configured peers ---------------------------------------------

def instance(**extra):
    lines = "".join(f"{key} = {value}\n" for key, value in extra.items())
    text = (f'[[instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 51\nvirtual_ipaddress = ["192.0.2.100/24"]\n'
            f"{lines}")
    return parse_vrrpd(text).instance("VI_1")


def advert(priority: int = 100) -> Advert:
    return Advert(version=3, vrid=51, priority=priority, adver_int_cs=100, addresses=(ip_address("192.0.2.100"),))


def vips(inst):
    return frozenset(v.ip for v in inst.virtual_ipaddress)


def test_unicast_instances_drop_adverts_from_anyone_but_their_peers():
    unicast = instance(unicast_src='"192.0.2.1"', unicast_peers='["192.0.2.2", "192.0.2.3"]')
    for peer in ("192.0.2.2", "192.0.2.3"):
        assert check_advert(advert(), ip_address(peer), unicast, vips(unicast)) is None
    # Strangers on the link, even claiming to own the address (priority 255) or to resign (priority 0).
    for stranger in ("192.0.2.4", "192.0.2.1", "198.51.100.2", "0.0.0.0", "2001:db8::2"):
        for priority in (0, 100, 255):
            assert check_advert(advert(priority), ip_address(stranger), unicast, vips(unicast)) is DropReason.PEER, stranger


def test_multicast_instances_hear_any_source():
    assert check_advert(advert(), ip_address("192.0.2.77"), instance(), vips(instance())) is None


# ---- systemd: only the capabilities each daemon needs -------------------------------------------------

def capabilities(service) -> tuple[set[str], set[str]]:
    return set(service.get("CapabilityBoundingSet", "").split()), set(service.get("AmbientCapabilities", "").split())


def test_vrrpd_runs_with_net_admin_and_net_raw_only():
    service = unit_file("vrrpd.service")["Service"]
    # CAP_NET_RAW: raw VRRP sockets, AF_PACKET announcements, SO_BINDTODEVICE; CAP_NET_ADMIN: VIPs, multicast.
    assert capabilities(service) == ({"CAP_NET_ADMIN", "CAP_NET_RAW"}, {"CAP_NET_ADMIN", "CAP_NET_RAW"})
    assert service["NoNewPrivileges"] == "yes"
    # The control socket's directory is root's alone, and so is everything the daemon creates.
    assert (service["RuntimeDirectory"], service["RuntimeDirectoryMode"], service["UMask"]) == ("vrrpd", "0700", "0077")
    assert "AF_PACKET" in service["RestrictAddressFamilies"].split()


def test_csserver_runs_with_no_capability_as_its_own_user():
    service = unit_file("csserver.service")["Service"]
    assert capabilities(service) == (set(), set())
    assert "CapabilityBoundingSet" in service and "AmbientCapabilities" in service  # empty, not merely unset
    # The package's system user (sysusers.d), never root; it owns /var/lib/csserver across restarts.
    assert service["User"] == service["Group"] == "csserver" and "DynamicUser" not in service
    assert service["NoNewPrivileges"] == "yes"
    assert "AF_PACKET" not in service["RestrictAddressFamilies"].split()
    assert (service["StateDirectoryMode"], service["UMask"]) == ("0700", "0077")
