"""The HTTP surface of the contract: parse and validate the request, call the service, answer JSON."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound

from . import inputs, openapi
from .auth import AuthError, bearer
from .brokers.base import BrokerUnavailable
from .config import MAX_REQUEST_LINE_BYTES
from .cors import Cors
from .messages import InvalidInput, build_batch, build_message, check_flag, check_groups, check_name
from .server.peer import SocketPeer
from .service import Service, Subscription

log = logging.getLogger(__name__)

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told otherwise; an event stream must pass through at once.
    "X-Accel-Buffering": "no",
}
STREAM_TYPE = "text/event-stream; charset=utf-8"
# Publishing and the admin calls; with PUSHSVC_PUBLISH_TOKEN set they need it.
PUBLISHER_ENDPOINTS = frozenset({"publish", "legacy_push", "legacy_send", "close", "clients", "client"})
MAX_QUERY_BYTES = MAX_REQUEST_LINE_BYTES


def service() -> Service:
    """The :class:`Service` of the current application."""
    return current_app.extensions["pushsvc"]


def create_blueprint(name: str = "pushsvc") -> Blueprint:
    bp = Blueprint(name, __name__, static_folder="static", static_url_path="/static")
    bp.before_request(_guard)
    bp.after_request(_cors_headers)
    bp.register_error_handler(InvalidInput, _invalid)
    bp.register_error_handler(AuthError, _refused)
    bp.register_error_handler(BrokerUnavailable, _unavailable)
    bp.register_error_handler(HTTPException, json_http_error)

    # path: an id with an encoded "/" must get the 400 of a bad id, not a 404.
    bp.add_url_rule("/subscribe/<path:client_id>", view_func=subscribe, methods=["GET"])
    bp.add_url_rule("/subscribe", view_func=subscribe, methods=["GET"])
    bp.add_url_rule("/publish", view_func=publish, methods=["POST"])
    bp.add_url_rule("/push", view_func=legacy_push, methods=["GET", "POST"])
    bp.add_url_rule("/send", view_func=legacy_push, methods=["GET", "POST"], endpoint="legacy_send")
    bp.add_url_rule("/close/<client_id>", view_func=close, methods=["GET", "POST"])
    bp.add_url_rule("/close", view_func=close, methods=["GET", "POST"])
    bp.add_url_rule("/clients", view_func=clients, methods=["GET"])
    bp.add_url_rule("/clients/<client_id>", view_func=client, methods=["GET"])
    bp.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    bp.add_url_rule("/tickets", view_func=tickets, methods=["POST"])
    bp.add_url_rule("/openapi.json", view_func=openapi_document, methods=["GET"])
    return bp


# -- subscribe ---------------------------------------------------------------------------------------


def subscribe(client_id: str | None = None) -> Response:
    svc = service()
    query = inputs.args()
    if client_id is None:
        client_id = inputs.client_id_of(query, "a client id is required: /subscribe/<id> or ?clientId=",
                                        "clientId")
    check_name(client_id)
    groups = check_groups(query.getlist("group"), svc.settings)
    last_event_id = request.environ.get("HTTP_LAST_EVENT_ID") or inputs.arg("lastEventId") or None
    sock = request.environ.get("gunicorn.socket")
    peer = SocketPeer(sock) if sock is not None else None
    presence = check_flag(query.get("presence"), field="presence")
    return _render(svc.subscribe(client_id, groups, last_event_id=last_event_id,
                                 credentials=inputs.credentials(), peer=peer, presence=presence))


def _render(sub: Subscription) -> Response:
    """The answer the service decided: a stream (or a soft refusal), 204, or a 401/403."""
    if sub.error is not None:
        response, status = _refused(sub.error)
        response.status_code = status
        return response
    if sub.status == 204:
        return Response(status=204, headers={"Cache-Control": "no-cache"})
    return Response(sub.body, status=sub.status, content_type=STREAM_TYPE, headers=STREAM_HEADERS,
                    direct_passthrough=True)


def tickets() -> tuple[Response, int]:
    """Trade the subscriber JWT in ``Authorization`` for a one-time ``?ticket=`` (30 s, one subscribe)."""
    gate = service().gate
    if not gate.tokens_required:
        raise AuthError("tickets need subscriber tokens: set PUSHSVC_JWT_SECRET", status=404)
    response = jsonify(gate.issue(bearer(request.headers.get("Authorization"))))
    response.headers["Cache-Control"] = "no-store"
    return response, 200


# -- publish -----------------------------------------------------------------------------------------


def publish() -> Response:
    svc = service()
    key = inputs.idempotency_key()
    payload = inputs.payload()
    batch = isinstance(payload, list)
    messages = build_batch(payload, svc.settings) if batch else [build_message(payload, svc.settings)]
    # A body refused above (400, 413, 415) was never claimed: a retry with it fixed publishes.
    if key is None:
        results, replayed = svc.publish(messages), False
    else:
        results, replayed = svc.publish_once(key, inputs.fingerprint(), messages)
    response = _json([r.to_json() for r in results] if batch else results[0].to_json(), 202)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def legacy_push() -> tuple[Response, int]:
    """``/push?id=&content=`` and ``/send?clientId=&content=`` of the original design."""
    svc = service()
    if not svc.settings.legacy_routes:
        raise NotFound("the legacy /push and /send are turned off (PUSHSVC_LEGACY_ROUTES); use /publish")
    values = inputs.legacy_values()
    client_id = inputs.client_id_of(values, "a client id is required (?id= or ?clientId=)", "id")
    fields: dict[str, Any] = {"to": client_id, "data": values.get("content", values.get("data"))}
    if values.get("event"):
        fields["event"] = values["event"]
    result = svc.publish([build_message(fields, svc.settings)])[0]
    return _json(result.to_json(), 202)


# The standard library's encoder, built once: jsonify builds a new one for every answer (its options
# differ from json.dumps' defaults), which is a tenth of what a publish costs pushsvc itself.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(body: Any, status: int) -> Response:
    """The JSON answer to a publish: compact, like jsonify's outside debug mode."""
    return Response(_ENCODER.encode(body) + "\n", status=status, content_type="application/json")


