"""The OpenAPI 3.1 description of csserver's HTTP API (SPEC section 6), served at /openapi.json.

Hand-written and kept beside the routes in `app.py`; a unit test checks that both list the same operations.
"""

from __future__ import annotations

from csserver import __version__

_ERROR_CODES = {
    "400": "Malformed HAID, body, key, query or Idempotency-Key (NUL characters and lone surrogates included), "
           "or an Idempotency-Key reused for another request",
    "401": "Missing or wrong bearer token (when the node has a token_file)",
    "404": "Unknown context or key",
    "409": "Stale epoch: another node adopted the context; the write was not applied",
    "413": "Request body over the node's max_body_bytes",
    "421": "Misdirected: another node serves this context; `vip` says where",
    "503": "The store is unavailable, or not shown to be shared with the partner this request needs "
           "(store_not_shared); retry (with the same Idempotency-Key)",
}


def _error(status: str) -> dict:
    return {"description": _ERROR_CODES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, ref: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*statuses: str) -> dict:
    return {status: _error(status) for status in ("400", "401", *statuses, "503")}


# A pattern cannot say that the lengths in the head match the aliases, so `format: haid` names the exact rule
# (SPEC 6; csserver.haid) and the pattern is the part a regex can check.
_HAID = {"name": "haid", "in": "path", "required": True,
         "description": "The context's HAID, `<len(primary)>-<len(backup)>--<primary><backup><id>`, e.g. "
                        "4-4--cs-acs-b84835: aliases of 1..64 `[A-Za-z0-9_.-]` without `--`, the id 1..2^63-1",
         "schema": {"type": "string", "format": "haid",
                    "pattern": r"^[1-9][0-9]?-[1-9][0-9]?--[A-Za-z0-9_.-]{2,128}[1-9][0-9]{0,18}$"}}
# Keys are printable (Python's str.isprintable): no control, format or unassigned characters. The pattern
# excludes the control characters; a regex cannot name the other categories portably.
_KEY = {"name": "key", "in": "path", "required": True,
        "description": "The key: 1..1024 printable characters (may contain /)",
        "schema": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"^[^\x00-\x1f\x7f-\x9f]+$"}}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "description": "A retried request with the same key returns the first result and is never applied "
                               "twice; the same key with another method, path or body is refused (400)",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}}

