"""csserver's HTTP API (SPEC section 6) on aiohttp: routes, JSON bodies and errors, auth, metrics.

aiohttp because it is mature, asyncio-native, serves HTTP itself (no ASGI server to add), and brings the
HTTP client the `csserver ctx` command needs in the same dependency. Handlers only parse and render; what
they mean is in `service.py`. Every failure is a JSON `{"error": code, "detail": text}`: aiohttp's own (no
such route 404, 405, body too large 413) are rewritten the same way, and an unexpected exception is logged
and answered 500 (the tests make sure no request they send gets one).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from csserver import openapi
from csserver.service import MAX_LIST_LIMIT, ContextService, ServiceError
from csserver.store.base import Context, Idem, Value, text_problem

MAX_KEY_LENGTH = 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_JSON_DEPTH = 64
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away before the answer
# Typed keys where aiohttp has them (3.9+); Debian 12's aiohttp 3.8, which the package runs on, takes the
# plain strings that AppKey replaced.
SERVICE = web.AppKey("service", ContextService) if hasattr(web, "AppKey") else "service"
TOKEN = web.AppKey("token", str) if hasattr(web, "AppKey") else "token"
_AIOHTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}

log = structlog.get_logger("csserver")


def create_app(service: ContextService, token: str | None = None) -> web.Application:
    app = web.Application(client_max_size=service.config.node.max_body_bytes,
                          middlewares=[_count, _errors, _auth, _body_limit])
    app[SERVICE] = service
    if token:
        app[TOKEN] = token
    app.router.add_post("/v1/contexts", create_context)
    app.router.add_get("/v1/contexts/{haid}", get_context)
    app.router.add_delete("/v1/contexts/{haid}", delete_context)
    app.router.add_get("/v1/contexts/{haid}/values", list_values)
    app.router.add_put(r"/v1/contexts/{haid}/values/{key:[\s\S]+}", put_value)
    app.router.add_get(r"/v1/contexts/{haid}/values/{key:[\s\S]+}", get_value)
    app.router.add_delete(r"/v1/contexts/{haid}/values/{key:[\s\S]+}", delete_value)
    app.router.add_get("/v1/store", store_identity)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    return app


# ---- middlewares ------------------------------------------------------------------------------------

def error_response(status: int, code: str, detail: str, extra: dict | None = None, headers=None) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **(extra or {})}, status=status, headers=headers)


@web.middleware
async def _count(request: web.Request, handler):
    response = await handler(request)
    route = request.match_info.route.resource
    request.app[SERVICE].metrics.request(route.canonical if route is not None else "unmatched", request.method,
                                         response.status)
    return response


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ServiceError as exc:
        response = error_response(exc.status, exc.code, exc.detail, exc.extra)
        if exc.status == 421:
            # The client reached a VIP this node no longer holds over a kept-alive connection: close it, so
            # its retry opens a new one, to wherever the VIP is now.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        response = error_response(exc.status, code, exc.text or exc.reason, headers=headers)
        if exc.status == 413:
            response.force_close()  # the rest of the body is unread: never wait for it on a kept-alive connection
        return response
    except ConnectionResetError:
        # The client hung up while its body was being read: nobody hears the answer, and it is not a server
        # fault (nginx's 499, so /metrics does not count it as a 500).
        log.info("client_disconnected", method=request.method, path=request.path)
        return error_response(CLIENT_CLOSED_REQUEST, "client_closed_request", "the client closed the connection")
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return error_response(500, "internal", "unexpected server error; see the server's log")


@web.middleware
async def _auth(request: web.Request, handler):
    token = request.app.get(TOKEN)
    if token and request.path.startswith("/v1/"):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            # RFC 9110 11.6.1: a 401 names the scheme that would do (RFC 6750 section 3 for bearer tokens).
            return error_response(401, "unauthorized", "this node needs `Authorization: Bearer <token>`",
                                  headers={"WWW-Authenticate": 'Bearer realm="csserver"'})
    return await handler(request)


@web.middleware
async def _body_limit(request: web.Request, handler):
    """413 at once for a declared Content-Length over the limit, rather than after reading that much of it."""
    limit = request.app[SERVICE].config.node.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await handler(request)


# ---- request parsing --------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a 64-bit float")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity, no overflowing floats, nesting <= MAX_JSON_DEPTH, every string
    and member name Unicode text without NUL); 400 otherwise."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ServiceError(400, "malformed_body", f"the body is not JSON: {exc}") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Nesting depth, and the text of every string: `\\u0000` and lone surrogates (`\\ud800`) are valid
    JSON escapes, but neither store can hold them (PostgreSQL's text has no NUL, UTF-8 no surrogates)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise ServiceError(400, "malformed_body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        children = []
        for item in level:
            if isinstance(item, str):
                _check_text("a string in the body", item)
            elif isinstance(item, dict):
                for name, child in item.items():
                    _check_text("a member name in the body", name)
                    children.append(child)
            elif isinstance(item, list):
                children.extend(item)
        level = children


def _check_text(what: str, text: str) -> None:
    problem = text_problem(text)
    if problem:
        raise ServiceError(400, "malformed_body" if "body" in what else "malformed_text", f"{what}: {problem}")


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _key(request: web.Request) -> str:
    key = request.match_info["key"]
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ServiceError(400, "malformed_key", f"a key is 1..{MAX_KEY_LENGTH} printable characters")
    return key


def _query_text(request: web.Request, name: str, default: str | None) -> str | None:
    text = request.query.get(name, default)
    if text is not None and (len(text) > MAX_KEY_LENGTH or text_problem(text)):
        raise ServiceError(400, "malformed_query", f"{name} is at most {MAX_KEY_LENGTH} characters of Unicode "
                                                   f"text without NUL")
    return text


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return MAX_LIST_LIMIT
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIST_LIMIT):
        raise ServiceError(400, "malformed_query", f"limit is an integer 1..{MAX_LIST_LIMIT}")
    return int(text)


async def _idem(request: web.Request, body: bytes) -> Idem | None:
    """The request's Idempotency-Key with a digest of what it asks (method, path, body)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise ServiceError(400, "malformed_idempotency_key",
                           f"Idempotency-Key is 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters")
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode() + body).hexdigest()
    return Idem(key, digest)


