"""csserver's Python client: reaches a context through its primary's VIP and rides out a failover.

    async with Client(cluster={"cs-a": "192.0.2.100", "cs-b": "192.0.2.101"}, port=9100) as cs:
        created = await cs.create(via="cs-a")             # {"haid", "primary", "backup", "epoch"}
        await cs.put(created["haid"], "step", {"n": 1})   # {"key", "value", "version"}

With a cluster map (alias -> VIP) every request for a context goes to the VIP of the primary its HAID names;
with only a `base_url` everything goes there. A call is retried until `deadline_s` when the node did not
answer (connection refused or reset, attempt timeout), answered 421 naming a VIP (the VIP is moving; a 421
naming another VIP than the one asked is followed at once; one naming none is final), 503 (store unavailable) or 409 stale_epoch (the write was refused and not
applied). Every retry of one PUT, DELETE or POST carries the same Idempotency-Key, so a write whose answer
was lost is never applied twice. Any other 4xx is raised at once as `CsError`; running out of time raises
`Unavailable` with the last problem seen.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from csserver.haid import MalformedHaid, decode

DEFAULT_PORT = 9100
NO_BODY = object()  # PUT's body may be JSON null, so "no body" needs its own marker
FIRST_BACKOFF_S = 0.01
MAX_BACKOFF_S = 0.2


class CsError(Exception):
    """The service refused the request (a 4xx), or could not be reached in time (`Unavailable`)."""

    def __init__(self, status: int | None, code: str, detail: str):
        super().__init__(f"{status or 'no answer'} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class Unavailable(CsError):
    """No node served the request before the deadline; `detail` holds the last problem seen."""


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class Client:
    def __init__(self, *, cluster: Mapping[str, Any] | None = None, port: int | None = None,
                 base_url: str | None = None, token: str | None = None, deadline_s: float = 10.0,
                 attempt_timeout_s: float = 1.0, connect_timeout_s: float = 0.5,
                 session: aiohttp.ClientSession | None = None):
        if not cluster and not base_url:
            raise ValueError("give a cluster map (alias -> VIP) or a base_url")
        self.vips = {alias: str(vip) for alias, vip in (cluster or {}).items()}
        # The port of every VIP: given, else base_url's (a cluster serves on one port), else csserver's default.
        self.port = port or (URL(base_url).port if base_url else None) or DEFAULT_PORT
        self.base_url = base_url.rstrip("/") if base_url else None
        self.deadline_s = deadline_s
        self.attempt_timeout_s = attempt_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session
        self._own_session = session is None

    @classmethod
    def from_config(cls, config, **kw) -> Client:
        """A client for the cluster a csserver config describes (its [cluster] aliases, its listen port)."""
        return cls(cluster=dict(config.cluster.aliases), port=config.node.listen_port, **kw)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    # ---- the API ---------------------------------------------------------------------------------

    async def create(self, labels: Mapping[str, Any] | None = None, via: str | None = None) -> dict:
        """A new context whose primary is node `via` (the node behind `base_url` when None)."""
        body = {"labels": dict(labels)} if labels else {}
        return await self._call("POST", self._base(via), "/v1/contexts", body)

    async def get(self, haid: str) -> dict:
        return await self._call("GET", self._base_for(haid), f"/v1/contexts/{quote(haid, safe='')}")

    async def delete(self, haid: str) -> None:
        await self._call("DELETE", self._base_for(haid), f"/v1/contexts/{quote(haid, safe='')}")

    async def put(self, haid: str, key: str, value: Any) -> dict:
        return await self._call("PUT", self._base_for(haid), self._value_path(haid, key), value)

    async def get_value(self, haid: str, key: str) -> dict:
        return await self._call("GET", self._base_for(haid), self._value_path(haid, key))

    async def delete_value(self, haid: str, key: str) -> None:
        await self._call("DELETE", self._base_for(haid), self._value_path(haid, key))

    async def list_values(self, haid: str, prefix: str = "", page_size: int | None = None) -> list[dict]:
        """Every value whose key starts with `prefix`, in key order, read page by page (`page_size` keys at
        a time; the server's default when None)."""
        values: list[dict] = []
        after = None
        while True:
            query = {k: v for k, v in (("prefix", prefix), ("after", after), ("limit", page_size)) if v}
            path = f"/v1/contexts/{quote(haid, safe='')}/values" + (f"?{urlencode(query)}" if query else "")
            page = await self._call("GET", self._base_for(haid), path)
            values += page["values"]
            after = page.get("next")
            if not after:
                return values

    # ---- where, and how often -------------------------------------------------------------------

    def _url(self, address: str) -> str:
        return f"http://{_host(address)}:{self.port}"

    def _base(self, alias: str | None) -> str:
        if alias is None:
            if self.base_url is None:
                raise ValueError("no base URL: say which node's VIP to use (via=ALIAS, or --via ALIAS)")
            return self.base_url
        if alias not in self.vips:
            raise ValueError(f"the cluster map names no VIP for {alias!r}")
        return self._url(self.vips[alias])

    def _base_for(self, haid: str) -> str:
        try:
            primary = decode(haid).primary
        except MalformedHaid as exc:
            raise CsError(400, "malformed_haid", f"malformed HAID: {exc}") from None
        if primary in self.vips:
            return self._url(self.vips[primary])
        if self.base_url is not None:
            return self.base_url
        raise CsError(421, "misdirected", f"the cluster map names no VIP for {primary}")

    @staticmethod
    def _value_path(haid: str, key: str) -> str:
        return f"/v1/contexts/{quote(haid, safe='')}/values/{quote(key, safe='/')}"

    async def _call(self, method: str, base: str, path: str, body: Any = NO_BODY) -> Any:
        """One logical request, retried as the module says until the deadline."""
        deadline = time.monotonic() + self.deadline_s
        headers = dict(self._headers)
        if method != "GET":
            headers["Idempotency-Key"] = uuid.uuid4().hex  # the same on every retry of this call
        data = None if body is NO_BODY else json.dumps(body, allow_nan=False).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        backoff, last = FIRST_BACKOFF_S, "no attempt made"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(None, "unavailable", f"no answer within {self.deadline_s:g} s; last: {last}")
            try:
                status, answer = await self._attempt(method, base + path, data, headers, remaining)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last = f"{base}: {type(exc).__name__}: {exc}"
            else:
                if status < 400:
                    return answer
                if not isinstance(answer, dict):
                    answer = {"error": "http_error", "detail": str(answer)[:200]}
                code, detail = answer.get("error", "http_error"), answer.get("detail", "")
                if status == 421 and answer.get("vip") and self._url(answer["vip"]) != base:
                    base = self._url(answer["vip"])  # follow at once to where the node says it is served
                    continue
                # A 421 from the very VIP it names means the VIP is moving: retry. One naming no VIP is final.
                moving = status == 421 and bool(answer.get("vip"))
                if not (moving or status == 503 or (status == 409 and code == "stale_epoch")):
                    raise CsError(status, code, detail)
                last = f"{base}: {status} {code}: {detail}"
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _attempt(self, method: str, url: str, data: bytes | None, headers: dict, remaining: float):
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        timeout = aiohttp.ClientTimeout(total=min(self.attempt_timeout_s, remaining),
                                        sock_connect=min(self.connect_timeout_s, remaining))
        async with self._session.request(method, URL(url, encoded=True), data=data, headers=headers,
                                         timeout=timeout) as response:
            raw = await response.read()
            if response.status in (421, 503):
                response.close()  # never reuse a connection to a node that is not serving: reconnect
            if response.status == 204 or not raw:
                return response.status, {}
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, {"error": "http_error", "detail": raw[:200].decode(errors="replace")}
