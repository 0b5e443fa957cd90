"""The OpenAPI document is valid OpenAPI 3.1, names every route of the blueprint (and no other), and a live
server answers what it says: schemathesis sends each operation valid and invalid requests (bounded), and
every answer must be no 5xx, with a documented status, content type, headers and body.

The live server takes one stream (``PUSHSVC_MAX_CONNECTIONS=1``) and holds it, so every fuzzed subscribe
gets the soft refusal, a complete ``200 text/event-stream`` answer that ends, instead of a stream that
never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pushsvc import Push, create_app, inputs, openapi
from pushsvc.config import Settings

from .servers import Gunicorn
from .sse import RawStream

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES = 20
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def served(app: Flask, prefix: str = "/sse") -> dict[str, Any]:
    reply = app.test_client().get(f"{prefix}/openapi.json")
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    return reply.get_json()


def routes(app: Flask) -> set[tuple[str, str]]:
    """(METHOD, path) of each route of the blueprint, in OpenAPI's ``{name}`` path syntax."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("pushsvc."):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            found |= {(method, path) for method in rule.methods - IGNORED_METHODS}
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


@pytest.mark.parametrize("prefix", ["/sse", "/api/push/v1"])
def test_the_document_is_openapi_3_1(prefix: str):
    document = served(create_app(url_prefix=prefix), prefix)
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # each one valid JSON Schema 2020-12


@pytest.mark.parametrize("prefix", ["/sse", "/api/push/v1"])
def test_every_route_is_documented_and_nothing_else(prefix: str):
    standalone = create_app(url_prefix=prefix)
    embedded = Flask(__name__)
    Push(embedded, url_prefix=prefix)
    for app in standalone, embedded:
        assert routes(app) == documented(served(app, prefix))
        assert all(path.startswith(prefix + "/") for _, path in routes(app))


def test_security_follows_the_settings():
    open_doc = openapi.document(Settings.load(environ={}))
    guarded = openapi.document(Settings.load(environ={}, publish_token="t", jwt_secret="s" * 32))
    assert not any("security" in op for op in operations(open_doc) if op["operationId"] != "tickets")
    publish = guarded["paths"]["/sse/publish"]["post"]
    assert publish["security"] == [{"publishToken": []}]
    assert {"401", "403", "409", "415", "422"} <= set(publish["responses"])
    assert guarded["paths"]["/sse/subscribe"]["get"]["security"] == [
        {name: []} for name in openapi.SUBSCRIBER_SCHEMES]
    assert guarded["components"]["securitySchemes"]["subscriberCookie"]["name"] == inputs.TOKEN_COOKIE


def operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in document["paths"].values():
        yield from item.values()


# -- against a live server -----------------------------------------------------------------------------

LIVE_OPERATIONS = sorted(documented(openapi.document(Settings.load(environ={}))))


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Gunicorn, Any]]:
    with Gunicorn(env={"PUSHSVC_MAX_CONNECTIONS": "1"}) as server:
        holder = RawStream(server.port, "/sse/subscribe/openapi-holder")
        try:
            assert holder.read_until(b"retry: 3000\n")
            yield server, schemathesis.openapi.from_url(server.url("/sse/openapi.json"))
        finally:
            holder.close()


@pytest.mark.parametrize(("method", "path"), LIVE_OPERATIONS, ids=[f"{m} {p}" for m, p in LIVE_OPERATIONS])
def test_the_server_answers_as_documented(live: tuple[Gunicorn, Any], method: str, path: str):
    server, schema = live
    operation = schema[path][method]
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"):
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def answers_as_documented(case: Any) -> None:
        # A bounded read: a stream that did not end as the soft refusal does fails here, never hangs.
        case.call_and_validate(base_url=server.base, checks=CHECKS, timeout=10)

    answers_as_documented()


def test_known_answers_match_the_document(live: tuple[Gunicorn, Any]):
    """What fuzzing rarely reaches: a served file, a batch, a connected client's entry."""
    server, schema = live
    cases = [
        schema["/sse/static/{filename}"]["GET"].Case(path_parameters={"filename": "pushsvc.js"}),
        schema["/sse/publish"]["POST"].Case(media_type="application/json", body=[
            {"to": ["openapi-holder", "u2"], "data": {"n": 1}, "event": "e", "retry": 10},
            {"broadcast": True, "data": "all"}]),
        schema["/sse/publish"]["POST"].Case(media_type="application/x-www-form-urlencoded",
                                            body={"group": "g", "data": "form"}),
        schema["/sse/clients/{client_id}"]["GET"].Case(path_parameters={"client_id": "openapi-holder"}),
        schema["/sse/clients"]["GET"].Case(),
    ]
    statuses = [case.call_and_validate(base_url=server.base, checks=CHECKS, timeout=10).status_code
                for case in cases]
    assert statuses == [200, 202, 202, 200, 200]


def test_refusals_without_the_publish_token_match_the_document():
    with Gunicorn(env={"PUSHSVC_PUBLISH_TOKEN": "secret"}) as server:
        schema = schemathesis.openapi.from_url(server.url("/sse/openapi.json"))
        publish = schema["/sse/publish"]["POST"]
        cases = [(publish.Case(media_type="application/json", body={"to": "u1", "data": "x"}), {}),
                 (publish.Case(media_type="application/json", body={"to": "u1", "data": "x"}),
                  {"Authorization": "Bearer wrong"}),
                 (schema["/sse/clients"]["GET"].Case(), {}),
                 (schema["/sse/close/{client_id}"]["POST"].Case(path_parameters={"client_id": "u1"}), {})]
        statuses = [case.call_and_validate(base_url=server.base, checks=CHECKS, headers=headers,
                                           timeout=10).status_code for case, headers in cases]
    assert statuses == [401, 403, 401, 401]