# Any JSON value whose strings and member names hold no NUL: valid JSON can spell one (\u0000), and a
# lone surrogate (\ud800), but neither store can keep them, so both are refused (400) wherever they are.
_TEXT = {"type": "string", "pattern": "^[^\\x00]*$"}
_SCHEMAS = {
    "JsonValue": {"description": "Any JSON value without NUL characters or lone surrogates in its strings",
                  "anyOf": [{"type": ["null", "boolean", "number"]}, _TEXT,
                            {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
                            {"type": "object", "propertyNames": _TEXT,
                             "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}}]},
    "Error": {"type": "object", "required": ["error", "detail"], "properties": {
        "error": {"type": "string", "description": "A short code, e.g. malformed_haid, stale_epoch, misdirected"},
        "detail": {"type": "string"},
        "primary": {"type": "string", "description": "421: the alias whose VIP serves the context"},
        "vip": {"type": ["string", "null"], "description": "421: that VIP, where the client should go"},
        "epoch": {"type": "integer", "description": "409: the context's current epoch"},
        "owner": {"type": "string", "description": "409: the node that owns it now"}}},
    "Created": {"type": "object", "required": ["haid", "primary", "backup", "epoch"], "properties": {
        "haid": {"type": "string"}, "primary": {"type": "string"}, "backup": {"type": "string"},
        "epoch": {"type": "integer", "minimum": 1}}},
    "Context": {"type": "object",
                "required": ["haid", "primary", "backup", "owner", "epoch", "labels", "created", "updated"],
                "properties": {
                    "haid": {"type": "string"}, "primary": {"type": "string"}, "backup": {"type": "string"},
                    "owner": {"type": "string"}, "epoch": {"type": "integer", "minimum": 1},
                    "labels": {"type": "object"},
                    "created": {"type": "string", "format": "date-time"},
                    "updated": {"type": "string", "format": "date-time"}}},
    "Value": {"type": "object", "required": ["key", "value", "version"], "properties": {
        "key": {"type": "string"}, "value": {"description": "Any JSON value"},
        "version": {"type": "integer", "minimum": 1}}},
    "Values": {"type": "object", "required": ["values", "next"], "properties": {
        "values": {"type": "array", "items": {"$ref": "#/components/schemas/Value"}},
        "next": {"type": ["string", "null"], "description": "`after` for the next page; null on the last"}}},
    "Store": {"type": "object", "required": ["alias", "store_id"], "properties": {
        "alias": {"type": "string"}, "store_id": {"type": ["string", "null"]}}},
}

_PATHS = {
    "/v1/contexts": {
        "post": {
            "operationId": "createContext",
            "summary": "Create a context; its primary is this node (or the node whose VIP the request came in on)",
            "parameters": [_IDEMPOTENCY],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"labels": {"type": "object", "propertyNames": _TEXT,
                                          "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}}}}}}},
            "responses": {"201": _json("Created", "Created"), **_errors("409", "413")},
        },
    },
    "/v1/contexts/{haid}": {
        "parameters": [_HAID],
        "get": {"operationId": "getContext", "summary": "A context's owner, epoch and labels",
                "responses": {"200": _json("The context", "Context"), **_errors("404", "421")}},
        "delete": {"operationId": "deleteContext", "summary": "Delete a context and all its values",
                   "parameters": [_IDEMPOTENCY],
                   "responses": {"204": {"description": "Deleted"}, **_errors("404", "409", "421")}},
    },
    "/v1/contexts/{haid}/values": {
        "parameters": [_HAID],
        "get": {"operationId": "listValues",
                "summary": "A page of the values whose key starts with `prefix`, in code point order of their keys",
                "parameters": [
                    {"name": "prefix", "in": "query", "required": False,
                     "schema": {**_TEXT, "maxLength": 1024}},
                    {"name": "after", "in": "query", "required": False,
                     "description": "Only keys after this one (the `next` of the page before)",
                     "schema": {**_TEXT, "maxLength": 1024}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}],
                "responses": {"200": _json("The values", "Values"), **_errors("404", "421")}},
    },
    "/v1/contexts/{haid}/values/{key}": {
        "parameters": [_HAID, _KEY],
        "put": {"operationId": "putValue", "summary": "Set a key to any JSON value (durable when answered)",
                "parameters": [_IDEMPOTENCY],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/JsonValue"}}}},
                "responses": {"200": _json("The value as stored", "Value"), **_errors("404", "409", "413", "421")}},
        "get": {"operationId": "getValue", "summary": "A key's value and version",
                "responses": {"200": _json("The value", "Value"), **_errors("404", "421")}},
        "delete": {"operationId": "deleteValue", "summary": "Delete a key", "parameters": [_IDEMPOTENCY],
                   "responses": {"204": {"description": "Deleted"}, **_errors("404", "409", "421")}},
    },
    "/v1/store": {
        "get": {"operationId": "storeIdentity",
                "summary": "The identity of the store this node serves from (partners compare it)",
                "responses": {"200": _json("The store", "Store"), **_errors()}},
    },
    "/healthz": {
        "get": {"operationId": "health",
                "summary": "200 when the store answers and no partner has shown it is not shared, else 503",
                "security": [],
                "responses": {"200": {"description": "Healthy"}, "503": _error("503")}},
    },
    "/metrics": {
        "get": {"operationId": "metrics", "summary": "Prometheus text format", "security": [],
                "responses": {"200": {"description": "Metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    },
    "/openapi.json": {
        "get": {"operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}},
    },
}


def document(with_token: bool = False) -> dict:
    """The OpenAPI document; `with_token` adds the bearer security scheme the node then requires."""
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "csserver", "version": __version__,
                 "description": "Contexts whose ids (HAIDs) name their primary and backup node; the node that "
                                "holds the primary's VIP serves them, adopting them with a fencing epoch."},
        "paths": _PATHS,
        "components": {"schemas": _SCHEMAS},
    }
    if with_token:
        doc["components"] = {**doc["components"], "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        doc["security"] = [{"bearer": []}]
    return doc
