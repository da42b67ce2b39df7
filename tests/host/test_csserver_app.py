"""The HTTP API of SPEC section 6 through aiohttp's test client, against SQLite and a real PostgreSQL.

Two nodes sharing one store stand for the dual-master pair; which VIPs each "holds" is set by hand, the way
VRRP would move them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass

from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from csserver import openapi
from csserver.app import create_app
from csserver.config import Config, parse
from csserver.haid import decode
from csserver.localaddrs import StaticAddresses
from csserver.service import ContextService
from csserver.store.base import Store

VIP_A, VIP_B = "192.0.2.100", "192.0.2.101"
CONFIG = """\
[node]
alias = "{alias}"
listen = "127.0.0.1:9100"
{extra}
[cluster]
aliases = {{ "cs-a" = "192.0.2.100", "cs-b" = "192.0.2.101" }}
backup  = {{ "cs-a" = "cs-b", "cs-b" = "cs-a" }}
[store]
url = "sqlite:unused.db"
"""


def config_for(alias: str, extra: str = "") -> Config:
    return parse(CONFIG.format(alias=alias, extra=extra))


@dataclass
class Node:
    http: TestClient
    service: ContextService
    local: StaticAddresses
    store: Store

    async def call(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        response = await self.http.request(method, path, data=data, headers=headers)
        text = await response.text()
        return response.status, (json.loads(text) if text and response.content_type == "application/json" else text)

    async def create(self, labels=None) -> str:
        status, body = await self.call("POST", "/v1/contexts", {"labels": labels} if labels else None)
        assert status == 201, body
        return body["haid"]


@contextlib.asynccontextmanager
async def node(make, alias: str, vips=(), token: str | None = None, extra: str = "", join: bool = True):
    """A node on `make()`'s store; with `join`, it has joined the store as `csserver run` does at start."""
    store = make()
    await store.open()
    local = StaticAddresses(vips)
    service = ContextService(config_for(alias, extra), store, local)
    if join:
        await service.beat(f"test-{alias}")
    http = TestClient(TestServer(create_app(service, token)))
    await http.start_server()
    try:
        yield Node(http, service, local, store)
    finally:
        await http.close()
        await store.close()


def run(coro):
    return asyncio.run(coro)


# ---- contexts and values ------------------------------------------------------------------------------

