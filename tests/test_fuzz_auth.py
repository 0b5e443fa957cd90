"""Hostile credentials, generated: arbitrary strings and forged JWTs (any ``alg``, any claims, signed with
the wrong key or not at all) in every place a token or ticket may travel, and arbitrary publisher tokens.
Every answer is 401 or 403 with a JSON error that does not echo what was sent; nothing is ever accepted."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .servers import Gunicorn
from .sse import RawStream

SECRET = "fuzz-auth-secret-0123456789-abcdefghijklmno"
PUBLISH_TOKEN = "fuzz-auth-publisher-token-0123456789"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                   max_size=3), max_leaves=6)
ALGS = st.sampled_from(["none", "None", "NONE", "HS256 ", "hs256", "HS384", "HS512", "RS256", "ES256", "",
                        "HS256\x00"])
HEADER = st.fixed_dictionaries({"alg": ALGS | JSONISH},
                               optional={"typ": JSONISH, "kid": JSONISH, "crit": JSONISH})
CLAIMS = st.fixed_dictionaries({}, optional={"sub": st.sampled_from(["fa-user", "*"]) | JSONISH,
                                             "groups": JSONISH, "exp": JSONISH | st.floats(), "nbf": JSONISH})
SIGNATURE = st.sampled_from(["", "AAAA", "x" * 43]) | st.binary(max_size=64).map(b64)
FORGED = st.builds(lambda h, c, s: f"{b64(json.dumps(h).encode())}.{b64(json.dumps(c).encode())}.{s}",
                   HEADER, CLAIMS, SIGNATURE)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
CREDENTIAL = FORGED | ANY_TEXT | st.builds(lambda a, b: f"{a}.{b}", FORGED, ANY_TEXT)

FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    env = {"PUSHSVC_JWT_SECRET": SECRET, "PUSHSVC_PUBLISH_TOKEN": PUBLISH_TOKEN,
           "PUSHSVC_HEARTBEAT_SECONDS": "0.5"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


def header_safe(value: str) -> str | None:
    """``value`` if it is printable ASCII; gunicorn itself answers 400 to other bytes in a header."""
    return value if value.isascii() and value.isprintable() else None


def assert_refused(status: int, body: bytes, sent: str) -> None:
    assert status in (401, 403), (status, body)
    text = body.decode()
    assert json.loads(text)["error"]
    if len(sent) >= 8:
        assert sent not in text
    assert SECRET not in text


@FUZZ
@given(CREDENTIAL, st.sampled_from(["query-token", "query-ticket", "header", "cookie"]))
def test_forged_subscriber_credentials_are_refused(server, credential, where):
    path, headers = "/sse/subscribe/fa-user", {}
    if where == "query-token":
        path += "?token=" + quote(credential, safe="", errors="surrogatepass")
    elif where == "query-ticket":
        path += "?ticket=" + quote(credential, safe="", errors="surrogatepass")
    else:
        value = header_safe(credential.strip())
        if not value:
            return
        headers = {"Authorization": f"Bearer {value}"} if where == "header" else {
            "Cookie": f"pushsvc_token={value}"}
    s = RawStream(server.port, path, headers)
    try:
        s.read_answer()
        if s.status == 400 and where.startswith("query"):
            return  # an empty or undecodable query value: refused before auth, also fine
        assert_refused(s.status, s.body, credential)
    finally:
        s.close()


@FUZZ
@given(CREDENTIAL)
def test_forged_tokens_buy_no_ticket(server, credential):
    value = header_safe(credential.strip())
    if not value:
        return
    reply = httpx.post(server.url("/sse/tickets"), headers={"Authorization": f"Bearer {value}"})
    assert_refused(reply.status_code, reply.content, credential)


@FUZZ
@given(ANY_TEXT | st.sampled_from([PUBLISH_TOKEN[:-1], PUBLISH_TOKEN + " x", PUBLISH_TOKEN.upper()]))
def test_wrong_publisher_tokens_are_refused(server, credential):
    value = header_safe(credential.strip())
    if not value or value == PUBLISH_TOKEN:
        return
    reply = httpx.post(server.url("/sse/publish"), json={"broadcast": True, "data": "forged"},
                       headers={"Authorization": f"Bearer {value}"})
    assert_refused(reply.status_code, reply.content, credential)
