"""What a request carries, read strictly: the query string, a form or JSON body, a subscriber's credentials.

werkzeug is lenient where pushsvc must not be (an invalid escape such as ``%ED%B0`` is kept as its literal
text, which would publish or look up something other than what was sent), so the query and form bodies are
decoded here, once per request, by one strict decoder.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes

from flask import request
from werkzeug.datastructures import MultiDict

from .auth import Credentials, bearer
from .idempotency import HEADER, check_key, fingerprint_body
from .messages import InvalidInput

CLIENT_ID_PARAMS = ("clientId", "id", "uid")
TOKEN_COOKIE = "pushsvc_token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
ACCEPTED_TYPES = f"application/json (or a +json type), {FORM_TYPES[0]} or {FORM_TYPES[1]}"


def client_id_of(values: Any, missing: str, field: str) -> str:
    """The client id of a query or form, under any of the names the original design used."""
    client_id = next((values[p] for p in CLIENT_ID_PARAMS if p in values), None)
    if client_id is None:
        raise InvalidInput(missing, field=field)
    return client_id


def credentials() -> Credentials:
    """The first of: ``Authorization: Bearer``, ``?ticket=``, ``?token=``, the ``pushsvc_token`` cookie."""
    environ = request.environ
    token = bearer(environ.get("HTTP_AUTHORIZATION"))
    if token is not None:
        return Credentials(token=token)
    ticket = arg("ticket")
    if ticket:
        return Credentials(ticket=ticket)
    cookie = request.cookies.get(TOKEN_COOKIE) if "HTTP_COOKIE" in environ else None
    return Credentials(token=arg("token") or cookie or None)


def payload() -> Any:
    """The publish body: a JSON object or array, or form fields (``to`` may repeat).

    JSON only when the request says so: a page on another site can POST ``text/plain`` (JSON inside) from a
    visitor's browser without a CORS preflight, so any other type is ``415``.
    """
    mimetype = request.mimetype
    if mimetype in FORM_TYPES:
        return form_values()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        what = f"Content-Type {mimetype!r}" if mimetype else "a body without a Content-Type"
        raise InvalidInput(f"{what} is not accepted: send {ACCEPTED_TYPES}", field="Content-Type",
                           status=415)
    raw = request.get_data(cache=True)
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


def legacy_values() -> dict[str, Any]:
    """The fields of ``/push`` and ``/send``: a POST's form fields, then the query over them. A POST with
    a body of another type is ``415``, as for publish."""
    values: dict[str, Any] = {}
    if request.method == "POST":
        if request.mimetype in FORM_TYPES:
            values = form_values()
        elif request.get_data(cache=True):
            raise InvalidInput(f"/push and /send read the query or form fields: send {FORM_TYPES[0]} or "
                               f"{FORM_TYPES[1]}", field="Content-Type", status=415)
    values.update(args().items())
    return values


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header, checked, or ``None`` when there is none."""
    value = request.headers.get(HEADER)
    return None if value is None else check_key(value)


def fingerprint() -> str:
    """What a repeat under the same Idempotency-Key must match: the Content-Type and the raw body, or the
    fields of a multipart form (its boundary is new in each request)."""
    content_type = request.headers.get("Content-Type", "")
    if request.mimetype == "multipart/form-data":
        form = request.form
        return fingerprint_body("multipart/form-data", [(k, v) for k in form for v in form.getlist(k)])
    return fingerprint_body(content_type, request.get_data(cache=True))


def form_values() -> dict[str, Any]:
    if request.mimetype == "multipart/form-data":
        form = request.form
        pairs = [(k, v) for k in form for v in form.getlist(k)]
    else:
        pairs = decode_pairs(request.get_data(cache=True), "the form body")
    values: dict[str, Any] = {}
    for key, value in pairs:
        if key == "to" and "to" in values:
            values["to"] = [*([values["to"]] if isinstance(values["to"], str) else values["to"]), value]
        else:
            values[key] = value
    return values


def args() -> MultiDict[str, str]:
    """The query string, decoded strictly: werkzeug keeps an invalid escape such as ``%ED%B0`` as its
    literal text, which would publish (or look up) something other than what was sent."""
    environ = request.environ
    parsed = environ.get("pushsvc.args")
    if parsed is None:
        parsed = environ["pushsvc.args"] = MultiDict(decode_pairs(request.query_string, "the query string"))
    return parsed


def arg(name: str) -> str | None:
    """The first value of a query parameter, or ``None`` (MultiDict.get pays for an exception on a miss,
    and a subscribe asks for four parameters that are usually absent)."""
    query = args()
    return query[name] if name in query else None  # noqa: SIM401 - that get() is the slow one


# Printable ASCII stays as it is; raw bytes above it (unescaped UTF-8 from a careless client) are escaped
# first, so one strict decoder handles both.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def decode_pairs(raw: bytes, what: str) -> list[tuple[str, str]]:
    text = quote_from_bytes(raw, safe=_URL_SAFE)
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"{what} is not valid URL-encoded UTF-8") from None
