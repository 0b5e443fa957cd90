"""The HTTP API as an OpenAPI 3.1 document, with the blueprint's URL prefix applied. No Flask here.

The blueprint serves it at ``<prefix>/openapi.json``. tests/test_openapi.py keeps it true: every route of
the blueprint is in it and nothing else, and schemathesis runs the document against a live server.
Requests are described as strictly as pushsvc reads them (one target, no unknown field); the server may
accept a little more (a ``null`` target is ignored), never less.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .messages import MAX_EVENT_NAME_BYTES, MAX_NAME_BYTES, MAX_RETRY_MS, RESERVED_EVENTS, TARGET_FIELDS

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
STREAM = "text/event-stream"
# The Idempotency-Key header (draft-ietf-httpapi-idempotency-key-header): printable ASCII.
IDEMPOTENCY_KEY_MAX = 255
REF = "#/components/schemas/"
# Any one of them lets a subscriber in, when PUSHSVC_JWT_SECRET is set.
SUBSCRIBER_SCHEMES = ("subscriberToken", "subscriberCookie", "subscriberQuery", "ticket")
TOKEN_COOKIE = "pushsvc_token"

Schema = dict[str, Any]


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of the blueprint mounted at ``settings.url_prefix``."""
    prefix = settings.url_prefix
    ops = {
        "/subscribe/{client_id}": {"get": _subscribe(by_path=True)},
        "/subscribe": {"get": _subscribe(by_path=False)},
        "/publish": {"post": _publish(settings)},
        "/push": _legacy("legacy_push"),
        "/send": _legacy("legacy_send"),
        "/close/{client_id}": _close(by_path=True),
        "/close": _close(by_path=False),
        "/clients": {"get": _clients()},
        "/clients/{client_id}": {"get": _client()},
        "/tickets": {"post": _tickets()},
        "/healthz": {"get": _healthz()},
        "/openapi.json": {"get": _answer("openapi", "This document.", {"200": _json_body("any", "it")})},
        "/static/{filename}": {"get": _static()},
    }
    for methods in ops.values():
        for operation in methods.values():
            if operation.pop("x-publisher", False) and settings.publish_token is not None:
                operation["security"] = [{"publishToken": []}]
            if operation["operationId"].startswith("subscribe") and settings.jwt_secret is not None:
                operation["security"] = [{name: []} for name in SUBSCRIBER_SCHEMES]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "pushsvc", "version": "1",
                 "description": "Server-Sent Events push service: subscribe, publish, close, clients."},
        "paths": {prefix + path: methods for path, methods in ops.items()},
        "components": {"schemas": _schemas(settings), "securitySchemes": _security()},
    }


# -- operations ----------------------------------------------------------------------------------------


def _answer(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


def _json_body(schema: str, description: str) -> dict[str, Any]:
    target = {} if schema == "any" else {"$ref": REF + schema}
    return {"description": description, "content": {JSON: {"schema": target}}}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "invalid input", 401: "no or bad bearer token", 403: "not allowed", 404: "not found",
           409: "the first request with this Idempotency-Key is still being published",
           413: "data or body over the limit", 415: "a body that is neither JSON nor form-encoded",
           422: "this Idempotency-Key was used with another body",
           503: "the broker cannot take events; nothing was published"}
    return {str(code): _json_body("Error", why[code]) for code in codes}


