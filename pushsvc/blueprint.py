"""The HTTP surface of the contract: parse and validate the request, call the service, answer JSON."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from .auth import AuthError, Credentials, Gate, bearer
from .broker import BrokerUnavailable
from .cors import Cors
from .messages import InvalidInput, build_batch, build_message, check_groups, check_name
from .peer import SocketPeer
from .service import Service

log = logging.getLogger(__name__)

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told otherwise; an event stream must pass through at once.
    "X-Accel-Buffering": "no",
}
STREAM_TYPE = "text/event-stream; charset=utf-8"
CLIENT_ID_PARAMS = ("clientId", "id", "uid")
TOKEN_COOKIE = "pushsvc_token"
# Publishing and the admin calls; with PUSHSVC_PUBLISH_TOKEN set they need it.
PUBLISHER_ENDPOINTS = frozenset({"publish", "legacy_push", "legacy_send", "close", "clients", "client"})
# gunicorn's own ceiling for a request line is 8190 bytes; other servers may allow more.
MAX_QUERY_BYTES = 8190


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
    bp.register_error_handler(HTTPException, _http_error)

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
    return bp


# -- subscribe ---------------------------------------------------------------------------------------


def subscribe(client_id: str | None = None) -> Response:
    svc = service()
    args = _args()
    if client_id is None:
        client_id = next((args[p] for p in CLIENT_ID_PARAMS if p in args), None)
        if client_id is None:
            raise InvalidInput("a client id is required: /subscribe/<id> or ?clientId=", field="clientId")
    check_name(client_id)
    groups = check_groups(args.getlist("group"), svc.settings)
    last_event_id = request.environ.get("HTTP_LAST_EVENT_ID") or _arg("lastEventId") or None
    refusal = _admit(svc, client_id, groups, last_event_id)
    if refusal is not None:
        return refusal
    sock = request.environ.get("gunicorn.socket")
    peer = SocketPeer(sock) if sock is not None else None
    sub = svc.subscribe(client_id, groups, last_event_id=last_event_id, peer=peer)
    if sub.status == 204:
        return Response(status=204, headers={"Cache-Control": "no-cache"})
    return Response(sub.body, status=sub.status, content_type=STREAM_TYPE, headers=STREAM_HEADERS,
                    direct_passthrough=True)


def _admit(svc: Service, client_id: str, groups: tuple[str, ...],
           last_event_id: str | None) -> Response | None:
    """Raise :class:`AuthError` unless this subscribe is allowed; a soft refusal if the broker is down."""
    svc.start()
    try:
        gate().subscriber(client_id, groups, _credentials())
    except BrokerUnavailable:
        # The ticket could not be looked up (nor spent): the browser comes back with it later.
        return Response(svc.soft_refusal("broker unavailable", last_event_id), content_type=STREAM_TYPE,
                        headers=STREAM_HEADERS)
    gate().application(client_id, groups)
    return None


def _credentials() -> Credentials:
    """The first of: ``Authorization: Bearer``, ``?ticket=``, ``?token=``, the ``pushsvc_token`` cookie."""
    environ = request.environ
    token = bearer(environ.get("HTTP_AUTHORIZATION"))
    if token is not None:
        return Credentials(token=token)
    ticket = _arg("ticket")
    if ticket:
        return Credentials(ticket=ticket)
    cookie = request.cookies.get(TOKEN_COOKIE) if "HTTP_COOKIE" in environ else None
    return Credentials(token=_arg("token") or cookie or None)


def tickets() -> tuple[Response, int]:
    """Trade the subscriber JWT in ``Authorization`` for a one-time ``?ticket=`` (30 s, one subscribe)."""
    g = gate()
    if not g.tokens_required:
        raise AuthError("tickets need subscriber tokens: set PUSHSVC_JWT_SECRET", status=404)
    service().start()
    response = jsonify(g.issue(bearer(request.headers.get("Authorization"))))
    response.headers["Cache-Control"] = "no-store"
    return response, 200


# -- publish -----------------------------------------------------------------------------------------


def publish() -> tuple[Response, int]:
    svc = service()
    payload = _payload()
    if isinstance(payload, list):
        results = svc.publish(build_batch(payload, svc.settings))
        return _json([r.to_json() for r in results], 202)
    result = svc.publish([build_message(payload, svc.settings)])[0]
    return _json(result.to_json(), 202)


def legacy_push() -> tuple[Response, int]:
    """``/push?id=&content=`` and ``/send?clientId=&content=`` of the original design."""
    svc = service()
    values = _form_values() if request.method == "POST" else {}
    values.update(_args().items())
    client_id = next((values[p] for p in CLIENT_ID_PARAMS if p in values), None)
    if client_id is None:
        raise InvalidInput("a client id is required (?id= or ?clientId=)", field="id")
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


def _payload() -> Any:
    """The publish body: a JSON object or array, or form fields (``to`` may repeat)."""
    raw = request.get_data(cache=True)
    mimetype = request.mimetype
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return _form_values()
    if not raw.strip():
        raise InvalidInput("the body is empty: send a JSON object, a JSON array or form fields")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the body is not valid UTF-8") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"the body is not valid JSON: {error}") from None


def _form_values() -> dict[str, Any]:
    if request.mimetype == "multipart/form-data":
        form = request.form
        pairs = [(k, v) for k in form for v in form.getlist(k)]
    else:
        pairs = _decode_pairs(request.get_data(cache=True), "the form body")
    values: dict[str, Any] = {}
    for key, value in pairs:
        if key == "to" and "to" in values:
            values["to"] = [*([values["to"]] if isinstance(values["to"], str) else values["to"]), value]
        else:
            values[key] = value
    return values


def _args() -> MultiDict[str, str]:
    """The query string, decoded strictly: werkzeug keeps an invalid escape such as ``%ED%B0`` as its
    literal text, which would publish (or look up) something other than what was sent."""
    environ = request.environ
    args = environ.get("pushsvc.args")
    if args is None:
        args = environ["pushsvc.args"] = MultiDict(_decode_pairs(request.query_string, "the query string"))
    return args


def _arg(name: str) -> str | None:
    """The first value of a query parameter, or ``None`` (MultiDict.get pays for an exception on a miss,
    and a subscribe asks for four parameters that are usually absent)."""
    args = _args()
    return args[name] if name in args else None  # noqa: SIM401 - that get() is the slow one


# Printable ASCII stays as it is; raw bytes above it (unescaped UTF-8 from a careless client) are escaped
# first, so one strict decoder handles both.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _decode_pairs(raw: bytes, what: str) -> list[tuple[str, str]]:
    text = quote_from_bytes(raw, safe=_URL_SAFE)
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"{what} is not valid URL-encoded UTF-8") from None


# -- close, clients, health --------------------------------------------------------------------------


def close(client_id: str | None = None) -> Response:
    svc = service()
    if client_id is None:
        args = _args()
        client_id = next((args[p] for p in CLIENT_ID_PARAMS if p in args), None)
        if client_id is None:
            raise InvalidInput("a client id is required: /close/<id> or ?id=", field="id")
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


def healthz() -> tuple[Response, int]:
    svc = service()
    state = svc.health()
    body = {"status": "ok" if state.get("ok") else "unavailable", "broker": svc.broker.name,
            "details": state, "connections": len(svc.registry)}
    return jsonify(body), 200 if state.get("ok") else 503


# -- errors ------------------------------------------------------------------------------------------


def gate() -> Gate:
    return current_app.extensions["pushsvc.gate"]


def _guard() -> Response | None:
    """Limit the body; answer CORS preflights; refuse oversized queries and publish/admin calls without
    the token."""
    req = request._get_current_object()  # one proxy lookup instead of one per attribute
    environ = req.environ
    req.max_content_length = service().settings.max_body_bytes
    if req.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
        cors: Cors = current_app.extensions["pushsvc.cors"]
        return Response(status=204, headers=cors.preflight(environ.get("HTTP_ORIGIN")))
    if len(req.query_string) > MAX_QUERY_BYTES:
        raise InvalidInput(f"the query string is longer than {MAX_QUERY_BYTES} bytes", field="query")
    if (req.endpoint or "").rpartition(".")[2] in PUBLISHER_ENDPOINTS:
        gate().publisher(environ.get("HTTP_AUTHORIZATION"))
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
    return jsonify({"error": "the broker cannot take events right now; nothing was published"}), 503


def _http_error(error: HTTPException) -> tuple[Response, int]:
    return jsonify({"error": error.description or error.name}), error.code or 500