def test_create_get_put_list_delete(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            status, created = await a.call("POST", "/v1/contexts", {"labels": {"team": "etl"}})
            assert status == 201 and set(created) == {"haid", "primary", "backup", "epoch"}
            haid = created["haid"]
            assert (created["primary"], created["backup"], created["epoch"]) == ("cs-a", "cs-b", 1)
            assert decode(haid).primary == "cs-a"
            status, ctx = await a.call("GET", f"/v1/contexts/{haid}")
            assert status == 200
            assert set(ctx) == {"haid", "primary", "backup", "owner", "epoch", "labels", "created", "updated"}
            assert (ctx["owner"], ctx["labels"], ctx["created"][-1]) == ("cs-a", {"team": "etl"}, "Z")
            assert await a.call("PUT", f"/v1/contexts/{haid}/values/job/step", {"n": 1}) == (
                200, {"key": "job/step", "value": {"n": 1}, "version": 1})
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/job/step", None, raw=b"null"))[1]["version"] == 2
            assert await a.call("GET", f"/v1/contexts/{haid}/values/job/step") == (
                200, {"key": "job/step", "value": None, "version": 2})
            await a.call("PUT", f"/v1/contexts/{haid}/values/other", "x")
            assert await a.call("GET", f"/v1/contexts/{haid}/values?prefix=job/") == (
                200, {"values": [{"key": "job/step", "value": None, "version": 2}], "next": None})
            assert len((await a.call("GET", f"/v1/contexts/{haid}/values"))[1]["values"]) == 2
            assert (await a.call("DELETE", f"/v1/contexts/{haid}/values/other"))[0] == 204
            assert (await a.call("GET", f"/v1/contexts/{haid}/values/other"))[0] == 404
            assert (await a.call("DELETE", f"/v1/contexts/{haid}"))[0] == 204
            assert (await a.call("GET", f"/v1/contexts/{haid}"))[0] == 404

    run(body())


def test_keys_with_slashes_escapes_and_unicode_round_trip(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            for key, path in (("a/b/c", "a/b/c"), ("100%", "100%25"), ("q?x#y", "q%3Fx%23y"), ("ключ", "%D0%BA%D0%BB%D1%8E%D1%87"),
                              ("sp ace", "sp%20ace")):
                status, stored = await a.call("PUT", f"/v1/contexts/{haid}/values/{path}", {"k": key})
                assert (status, stored["key"]) == (200, key)
                assert (await a.call("GET", f"/v1/contexts/{haid}/values/{path}"))[1]["value"] == {"k": key}

    run(body())


def test_unknown_contexts_and_keys_are_404(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            id_ = decode(haid).id
            for path in (f"/v1/contexts/4-4--cs-acs-b{id_ + 100}", f"/v1/contexts/{haid}/values/none",
                         f"/v1/contexts/4-4--cs-acs-b{id_ + 100}/values"):
                status, err = await a.call("GET", path)
                assert status == 404 and err["error"] == "not_found"
            # The right id under a HAID naming other nodes is not that context.
            assert (await a.call("GET", f"/v1/contexts/4-4--cs-bcs-a{id_}"))[0] == 421
            async with node(make_store, "cs-b", [VIP_A, VIP_B]) as b:
                assert (await b.call("GET", f"/v1/contexts/4-4--cs-bcs-a{id_}"))[0] == 404
            assert (await a.call("PUT", f"/v1/contexts/4-4--cs-acs-b{id_ + 100}/values/k", 1))[0] == 404

    run(body())


# ---- routing: 400, 421 -------------------------------------------------------------------------------

MALFORMED = ["x", "4-4--cs-acs-b", "8--cs_1_dev84835", "4-4--cs-acs-b01", "04-4--cs-acs-b1", "4-4--cs%20acs-b1",
             "4-4--cs-acs-b99999999999999999999", "%00", "4-4--cs-acs-b1%0A"]


def test_malformed_haids_are_400_on_every_route(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            for haid in MALFORMED:
                for method, path, data in (("GET", f"/v1/contexts/{haid}", None), ("DELETE", f"/v1/contexts/{haid}", None),
                                           ("GET", f"/v1/contexts/{haid}/values", None),
                                           ("PUT", f"/v1/contexts/{haid}/values/k", 1),
                                           ("GET", f"/v1/contexts/{haid}/values/k", None),
                                           ("DELETE", f"/v1/contexts/{haid}/values/k", None)):
                    status, err = await a.call(method, path, data)
                    assert (status, err["error"]) == (400, "malformed_haid"), (method, path, err)

    run(body())


def test_strangers_are_421_and_told_where_to_go(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            status, err = await a.call("GET", "/v1/contexts/4-4--cs-xcs-y1")
            assert (status, err["error"], err["vip"]) == (421, "misdirected", None)
            # B's context while B is up (its VIP is not here): 421 pointing at VIP-B.
            status, err = await a.call("PUT", "/v1/contexts/4-4--cs-bcs-a1/values/k", 1)
            assert (status, err["primary"], err["vip"]) == (421, "cs-b", VIP_B)
            assert a.service.metrics.misdirected == 2

    run(body())


# ---- adoption and fencing ----------------------------------------------------------------------------

def test_failover_adoption_and_failback_with_fencing(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_B]) as b:
            haid = await a.create()
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", "from a"))[0] == 200
            assert (await b.call("GET", f"/v1/contexts/{haid}"))[0] == 421  # A is up: not B's
            # A is down: VRRP moves VIP-A to B. B adopts on the first request.
            a.local.set([])
            b.local.set([VIP_A, VIP_B])
            with capture_logs() as logs:
                status, ctx = await b.call("GET", f"/v1/contexts/{haid}")
            assert (status, ctx["owner"], ctx["epoch"]) == (200, "cs-b", 2)
            assert {"event": "context_adopted", "haid": haid, "old_owner": "cs-a", "epoch": 2}.items() <= \
                [e for e in logs if e["event"] == "context_adopted"][0].items()
            assert (await b.call("GET", f"/v1/contexts/{haid}/values/k"))[1]["value"] == "from a"
            assert (await b.call("PUT", f"/v1/contexts/{haid}/values/k", "from b"))[1]["version"] == 2
            # A returns and takes VIP-A back (preempt); B still believes it holds VIP-A for a moment.
            a.local.set([VIP_A])
            status, ctx = await a.call("GET", f"/v1/contexts/{haid}")
            assert (status, ctx["owner"], ctx["epoch"]) == (200, "cs-a", 3)
            assert (await a.call("GET", f"/v1/contexts/{haid}/values/k"))[1] == {"key": "k", "value": "from b", "version": 2}
            status, err = await b.call("PUT", f"/v1/contexts/{haid}/values/k", "stale b")
            assert (status, err["error"], err["epoch"], err["owner"]) == (409, "stale_epoch", 3, "cs-a")
            assert (await a.call("GET", f"/v1/contexts/{haid}/values/k"))[1]["value"] == "from b"  # not applied
            assert b.service.metrics.stale_epoch_refusals == 1
            assert (b.service.metrics.adoptions, a.service.metrics.adoptions) == (1, 1)
            b.local.set([VIP_B])  # VRRP finishes the move: B no longer serves A's contexts at all
            assert (await b.call("PUT", f"/v1/contexts/{haid}/values/k", "x"))[0] == 421

    run(body())


def test_a_returning_vip_forgets_the_held_epoch_so_there_is_no_spurious_409(make_store):
    """B adopted once; A took the context back; A fails again. B must adopt afresh, not write with the
    epoch it held the first time."""
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_B]) as b:
            haid = await a.create()  # A holds epoch 1
            a.local.set([])
            b.local.set([VIP_A, VIP_B])
            assert (await b.call("PUT", f"/v1/contexts/{haid}/values/k", 1))[0] == 200  # adopts: epoch 2
            b.local.set([VIP_B])
            a.local.set([VIP_A])
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", 2))[0] == 200  # adopts back: epoch 3
            a.local.set([])
            b.local.set([VIP_A, VIP_B])
            status, stored = await b.call("PUT", f"/v1/contexts/{haid}/values/k", 3)
            assert (status, stored["version"]) == (200, 3)
            assert (await b.call("GET", f"/v1/contexts/{haid}"))[1]["epoch"] == 4

    run(body())


def test_a_read_with_a_held_epoch_never_adopts_so_two_serving_nodes_do_not_ping_pong(make_store):
    """Both nodes hold VIP-A for a moment (split brain). B adopted; A still holds epoch 1. A's reads are
    served as they are (no adoption per GET); A's write finds its epoch stale (409, not applied), and only
    the retry of that write adopts, once, by compare and swap."""
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_A, VIP_B]) as b:
            haid = await a.create()
            assert (await b.call("GET", f"/v1/contexts/{haid}"))[1]["epoch"] == 2
            for _ in range(3):
                status, ctx = await a.call("GET", f"/v1/contexts/{haid}")
                assert (status, ctx["owner"], ctx["epoch"]) == (200, "cs-b", 2)
            assert a.service.metrics.adoptions == 0
            status, refused = await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1)
            assert (status, refused["error"], refused["owner"]) == (409, "stale_epoch", "cs-b")
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1))[0] == 200  # the retry adopted
            assert (a.service.metrics.adoptions, (await a.call("GET", f"/v1/contexts/{haid}"))[1]["epoch"]) == (1, 3)

    run(body())


