"""The security modules on their own, without a server: log redaction, the CORS policy, grants and tickets."""

from __future__ import annotations

import logging
import time

import jwt
import pytest

from pushsvc import create_app
from pushsvc.auth import AuthError, Credentials, Gate, Grant, bearer
from pushsvc.brokers.base import BrokerUnavailable
from pushsvc.config import Settings
from pushsvc.cors import Cors
from pushsvc.redact import RedactFilter, redact, redact_query
from pushsvc.tickets import MemoryTickets

SECRET = "unit-secret-0123456789-abcdefghijklmnopqrstu"


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /sse/subscribe/u?token=abc HTTP/1.1", "GET /sse/subscribe/u?token=[redacted] HTTP/1.1"),
    ("/s?group=a&ticket=T1&lastEventId=5", "/s?group=a&ticket=[redacted]&lastEventId=5"),
    ("/s?%74oken=x;TICKET=y&tokens=keep", "/s?%74oken=[redacted];TICKET=[redacted]&tokens=keep"),
    ('"https://a.example/?access_token=z" next', '"https://a.example/?access_token=[redacted]" next'),
    ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
    ("cookie pushsvc_token=eyJhbGciOi.eyJzdWIi.c2ln", "cookie pushsvc_token=[redacted]"),
    ("/sse/subscribe/u?group=token", "/sse/subscribe/u?group=token"),
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_redact_query_keeps_everything_else():
    assert redact_query("a=1&token=2&b&ticket=") == "a=1&token=[redacted]&b&ticket=[redacted]"


def test_filter_rewrites_formatted_records():
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, '"%s"', ("GET /?ticket=T",),
                               None)
    assert RedactFilter().filter(record)
    assert record.getMessage() == '"GET /?ticket=[redacted]"'


def test_cors_named_origins_get_credentials():
    cors = Cors(["https://a.example", "https://b.example/"])
    assert cors.headers("https://b.example") == {
        "Vary": "Origin", "Access-Control-Allow-Origin": "https://b.example",
        "Access-Control-Allow-Credentials": "true"}
    assert cors.headers("https://evil.example") == {"Vary": "Origin"}
    assert "Access-Control-Allow-Methods" not in cors.preflight("https://evil.example")


def test_cors_wildcard_never_with_credentials():
    cors = Cors(["*"])
    assert cors.headers("https://any.example") == {"Access-Control-Allow-Origin": "*"}
    mixed = Cors(["*", "https://a.example"])
    assert mixed.headers("https://a.example")["Access-Control-Allow-Credentials"] == "true"
    assert "Access-Control-Allow-Credentials" not in mixed.headers("https://other.example")


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), ("", None),
    (None, None)])
def test_bearer(header, token):
    assert bearer(header) == token


def test_grant_checks_sub_and_every_group():
    Grant("u1", frozenset({"a", "b"})).check("u1", ["a", "b"])
    Grant("*", frozenset()).check("anyone", [])
    with pytest.raises(AuthError) as refused:
        Grant("u1", frozenset({"a"})).check("u2", [])
    assert refused.value.status == 403
    with pytest.raises(AuthError):
        Grant("u1", frozenset({"a"})).check("u1", ["a", "c"])


def test_ticket_is_taken_once_and_is_stored_as_a_digest():
    tickets = MemoryTickets()
    gate = Gate(Settings.load(environ={}, jwt_secret=SECRET), tickets)
    claims = {"sub": "u1", "groups": ["g"], "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    ticket = gate.issue(token)["ticket"]
    assert len(tickets) == 1 and ticket not in tickets._entries
    assert gate.subscriber("u1", ["g"], Credentials(ticket=ticket)).sub == "u1"
    with pytest.raises(AuthError) as again:
        gate.subscriber("u1", ["g"], Credentials(ticket=ticket))
    assert again.value.status == 401


def test_no_secret_means_open_subscribe_and_no_publisher_check():
    gate = Gate(Settings.load(environ={}), MemoryTickets())
    assert gate.subscriber("u1", ["g"], Credentials()) is None
    gate.publisher(None)


def test_the_app_refuses_a_long_query_itself():
    # gunicorn stops request lines over 8190 bytes first; other servers may not.
    http = create_app().test_client()
    reply = http.get("/sse/subscribe/u1?group=" + "a" * 9000)
    assert reply.status_code == 400 and reply.json["field"] == "query"


def test_a_ticket_that_cannot_be_looked_up_gets_the_soft_refusal(monkeypatch):
    app = create_app(jwt_secret=SECRET)

    def down(key: str) -> str | None:
        raise BrokerUnavailable("redis is down")

    service = app.extensions["pushsvc"]
    monkeypatch.setattr(service.gate.tickets, "take", down)
    reply = app.test_client().get("/sse/subscribe/u1?ticket=some-ticket")
    assert reply.status_code == 200
    assert b"event: busy" in reply.data and b"retry: " in reply.data
    assert service.stats.refused["broker unavailable"] == 1