# -- close, clients, health --------------------------------------------------------------------------


def close(client_id: str | None = None) -> Response:
    svc = service()
    if client_id is None:
        client_id = inputs.client_id_of(inputs.args(), "a client id is required: /close/<id> or ?id=", "id")
    check_name(client_id)
    return jsonify({"closed": svc.close(client_id)})


def clients() -> Response:
    entries = service().clients()
    return jsonify({
        "count": len(entries),
        "connections": sum(e.connections for e in entries.values()),
        "clients": [e.to_json() for e in entries.values()],
    })


def client(client_id: str) -> tuple[Response, int]:
    check_name(client_id)
    entry = service().client(client_id)
    if entry is None:
        return jsonify({"error": f"client {client_id!r} has no open stream"}), 404
    return jsonify(entry.to_json()), 200


def openapi_document() -> Response:
    """The OpenAPI 3.1 document of this blueprint, at its prefix (pushsvc/openapi.py)."""
    return jsonify(openapi.document(service().settings))


def healthz() -> tuple[Response, int]:
    svc = service()
    state = svc.health()
    body = {"status": "ok" if state.get("ok") else "unavailable", "broker": svc.broker.name,
            "details": state, "connections": len(svc.registry)}
    return jsonify(body), 200 if state.get("ok") else 503


# -- errors ------------------------------------------------------------------------------------------


def _guard() -> Response | None:
    """Limit the body; answer CORS preflights; refuse oversized queries and publish/admin calls without
    the token."""
    req = request._get_current_object()  # one proxy lookup instead of one per attribute
    environ = req.environ
    svc = service()
    req.max_content_length = svc.settings.max_body_bytes
    if req.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
        cors: Cors = current_app.extensions["pushsvc.cors"]
        return Response(status=204, headers=cors.preflight(environ.get("HTTP_ORIGIN")))
    if len(req.query_string) > MAX_QUERY_BYTES:
        raise InvalidInput(f"the query string is longer than {MAX_QUERY_BYTES} bytes", field="query")
    if (req.endpoint or "").rpartition(".")[2] in PUBLISHER_ENDPOINTS:
        svc.gate.publisher(environ.get("HTTP_AUTHORIZATION"))
    return None


def _cors_headers(response: Response) -> Response:
    cors: Cors = current_app.extensions["pushsvc.cors"]
    for name, value in cors.headers(request.environ.get("HTTP_ORIGIN")).items():
        if name == "Vary":
            response.vary.add(value)
        else:
            response.headers[name] = value
    return response


def _refused(error: AuthError) -> tuple[Response, int]:
    response = jsonify(error.to_json())
    if error.status == 401:
        challenge = f', error="{error.challenge}"' if error.challenge else ""
        response.headers["WWW-Authenticate"] = f'Bearer realm="pushsvc"{challenge}'
    return response, error.status


def _invalid(error: InvalidInput) -> tuple[Response, int]:
    return jsonify(error.to_json()), error.status


def _unavailable(error: BrokerUnavailable) -> tuple[Response, int]:
    log.warning("broker unavailable: %s", error)
    return jsonify({"error": error.answer}), 503


def json_http_error(error: HTTPException) -> tuple[Response, int]:
    """Any HTTP error (404, 405, 413 …) as a JSON body, like every other error pushsvc answers."""
    return jsonify({"error": error.description or error.name}), error.code or 500