def test_concurrent_requests_for_an_orphan_adopt_it_once(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_A, VIP_B]) as b:
            haid = await a.create()
            results = await asyncio.gather(*(b.call("PUT", f"/v1/contexts/{haid}/values/k{i}", i) for i in range(10)))
            assert [status for status, _ in results] == [200] * 10
            assert b.service.metrics.adoptions == 1
            assert (await b.call("GET", f"/v1/contexts/{haid}"))[1]["epoch"] == 2

    run(body())


# ---- idempotency -------------------------------------------------------------------------------------

def test_retried_writes_apply_once(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_A, VIP_B]) as b:
            status, first = await a.call("POST", "/v1/contexts", None, headers={"Idempotency-Key": "create-1"})
            assert (await a.call("POST", "/v1/contexts", None, headers={"Idempotency-Key": "create-1"})) == (201, first)
            haid = first["haid"]
            put = {"Idempotency-Key": "put-1"}
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1, headers=put))[1]["version"] == 1
            # The answer was lost, A died; the retry reaches B through VIP-A: the first result, not a second write.
            assert (await b.call("PUT", f"/v1/contexts/{haid}/values/k", 1, headers=put))[1]["version"] == 1
            assert (await b.call("GET", f"/v1/contexts/{haid}/values/k"))[1]["version"] == 1
            status, err = await b.call("PUT", f"/v1/contexts/{haid}/values/k", 2, headers=put)
            assert (status, err["error"]) == (400, "idempotency_key_reused")
            gone = {"Idempotency-Key": "del-1"}
            assert (await b.call("DELETE", f"/v1/contexts/{haid}", headers=gone))[0] == 204
            assert (await b.call("DELETE", f"/v1/contexts/{haid}", headers=gone))[0] == 204
            assert (await b.call("DELETE", f"/v1/contexts/{haid}", headers={"Idempotency-Key": "del-2"}))[0] == 404
            bad = await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1, headers={"Idempotency-Key": "a b"})
            assert bad[0] == 400 and bad[1]["error"] == "malformed_idempotency_key"

    run(body())


