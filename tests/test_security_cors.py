"""CORS over real HTTP: preflights answered, ``Access-Control-Allow-Origin`` only for allowed origins, and
credentials only for origins listed by name (never ``*`` with credentials)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .servers import Gunicorn

ALLOWED = "https://app.example"
OTHER_ALLOWED = "https://admin.example:8443"
FOREIGN = "https://evil.example"
PUBLISH_TOKEN = "cors-publish-token-0123456789"


@pytest.fixture(scope="module")
def named() -> Iterator[Gunicorn]:
    """A server that lists its origins (one written with a trailing slash, as people do)."""
    env = {"PUSHSVC_CORS_ORIGINS": f"{ALLOWED}, {OTHER_ALLOWED}/", "PUSHSVC_PUBLISH_TOKEN": PUBLISH_TOKEN}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


@pytest.fixture(scope="module")
def anyone() -> Iterator[Gunicorn]:
    """The default: PUSHSVC_CORS_ORIGINS=*."""
    with Gunicorn() as gunicorn:
        yield gunicorn


def preflight(server: Gunicorn, path: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(server.url(path), headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.mark.parametrize("origin", [ALLOWED, OTHER_ALLOWED])
@pytest.mark.parametrize("path", ["/sse/publish", "/sse/tickets", "/sse/subscribe/u1", "/sse/close/u1"])
def test_preflight_from_a_listed_origin(named, origin, path):
    reply = preflight(named, path, origin)
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == origin
    assert reply.headers["access-control-allow-credentials"] == "true"
    assert "POST" in reply.headers["access-control-allow-methods"]
    allowed_headers = reply.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "origin" in reply.headers["vary"].lower()


@pytest.mark.parametrize("origin", [FOREIGN, "null", "https://app.example.evil.example", "http://app.example"])
def test_preflight_from_a_foreign_origin_allows_nothing(named, origin):
    reply = preflight(named, "/sse/publish", origin)
    assert reply.status_code < 500
    assert "access-control-allow-origin" not in reply.headers
    assert "access-control-allow-credentials" not in reply.headers
    assert "access-control-allow-methods" not in reply.headers


def test_answers_carry_the_origin_only_when_listed(named):
    auth = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
    ok = httpx.post(named.url("/sse/publish"), json={"to": "u1", "data": "x"},
                    headers={"Origin": ALLOWED, **auth})
    assert ok.status_code == 202
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert ok.headers["access-control-allow-credentials"] == "true"
    foreign = httpx.post(named.url("/sse/publish"), json={"to": "u1", "data": "x"},
                         headers={"Origin": FOREIGN, **auth})
    assert "access-control-allow-origin" not in foreign.headers
    assert "origin" in foreign.headers["vary"].lower()


def test_refusals_are_readable_by_a_listed_origin(named):
    # A page of an allowed origin must be able to read why it was refused.
    reply = httpx.post(named.url("/sse/publish"), json={"to": "u1", "data": "x"}, headers={"Origin": ALLOWED})
    assert reply.status_code == 401
    assert reply.headers["access-control-allow-origin"] == ALLOWED


def test_stream_headers_for_a_listed_origin(named):
    with httpx.stream("GET", named.url("/sse/subscribe/cors-stream"), headers={"Origin": ALLOWED}) as reply:
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == ALLOWED
    with httpx.stream("GET", named.url("/sse/subscribe/cors-stream"), headers={"Origin": FOREIGN}) as reply:
        assert "access-control-allow-origin" not in reply.headers


def test_wildcard_never_comes_with_credentials(anyone):
    reply = preflight(anyone, "/sse/publish", FOREIGN)
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in reply.headers
    with httpx.stream("GET", anyone.url("/sse/subscribe/cors-any"), headers={"Origin": FOREIGN}) as stream:
        assert stream.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in stream.headers


def test_no_origin_no_cors_headers(anyone):
    reply = httpx.get(anyone.url("/sse/clients"))
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in reply.headers
