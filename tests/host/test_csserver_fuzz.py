"""Hostile HTTP at a live csserver (issue 6.2): schemathesis against /openapi.json, oversized and malformed
bodies, malformed and foreign HAIDs. Always a 4xx with a JSON reason, never a 5xx, never a partial write.

The server is the real `csserver.server.serve` on 127.0.0.1 in a thread of this process (SQLite in a
temporary directory); it holds VIP-A (StaticAddresses), so it serves cs-a's contexts as their primary.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from structlog.testing import capture_logs

from csserver import openapi
from csserver.haid import MalformedHaid, alias_problem, decode, encode
from csserver.server import MAX_REQUEST_LINE

from tests.host.csserver_live import MAX_BODY, Live, live_csserver, sequential_ids


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    with sequential_ids(), live_csserver(tmp_path_factory.mktemp("csserver")) as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# ---- schemathesis: every documented operation, generated from /openapi.json ---------------------------

DOCUMENT = json.loads(json.dumps(openapi.document()))
HAID_PATTERN = DOCUMENT["paths"]["/v1/contexts/{haid}"]["parameters"][0]["schema"]["pattern"]
ALIASES = st.from_regex(r"[A-Za-z0-9_.]([A-Za-z0-9_.]|-(?!-)){0,7}", fullmatch=True).filter(
    lambda a: alias_problem(a) is None)
# The exact HAID rule (`format: haid`): mostly the server's own contexts (ids 1..3 exist from the start, the
# generated POSTs add more), else the partner's and strangers'.
OWN_HAIDS = st.builds(encode, st.just("cs-a"), st.just("cs-b"), st.integers(1, 40))
ANY_HAIDS = st.builds(encode, st.sampled_from(["cs-a", "cs-b"]) | ALIASES, st.sampled_from(["cs-b", "cs-a"]) | ALIASES,
                      st.integers(1, 3) | st.integers(1, 2**63 - 1))
HAIDS = st.one_of(OWN_HAIDS, OWN_HAIDS, ANY_HAIDS.filter(lambda haid: re.fullmatch(HAID_PATTERN, haid) is not None))
schemathesis.openapi.format("haid", HAIDS)

# A schema-valid request may still meet what a schema cannot say: 421 is the answer to a valid HAID
# that another node serves (SPEC 6 step 2-3).
SCHEMATHESIS = schemathesis.Config.from_str("""
[checks.positive_data_acceptance]
expected-statuses = ["2xx", 401, 404, 409, 421]

# A request for a context this node does not serve is answered 421 before its body is read (a body that may
# be large or malformed is the serving node's business): that refuses it too.
[checks.negative_data_rejection]
expected-statuses = [400, 401, 404, 405, 409, 413, 415, 421]
""")
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SCHEMATHESIS)


@pytest.fixture(scope="module")
def contexts(live, http) -> list[str]:
    """Three contexts of cs-a's, ids 1..3, with a value each, for generated HAIDs to find."""
    haids = []
    for n in range(3):
        answer = http.post(f"{live.url}/v1/contexts", json={"labels": {"n": str(n)}}, timeout=10)
        assert answer.status_code == 201, answer.text
        haids.append(answer.json()["haid"])
        assert http.put(f"{live.url}/v1/contexts/{haids[-1]}/values/k", json=n, timeout=10).status_code == 200
    assert haids == [f"4-4--cs-acs-b{n}" for n in (1, 2, 3)]
    return haids


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_per_its_schema_and_never_5xx(case, live, http, contexts):
    key = (case.path_parameters or {}).get("key")
    if case.meta is not None and case.meta.generation.mode.is_positive and isinstance(key, str):
        # What the key's pattern cannot say (see csserver/openapi.py); generated keys may come percent-encoded.
        assume(key.isprintable() and unquote(key).isprintable())
    response = case.call(base_url=live.url, session=http, timeout=10)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    excluded = []
    if response.status_code == 400 and response.json().get("error") == "idempotency_key_reused":
        # Generated requests reuse Idempotency-Key values across different bodies; refusing that (rather
        # than answering with another request's result) is the point of the key, not a schema violation.
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)