# ---- bodies, limits, auth, health, metrics -----------------------------------------------------------

def test_bodies_over_the_limit_are_413(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A], extra="max_body_bytes = 2048") as a:
            haid = await a.create()
            big = json.dumps("x" * 4096).encode()
            status, err = await a.call("PUT", f"/v1/contexts/{haid}/values/k", raw=big)
            assert (status, err["error"]) == (413, "body_too_large")
            assert (await a.call("POST", "/v1/contexts", {"labels": {"x": "y" * 4096}}))[0] == 413
            assert (await a.call("GET", f"/v1/contexts/{haid}/values/k"))[0] == 404  # nothing written
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", "x" * 1000))[0] == 200

    run(body())


def test_malformed_bodies_and_keys_are_400(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            for raw in (b"", b"{", b"NaN", b"[Infinity]", b"1e999", b"\xff\xfe", b"[" * 100 + b"]" * 100, b"{'a': 1}"):
                status, err = await a.call("PUT", f"/v1/contexts/{haid}/values/k", raw=raw)
                assert (status, err["error"]) == (400, "malformed_body"), raw
            for post in ({"labels": []}, {"labels": {}, "extra": 1}, [1], "x"):
                assert (await a.call("POST", "/v1/contexts", post))[0] == 400, post
            status, err = await a.call("PUT", f"/v1/contexts/{haid}/values/{'k' * 1025}", 1)
            assert (status, err["error"]) == (400, "malformed_key")
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/a%0Ab", 1))[0] == 400

    run(body())


def test_a_bearer_token_guards_the_api_but_not_health(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A], token="s3cret") as a:
            status, err = await a.call("POST", "/v1/contexts")
            assert (status, err["error"]) == (401, "unauthorized")
            assert (await a.call("POST", "/v1/contexts", headers={"Authorization": "Bearer wrong"}))[0] == 401
            assert (await a.call("POST", "/v1/contexts", headers={"Authorization": "Bearer s3cret"}))[0] == 201
            assert (await a.call("GET", "/healthz"))[0] == 200
            assert "security" in (await a.call("GET", "/openapi.json"))[1]

    run(body())


def test_healthz_follows_the_store(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            assert await a.call("GET", "/healthz") == (200, {"status": "ok", "alias": "cs-a"})
            haid = await a.create()
            await a.store.close()  # the store goes away
            status, err = await a.call("GET", "/healthz")
            assert (status, err["error"]) == (503, "store_unavailable")
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1))[0] == 503
            assert (await a.call("POST", "/v1/contexts"))[0] == 503

    run(body())


def test_metrics_count_requests_adoptions_refusals_and_store_latency(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_A, VIP_B]) as b:
            haid = await a.create()
            await b.call("GET", f"/v1/contexts/{haid}")
            await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1)  # A's held epoch is stale: 409
            status, text = await b.call("GET", "/metrics")
            assert status == 200
            assert 'csserver_requests_total{route="/v1/contexts/{haid}",method="GET",status="200"} 1' in text
            assert "csserver_adoptions_total 1" in text
            assert 'csserver_store_seconds_count{op="adopt"} 1' in text
            assert 'csserver_store_seconds_bucket{op="get_context",le="+Inf"}' in text
            a_text = (await a.call("GET", "/metrics"))[1]
            assert "csserver_stale_epoch_refusals_total 1" in a_text
            assert 'route="/v1/contexts/{haid}/values/{key}",method="PUT",status="409"} 1' in a_text

    run(body())