def _query(name: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _client_path() -> dict[str, Any]:
    return {"name": "client_id", "in": "path", "required": True, "schema": {"$ref": REF + "Name"}}


def _id_params(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [_query(name, "the client id (any one of these names)", {"$ref": REF + "Name"}) for name in names]


def _subscribe(*, by_path: bool) -> dict[str, Any]:
    params = [_client_path()] if by_path else _id_params(("clientId", "id", "uid"))
    params += [
        {**_query("group", "join this group (repeatable)",
                  {"type": "array", "items": {"$ref": REF + "Name"}}),
         "style": "form", "explode": True},
        _query("lastEventId", "resume after this event id (for clients that cannot set Last-Event-ID)"),
        _query("presence", "1: also get `event: presence` when another client id comes online in one of "
               "this stream's groups or goes offline from it",
               {"type": "string", "enum": ["1", "0", "true", "false", "yes", "no", "on", "off"]}),
        _query("token", "a subscriber JWT, when PUSHSVC_JWT_SECRET is set"),
        _query("ticket", "a one-time ticket from POST /tickets"),
        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    responses = {
        "200": {"description": "the event stream (or, when the server is full or its broker is down, "
                               "a retry hint and `event: busy`, then its end)",
                "content": {STREAM: {"schema": {"$ref": REF + "StreamEvent"}}}},
        "204": {"description": "this client was closed by the server: stop reconnecting"},
        **_errors(400, 401, 403),
    }
    if by_path:
        responses.update(_errors(404))  # an id holding "/" that does not reach this route
    return _answer("subscribe" + ("_by_path" if by_path else ""), "Open an event stream", responses,
                   parameters=params)


def _publish(settings: Settings) -> dict[str, Any]:
    batch = {"type": "array", "minItems": 1, "maxItems": settings.max_batch, "items": {"$ref": REF + "Event"}}
    body = {"required": True, "content": {
        JSON: {"schema": {"oneOf": [{"$ref": REF + "Event"}, batch]}, "example": {"to": "u1", "data": "hi"}},
        FORM: {"schema": {"$ref": REF + "EventForm"}, "encoding": {"to": {"style": "form", "explode": True}}},
    }}
    accepted = {"description": "published: one answer, or one per event of a batch, in order",
                "headers": {"Idempotent-Replayed": {
                    "description": "true when this is the first answer to the same Idempotency-Key again",
                    "schema": {"type": "string", "enum": ["true"]}}},
                "content": {JSON: {"schema": {"oneOf": [
                    {"$ref": REF + "Published"}, {"type": "array", "items": {"$ref": REF + "Published"}}]}}}}
    key = {"name": "Idempotency-Key", "in": "header", "required": False,
           "description": "a repeat with the same key and body publishes nothing, answering as the first did",
           "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX,
                      "pattern": "^[\\x20-\\x7e]+$"}}
    return _answer("publish", "Publish one event, or a batch", {
        "202": accepted, **_errors(400, 401, 403, 409, 413, 415, 422, 503)},
        parameters=[key], requestBody=body, **{"x-publisher": True})


def _legacy(operation_id: str) -> dict[str, Any]:
    params = [*_id_params(("id", "clientId", "uid")), _query("content", "the data"),
              _query("data", "the data, when content is absent"), _query("event", "an event name")]
    # 404: turned off by PUSHSVC_LEGACY_ROUTES; 415: a POST body that is not form-encoded.
    responses = {"202": _json_body("Published", "published to that client"),
                 **_errors(400, 401, 403, 404, 413, 415, 503)}
    form = {"content": {FORM: {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}
    summary = "Publish to one client (the original design's form)"
    return {"get": _answer(operation_id, summary, responses, parameters=params, **{"x-publisher": True}),
            "post": _answer(operation_id + "_post", summary, responses, parameters=params, requestBody=form,
                            **{"x-publisher": True})}


def _close(*, by_path: bool) -> dict[str, Any]:
    params = [_client_path()] if by_path else _id_params(("id", "clientId"))
    responses = {"200": _json_body("Closed", "every stream of that client got `event: close` and ended"),
                 **_errors(400, 401, 403, *((404,) if by_path else ()))}
    name = "close" + ("_by_path" if by_path else "")
    return {method: _answer(f"{name}_{method}", "End every stream of a client, for good", responses,
                            parameters=params, **{"x-publisher": True}) for method in ("get", "post")}


def _clients() -> dict[str, Any]:
    return _answer("clients", "The connected clients, whole service",
                   {"200": _json_body("Clients", "every client id with an open stream"),
                    **_errors(401, 403, 503)}, **{"x-publisher": True})


def _client() -> dict[str, Any]:
    return _answer("client", "One connected client", {
        "200": _json_body("Client", "its streams and groups"), **_errors(400, 401, 403, 404, 503)},
        parameters=[_client_path()], **{"x-publisher": True})


def _tickets() -> dict[str, Any]:
    return _answer("tickets", "Trade a subscriber JWT for a ticket: one subscribe within 30 s", {
        "200": _json_body("Ticket", "the ticket"),
        **_errors(401, 403, 503),
        "404": _json_body("Error", "tickets need subscriber tokens (PUSHSVC_JWT_SECRET)")},
        security=[{"subscriberToken": []}])


def _healthz() -> dict[str, Any]:
    return _answer("healthz", "Can this worker serve, and reach its broker?", {
        "200": _json_body("Health", "ok"), "503": _json_body("Health", "the broker cannot be reached")})


def _static() -> dict[str, Any]:
    path = {"name": "filename", "in": "path", "required": True, "example": "pushsvc.js",
            "schema": {"type": "string", "minLength": 1}}
    return _answer("static", "pushsvc.js, the client script, and the demo page's files", {
        "200": {"description": "the file", "content": {"*/*": {"schema": {"type": "string"}}}},
        **_errors(404)}, parameters=[path])


# -- components ----------------------------------------------------------------------------------------


def _schemas(settings: Settings) -> dict[str, Schema]:
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES,
            "pattern": "^[^\\s/\\x00-\\x1f\\x7f-\\x9f]+$",
            "description": f"1-{MAX_NAME_BYTES} bytes of UTF-8; no whitespace, control character or /"}
    event = {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_NAME_BYTES,
             "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$", "not": {"enum": sorted(RESERVED_EVENTS)},
             "description": f"printable, at most {MAX_EVENT_NAME_BYTES} bytes, not a reserved name"}
    return {
        "Name": name,
        "EventName": event,
        "Event": {"oneOf": [_event_variant(target) for target in TARGET_FIELDS]},
        "EventForm": {"oneOf": [_event_variant(target, form=True) for target in TARGET_FIELDS]},
        "Published": _object({"id": {"type": "string", "pattern": "^[0-9A-Za-z._-]{1,64}$"},
                              "online": {"type": "integer", "minimum": 0}}),
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "field": {"type": "string"}, "index": {"type": "integer"}}},
        "Closed": _object({"closed": {"type": "integer", "minimum": 0}}),
        "Client": _object({"id": {"type": "string"}, "connections": {"type": "integer", "minimum": 0},
                           "groups": {"type": "array", "items": {"type": "string"}}}),
        "Clients": _object({"count": {"type": "integer", "minimum": 0},
                            "connections": {"type": "integer", "minimum": 0},
                            "clients": {"type": "array", "items": {"$ref": REF + "Client"}}}),
        "Ticket": _object({"ticket": {"type": "string"}}),
        # Before OpenAPI 3.2 (itemSchema), the schema of an event stream describes each of its events.
        "StreamEvent": {"type": "object", "required": ["data"], "properties": {
            "data": {"type": "string"}, "event": {"type": "string"},
            "id": {"type": "string", "pattern": "^([0-9A-Za-z._-]{1,64})?$"},
            "retry": {"type": "integer", "minimum": 0}}},
        "Health": {"type": "object", "required": ["status", "broker"], "properties": {
            "status": {"enum": ["ok", "unavailable"]}, "broker": {"type": "string"},
            "details": {"type": "object"}, "connections": {"type": "integer", "minimum": 0}}},
    }


def _object(properties: dict[str, Schema]) -> Schema:
    return {"type": "object", "required": list(properties), "properties": properties}


def _event_variant(target: str, *, form: bool = False) -> Schema:
    """One publish object addressed by ``target``, the only target field it has; ``form``: as form fields."""
    names = {"type": "array", "minItems": 1, "items": {"$ref": REF + "Name"}}
    targets = {
        "to": names if form else {"oneOf": [{"$ref": REF + "Name"}, names]},
        "group": {"$ref": REF + "Name"},
        "prefix": {"$ref": REF + "Name"},
        "broadcast": {"const": "true" if form else True},
    }
    data = {"type": "string"} if form else {
        "not": {"type": "null"}, "description": "a string, or any JSON value (sent as JSON)"}
    retry = {"type": "string", "pattern": "^[0-9]{1,8}$"} if form else {
        "type": "integer", "minimum": 0, "maximum": MAX_RETRY_MS}
    return {"type": "object", "required": [target, "data"], "additionalProperties": False, "properties": {
        target: targets[target], "data": data, "event": {"$ref": REF + "EventName"}, "retry": retry}}


def _security() -> dict[str, Any]:
    jwt = "an HS256 JWT signed with PUSHSVC_JWT_SECRET"
    return {
        "publishToken": {"type": "http", "scheme": "bearer", "description": "PUSHSVC_PUBLISH_TOKEN"},
        "subscriberToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": jwt},
        "subscriberCookie": {"type": "apiKey", "in": "cookie", "name": TOKEN_COOKIE, "description": jwt},
        "subscriberQuery": {"type": "apiKey", "in": "query", "name": "token", "description": jwt},
        "ticket": {"type": "apiKey", "in": "query", "name": "ticket",
                   "description": "a one-time ticket from POST /tickets"},
    }