# ---- explicit: bodies over the limit, refused writes, malformed and foreign HAIDs -----------------------

@pytest.fixture
def fresh(tmp_path) -> Iterator[Live]:
    with live_csserver(tmp_path) as server:
        yield server


def refusal(answer: requests.Response, status: int, code: str) -> dict:
    """`answer` is the JSON refusal `{"error": code, "detail": ...}` with that status."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert body["error"] == code and body["detail"], body
    return body


def raw_exchange(live: Live, request: bytes) -> bytes:
    """Send `request` as it is; the first bytes of the answer (or b"" when the node closes silently)."""
    port = int(live.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        return conn.recv(65536)


def test_bodies_over_the_limit_are_413_with_a_reason_and_change_nothing(fresh):
    created = requests.post(f"{fresh.url}/v1/contexts", json={"labels": {"a": "b"}}, timeout=10).json()
    haid = created["haid"]
    value_url = f"{fresh.url}/v1/contexts/{haid}/values/k"
    assert requests.put(value_url, json=0, timeout=10).status_code == 200
    over = json.dumps("x" * MAX_BODY).encode()  # MAX_BODY + 2 bytes of valid JSON
    before = fresh.rows()
    answers = [
        requests.put(value_url, data=over, timeout=10),  # with Content-Length
        requests.put(value_url, data=iter([over[:1000], over[1000:]]), timeout=10),  # chunked: no length given
        requests.post(f"{fresh.url}/v1/contexts", data=json.dumps({"labels": {"x": "y" * MAX_BODY}}), timeout=10),
        requests.delete(f"{fresh.url}/v1/contexts/{haid}", data=over, headers={"Idempotency-Key": "d1"}, timeout=10),
        requests.delete(value_url, data=over, timeout=10),
    ]
    for answer in answers:
        assert str(MAX_BODY) in refusal(answer, 413, "body_too_large")["detail"]
    # A declared length over the limit is refused at once, without waiting for a byte of the body.
    head = raw_exchange(fresh, f"PUT /v1/contexts/{haid}/values/k HTTP/1.1\r\nHost: x\r\n"
                               f"Content-Length: {10**12}\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 413 ") and b'"body_too_large"' in head, head
    assert fresh.rows() == before, "a refused body changed the store"
    # The limit itself is allowed.
    exactly = json.dumps("x" * (MAX_BODY - 2)).encode()
    assert len(exactly) == MAX_BODY
    assert requests.put(value_url, data=exactly, timeout=10).json()["version"] == 2


def test_refused_writes_change_nothing(fresh):
    haid = requests.post(f"{fresh.url}/v1/contexts", timeout=10).json()["haid"]
    n = int(haid.rsplit("b", 1)[1])
    url = f"{fresh.url}/v1/contexts/{haid}"
    assert requests.put(f"{url}/values/k", json={"v": 1}, headers={"Idempotency-Key": "once"}, timeout=10).ok
    before = fresh.rows()
    deep = b"[" * 65 + b"]" * 65
    refused = [
        *[("PUT", f"{url}/values/k", raw, {}, 400, "malformed_body")
          for raw in (b"", b" ", b"{", b"NaN", b"-Infinity", b"1e400", b"[1,]", b"\xff", b"\xef\xbb\xbf1", b"'x'",
                      b'"\\ud800', deep, b"1 2", b"\x00",
                      # valid JSON, yet text neither store can hold: a lone surrogate, a NUL, anywhere
                      b'"\\ud800"', b'"\\udfff x"', b'["ok", {"a": "\\u0000"}]', b'{"\\ud83d": 1}', b'"a\\u0000"')],
        ("PUT", f"{url}/values/a%00b", b"1", {}, 400, "malformed_key"),
        ("GET", f"{url}/values?prefix=%00", b"", {}, 400, "malformed_query"),
        ("GET", f"{url}/values?after=x%00", b"", {}, 400, "malformed_query"),
        ("GET", f"{url}/values?limit=0", b"", {}, 400, "malformed_query"),
        ("GET", f"{url}/values?limit=1001", b"", {}, 400, "malformed_query"),
        ("GET", f"{url}/values?limit=%D9%A1", b"", {}, 400, "malformed_query"),  # ARABIC-INDIC DIGIT ONE
        ("GET", f"{fresh.url}/v1/contexts/4-4--cs-acs-b{n}%00", b"", {}, 400, "malformed_haid"),
        ("PUT", f"{url}/values/{'k' * 1025}", b"1", {}, 400, "malformed_key"),
        ("PUT", f"{url}/values/a%07b", b"1", {}, 400, "malformed_key"),
        ("PUT", f"{url}/values/a%E2%80%AEb", b"1", {}, 400, "malformed_key"),  # RIGHT-TO-LEFT OVERRIDE
        ("PUT", f"{url}/values/k", b"2", {"Idempotency-Key": "a b"}, 400, "malformed_idempotency_key"),
        ("PUT", f"{url}/values/k", b"2", {"Idempotency-Key": "x" * 256}, 400, "malformed_idempotency_key"),
        ("PUT", f"{url}/values/k", b"2", {"Idempotency-Key": "once"}, 400, "idempotency_key_reused"),
        ("DELETE", url, b"", {"Idempotency-Key": "once"}, 400, "idempotency_key_reused"),
        ("PUT", f"{fresh.url}/v1/contexts/4-4--cs-acs-b0{n}/values/k", b"1", {}, 400, "malformed_haid"),
        ("PUT", f"{fresh.url}/v1/contexts/4-4--cs-bcs-a{n}/values/k", b"1", {}, 421, "misdirected"),
        ("PUT", f"{fresh.url}/v1/contexts/4-4--cs-acs-c{n}/values/k", b"1", {}, 404, "not_found"),
        ("PUT", f"{fresh.url}/v1/contexts/4-4--cs-acs-b{n + 1}/values/k", b"1", {}, 404, "not_found"),
        ("DELETE", f"{fresh.url}/v1/contexts/3-4--cs-acs-b{n}", b"", {}, 400, "malformed_haid"),
        ("DELETE", f"{fresh.url}/v1/contexts/4-4--cs-xcs-a{n}", b"", {}, 421, "misdirected"),
        ("DELETE", f"{fresh.url}/v1/contexts/4-4--cs-acs-b{n}/values/k/", b"", {}, 404, "not_found"),
        *[("POST", f"{fresh.url}/v1/contexts", raw, {}, 400, "malformed_body")
          for raw in (b"[1]", b'{"labels": []}', b'{"labels": {}, "x": 1}', b"{", b'"x"', b"null",
                      b'{"labels": {"a": "\\u0000"}}', b'{"labels": {"\\ud800": "x"}}')],
        ("PATCH", f"{url}/values/k", b"1", {}, 405, "method_not_allowed"),
        ("PUT", f"{fresh.url}/v1/contexts", b"1", {}, 405, "method_not_allowed"),
    ]
    for method, target, raw, headers, status, code in refused:
        answer = requests.request(method, target, data=raw, headers=headers, timeout=10)
        try:
            refusal(answer, status, code)
        except AssertionError as exc:
            raise AssertionError(f"{method} {target} {raw[:20]!r} {headers}: {exc}") from None
    assert fresh.rows() == before, "a refused request changed the store"
    assert requests.get(f"{url}/values/k", timeout=10).json() == {"key": "k", "value": {"v": 1}, "version": 1}


# HAIDs with one thing wrong (or, by chance, still right): the codec decides, the node must agree with it.
HAID_CHARS = st.sampled_from(list("0123456789-_.aAzZ") + ["\u0663", "\uff11", "\u00e9", " ", "%", "+", "--", "\x00",
                                                           "\t", "\u202e", "\U0001f4a9"])


@st.composite
def haid_like(draw) -> str:
    text = draw(HAIDS)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "zero_length", "sign", "truncate"]))
        if op == "insert":
            text = text[:at] + draw(HAID_CHARS) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + 1:]
        elif op == "replace":
            text = text[:at] + draw(HAID_CHARS) + text[at + 1:]
        elif op == "zero_length":
            text = "0" + text if draw(st.booleans()) else text.replace("-", "-0", 1)
        elif op == "sign":
            text = "+" + text
        else:
            text = text[:at]
    # "/v1/contexts/" is another route (POST only), and HTTP clients resolve "." and ".." segments away.
    return "0" if text in ("", ".", "..") else text


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(haid_like(), st.sampled_from(["GET", "PUT", "DELETE"]))
def test_malformed_haids_are_400_and_foreign_ones_421(live, http, contexts, text, method):
    try:
        expected = decode(text)
    except MalformedHaid:
        expected = None
    path = f"{live.url}/v1/contexts/{quote(text, safe='')}"
    writes = method != "GET"
    before = live.rows() if writes else None
    answer = http.request(method, f"{path}/values/k" if method == "PUT" else path, data=b"7" if writes else None,
                          timeout=10)
    if expected is None:
        refusal(answer, 400, "malformed_haid")
    elif expected.primary != "cs-a":
        body = refusal(answer, 421, "misdirected")
        assert (body["primary"], body["vip"]) == (expected.primary, {"cs-b": "192.0.2.101"}.get(expected.primary))
        assert answer.headers.get("Connection", "").lower() == "close"  # the retry goes to a fresh connection
    else:
        assert answer.status_code in (200, 204, 404), (text, answer.status_code, answer.text)
        return
    assert before is None or live.rows() == before, f"{method} {text!r} changed the store"


# ---- below the API: what aiohttp itself refuses, and clients that hang up --------------------------------

GARBAGE = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n",  # a header over 8 KiB
    b"GET /v1/contexts/" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line too long
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    b"PUT /v1/contexts/4-4--cs-acs-b1/values/k HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"PUT /v1/contexts/4-4--cs-acs-b1/values/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v1/contexts/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
]


def test_requests_aiohttp_cannot_parse_get_400_with_a_reason_and_one_log_line(fresh, capfd):
    with capture_logs() as logs:
        for request in GARBAGE:
            head, _, body = raw_exchange(fresh, request).partition(b"\r\n\r\n")
            assert re.match(rb"HTTP/1\.[01] 400 ", head) and body.strip(), (request[:60], head, body)
    problems = [entry for entry in logs if entry["event"] == "http_protocol_error"]
    assert len(problems) == len(GARBAGE), logs
    assert all(entry["log_level"] == "warning" and "\n" not in entry["error"] for entry in problems), problems
    assert "Traceback" not in capfd.readouterr().err  # no multi-line stack per bad request in the journal


def test_a_client_that_hangs_up_mid_body_is_no_server_error(fresh):
    haid = requests.post(f"{fresh.url}/v1/contexts", timeout=10).json()["haid"]
    before = fresh.rows()
    port = int(fresh.url.rsplit(":", 1)[1])
    with capture_logs() as logs:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"PUT /v1/contexts/{haid}/values/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[1,"
                         .encode())
        metrics = {}
        deadline = time.monotonic() + 5
        while not any('status="499"' in line for line in metrics):
            assert time.monotonic() < deadline, "the hang-up was never counted"
            metrics = requests.get(f"{fresh.url}/metrics", timeout=10).text.splitlines()
            time.sleep(0.02)
    assert not [line for line in metrics if line.startswith("csserver_requests_total") and 'status="5' in line]
    assert [entry["event"] for entry in logs if entry["log_level"] in ("error", "critical")] == []
    assert fresh.rows() == before


def test_the_longest_keys_fit_in_a_request_line(fresh):
    """A key of 1024 characters of four UTF-8 bytes each is 12 KiB in a URL, twice that in a listing that
    names it as prefix and as `after`: over aiohttp's default 8 KiB request line, which would refuse it."""
    haid = requests.post(f"{fresh.url}/v1/contexts", timeout=10).json()["haid"]
    key = "\U0001f4a9" * 1024
    url = f"{fresh.url}/v1/contexts/{haid}/values"
    assert requests.put(f"{url}/{quote(key, safe='')}", json=1, timeout=10).json()["version"] == 1
    page = requests.get(url, params={"prefix": key[:-1], "limit": 1}, timeout=10).json()
    assert [v["key"] for v in page["values"]] == [key] and page["next"] == key
    assert requests.get(url, params={"prefix": key[:-1], "after": page["next"]}, timeout=10).json() == {
        "values": [], "next": None}