def test_openapi_lists_exactly_the_routes_served(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            status, doc = await a.call("GET", "/openapi.json")
            assert status == 200 and doc["openapi"] == "3.1.0"
            documented = {(method.upper(), path) for path, item in doc["paths"].items()
                          for method in item if method != "parameters"}
            served = {(route.method, route.resource.canonical)
                      for route in a.http.server.app.router.routes() if route.method != "HEAD"}
            assert documented == served
            assert doc == json.loads(json.dumps(openapi.document()))

    run(body())


# ---- never a 500 -------------------------------------------------------------------------------------

def test_hostile_requests_never_get_a_500(make_store):
    rng = random.Random(5798)
    pieces = ["", "x", "4-4--cs-acs-b1", "4-4--cs-bcs-a1", "%00", "%ff", "..", "%2e%2e", "values", "a" * 3000,
              "4-4--cs-acs-b" + "9" * 30, "64-64--", "é", "%F0%9F%92%A9", "{haid}", "values/", "?prefix=%ff"]
    bodies = [b"", b"null", b"{}", b"[]", b"\x00", b'{"labels": {"a": [1, {"b": null}]}}', b"1" * 5000,
              b'"\\ud800"', b"[" * 5000, b'{"labels": 5}', b"\xc3\x28"]

    async def body():
        async with node(make_store, "cs-a", [VIP_A], extra="max_body_bytes = 4096") as a:
            haid = await a.create()
            pieces.append(haid)
            for _ in range(300):
                path = "/v1/contexts/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))
                method = rng.choice(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"])
                headers = rng.choice([None, {"Idempotency-Key": rng.choice(["k", "x" * 300, "é"])},
                                      {"Content-Type": "text/plain"}, {"Authorization": "Bearer x"}])
                status, answer = await a.call(method, path, raw=rng.choice(bodies), headers=headers)
                assert status < 500, (method, path, status, answer)
                if status >= 400 and method != "HEAD":
                    assert set(answer) >= {"error", "detail"}, answer

    run(body())


def test_nuls_and_lone_surrogates_anywhere_are_400_on_both_stores(make_store):
    """Valid JSON can spell a NUL (\\u0000) or a lone surrogate (\\ud800); neither store can hold them: a 400
    naming the problem, wherever they are, and nothing written (once a 500, on PostgreSQL a 503 loop)."""
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            values = f"/v1/contexts/{haid}/values"
            refused = [
                ("PUT", f"{values}/k", b'"\\ud800"', "malformed_body"),
                ("PUT", f"{values}/k", b'{"a": ["ok", "\\u0000"]}', "malformed_body"),
                ("PUT", f"{values}/k", b'{"\\udc00": 1}', "malformed_body"),
                ("PUT", f"{values}/a%00b", b"1", "malformed_key"),
                ("GET", f"{values}/a%00b", None, "malformed_key"),
                ("DELETE", f"{values}/a%00b", None, "malformed_key"),
                ("GET", f"{values}?prefix=%00", None, "malformed_query"),
                ("GET", f"{values}?prefix=a&after=%00", None, "malformed_query"),
                ("POST", "/v1/contexts", b'{"labels": {"a": "\\u0000"}}', "malformed_body"),
                ("POST", "/v1/contexts", b'{"labels": {"\\ud800": "x"}}', "malformed_body"),
                ("GET", f"/v1/contexts/{haid}%00", None, "malformed_haid"),
            ]
            for method, path, raw, code in refused:
                status, answer = await a.call(method, path, raw=raw)
                assert (status, answer["error"]) == (400, code), (method, path, raw, answer)
                assert answer["detail"]
            assert await a.call("GET", values) == (200, {"values": [], "next": None})
            text = (await a.call("GET", "/metrics"))[1]
            assert not [line for line in text.splitlines() if 'status="5' in line]

    run(body())


def test_values_are_listed_in_pages(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            for n in range(7):
                await a.call("PUT", f"/v1/contexts/{haid}/values/job/{n}", n)
            await a.call("PUT", f"/v1/contexts/{haid}/values/other", 0)
            seen, after = [], None
            for _ in range(10):
                query = "prefix=job/&limit=3" + (f"&after={after}" if after else "")
                status, page = await a.call("GET", f"/v1/contexts/{haid}/values?{query}")
                assert status == 200 and len(page["values"]) <= 3
                seen += [v["key"] for v in page["values"]]
                after = page["next"]
                if after is None:
                    break
            assert seen == [f"job/{n}" for n in range(7)]
            for bad in ("limit=0", "limit=1001", "limit=x", "limit=-1"):
                status, answer = await a.call("GET", f"/v1/contexts/{haid}/values?{bad}")
                assert (status, answer["error"]) == (400, "malformed_query"), bad

    run(body())


def test_no_adoption_when_the_vip_leaves_while_the_store_answers(make_store):
    """B routed the request while it held VIP-A; VIP-A goes back to A before B adopts: B must not take the
    context from the returning primary (the route is checked again just before adopting)."""
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a, node(make_store, "cs-b", [VIP_A, VIP_B]) as b:
            haid = await a.create()
            real = b.store.get_context

            async def slow_read(context_id):
                ctx = await real(context_id)
                b.local.set([VIP_B])  # VRRP moved VIP-A back to A meanwhile
                return ctx

            b.store.get_context = slow_read
            status, answer = await b.call("PUT", f"/v1/contexts/{haid}/values/k", 1)
            assert (status, answer["error"]) == (421, "misdirected")
            b.store.get_context = real
            assert (b.service.metrics.adoptions, (await a.call("GET", f"/v1/contexts/{haid}"))[1]["epoch"]) == (0, 1)
            assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1))[0] == 200  # A's epoch still holds

    run(body())


def test_created_contexts_stay_within_the_held_epoch_bound(make_store, monkeypatch):
    monkeypatch.setattr("csserver.service.MAX_HELD", 3)

    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haids = [await a.create() for _ in range(6)]
            assert len(a.service._held) == 3  # the oldest forgotten (reloaded when needed)
            for haid in haids:  # every one still served
                assert (await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1))[0] == 200

    run(body())