def _arrived_on(request: web.Request):
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    try:
        address = ipaddress.ip_address(sockname[0].split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return getattr(address, "ipv4_mapped", None) or address


# ---- rendering --------------------------------------------------------------------------------------

def timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def context_json(haid: str, ctx: Context) -> dict:
    return {"haid": haid, "primary": ctx.primary, "backup": ctx.backup, "owner": ctx.owner, "epoch": ctx.epoch,
            "labels": ctx.labels, "created": timestamp(ctx.created), "updated": timestamp(ctx.updated)}


def value_text(value: Value) -> str:
    """`{"key", "value", "version"}` with the value spliced in as stored: no decode and encode per read."""
    return f'{{"key":{dump_json(value.key)},"value":{value.value_json},"version":{value.version}}}'


def _json_response(data: Any, status: int = 200, headers=None) -> web.Response:
    return _json_text(dump_json(data), status, headers)


def _json_text(text: str, status: int = 200, headers=None) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


# ---- handlers ---------------------------------------------------------------------------------------

async def create_context(request: web.Request) -> web.Response:
    body = await request.read()
    labels: dict = {}
    if body.strip():
        data = parse_json(body)
        if not isinstance(data, dict) or set(data) - {"labels"}:
            raise ServiceError(400, "malformed_body", 'the body is {"labels": {...}} or empty')
        labels = data.get("labels", {})
        if not isinstance(labels, dict):
            raise ServiceError(400, "malformed_body", "labels must be a JSON object")
    service = request.app[SERVICE]
    haid, ctx = await service.create(labels, _arrived_on(request), await _idem(request, body))
    return _json_response({"haid": haid, "primary": ctx.primary, "backup": ctx.backup, "epoch": ctx.epoch},
                          status=201, headers={"Location": f"/v1/contexts/{haid}"})


async def get_context(request: web.Request) -> web.Response:
    haid, ctx = await request.app[SERVICE].get(request.match_info["haid"])
    return _json_response(context_json(haid, ctx))


async def delete_context(request: web.Request) -> web.Response:
    body = await request.read()
    await request.app[SERVICE].delete(request.match_info["haid"], await _idem(request, body))
    return web.Response(status=204)


async def put_value(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    service.route(request.match_info["haid"])  # a 400/421 before reading a body that may be large
    key = _key(request)
    body = await request.read()
    if not body.strip():
        raise ServiceError(400, "malformed_body", "the body is the value: any JSON value (null included)")
    value = parse_json(body)
    stored = await service.put_value(request.match_info["haid"], key, dump_json(value), await _idem(request, body))
    return _json_text(value_text(stored))


async def get_value(request: web.Request) -> web.Response:
    key = _key(request)
    return _json_text(value_text(await request.app[SERVICE].get_value(request.match_info["haid"], key)))


async def delete_value(request: web.Request) -> web.Response:
    key = _key(request)
    body = await request.read()
    await request.app[SERVICE].delete_value(request.match_info["haid"], key, await _idem(request, body))
    return web.Response(status=204)


async def list_values(request: web.Request) -> web.Response:
    """A page of values: `limit` (1..1000, default 1000) keys after `after`, in code point order; `next` is
    the `after` of the following page, null on the last one."""
    prefix = _query_text(request, "prefix", "")
    after = _query_text(request, "after", None)
    limit = _limit(request)
    values = await request.app[SERVICE].list_values(request.match_info["haid"], prefix, after, limit)
    following = dump_json(values[-1].key) if len(values) == limit else "null"
    return _json_text(f'{{"values":[{",".join(value_text(v) for v in values)}],"next":{following}}}')


async def store_identity(request: web.Request) -> web.Response:
    """Which store this node serves from: what its partner compares to show they share one."""
    service = request.app[SERVICE]
    return _json_response({"alias": service.me, "store_id": service.store.store_id})


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    problem = await service.healthy()
    if problem:
        code = "store_not_shared" if problem == service.sharing.problem() else "store_unavailable"
        return error_response(503, code, problem)
    return _json_response({"status": "ok", "alias": service.me})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SERVICE].metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi_json(request: web.Request) -> web.Response:
    return _json_response(openapi.document(with_token=TOKEN in request.app))