def test_metrics_show_the_idempotency_table_and_the_partner_sharing(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1, headers={"Idempotency-Key": "w1"})
            a.service.metrics.idempotency_records = await a.store.idempotency_records()  # as the expiry job does
            text = (await a.call("GET", "/metrics"))[1]
            assert "csserver_idempotency_records 1" in text
            assert 'csserver_store_shared{partner="cs-b"} 0' in text  # cs-b never seen yet

    run(body())


def test_only_a_vip_coming_or_going_forgets_the_held_epochs(make_store):
    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            await a.call("PUT", f"/v1/contexts/{haid}/values/k", 1)
            a.local.set([VIP_A, "198.51.100.7"])  # DHCP, a container, an IPv6 temporary address...
            assert a.service.held_epoch(decode(haid)) == 1
            a.local.set([])  # VIP-A left
            assert a.service.held_epoch(decode(haid)) is None

    run(body())


def test_idempotency_housekeeping_runs_in_batches_and_fills_the_gauge(make_store, monkeypatch):
    from datetime import timedelta

    from csserver import server

    monkeypatch.setattr(server, "EXPIRY_BATCH", 2)
    monkeypatch.setattr(server, "IDEMPOTENCY_MAX_RECORDS", 3)

    async def body():
        async with node(make_store, "cs-a", [VIP_A]) as a:
            haid = await a.create()
            for n in range(7):
                await a.call("PUT", f"/v1/contexts/{haid}/values/k{n}", n, headers={"Idempotency-Key": f"w{n}"})
            monkeypatch.setattr(server, "IDEMPOTENCY_TTL", timedelta(days=1))  # none old enough yet
            assert await server.expire_idempotency_once(a.service) == 4  # the count bound: 7 -> 3, 2 a time
            assert a.service.metrics.idempotency_records == 3
            monkeypatch.setattr(server, "IDEMPOTENCY_TTL", timedelta(0))  # now every record is too old
            assert await server.expire_idempotency_once(a.service) == 3
            assert "csserver_idempotency_records 0" in (await a.call("GET", "/metrics"))[1]

    run(body())
