"""Contract section 5 over real HTTP: subscriber JWTs, one-time tickets, the publisher token.

The server runs with ``PUSHSVC_JWT_SECRET`` and ``PUSHSVC_PUBLISH_TOKEN`` set; every rule is tried both
accepted and refused, and no refusal may quote the secret or the token it was given.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from .helpers import assert_next_is_marker, connections, publisher, wait_for
from .servers import Gunicorn
from .sse import RawStream

SECRET = "test-jwt-secret-0123456789-abcdefghijklmnop"
PUBLISH_TOKEN = "test-publish-token-9876543210"
ADMIN = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}


def token(sub: str = "alice", *, groups: list[str] | None = None, ttl: float = 300, secret: str = SECRET,
          algorithm: str = "HS256", **claims) -> str:
    payload = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    if groups is not None:
        payload["groups"] = groups
    return jwt.encode(payload, secret, algorithm=algorithm)


def unsigned(payload: dict) -> str:
    """A token with ``alg: none`` and no signature, built by hand (a careful library will not make one)."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    env = {"PUSHSVC_JWT_SECRET": SECRET, "PUSHSVC_PUBLISH_TOKEN": PUBLISH_TOKEN,
           "PUSHSVC_HEARTBEAT_SECONDS": "0.3"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


@pytest.fixture
def http(server: Gunicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=10) as client:
        yield client


@pytest.fixture
def opened(server: Gunicorn) -> Iterator[list[RawStream]]:
    """Streams opened by a test: closed after it, and then none may be left on the server."""
    streams: list[RawStream] = []
    yield streams
    for s in streams:
        s.close()
    assert wait_for(lambda: connections(server, ADMIN) == 0)


def refused(reply: httpx.Response | RawStream, status: int, *secrets: str) -> dict:
    """Assert a JSON refusal with ``status`` that quotes none of ``secrets``; return its body."""
    if isinstance(reply, RawStream):
        reply.read_answer()
        code, body_text = reply.status, reply.body.decode()
        headers = reply.headers
    else:
        code, body_text, headers = reply.status_code, reply.text, reply.headers
    assert code == status, body_text
    for secret in (SECRET, PUBLISH_TOKEN, *secrets):
        assert secret not in body_text
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer")
    body = json.loads(body_text)
    assert body["error"]
    return body


def subscribe(server: Gunicorn, opened: list, path: str, headers: dict[str, str] | None = None) -> RawStream:
    s = RawStream(server.port, path, headers)
    opened.append(s)
    return s


def delivered(server: Gunicorn, stream: RawStream, client_id: str, text: str) -> bool:
    """Publish ``text`` to ``client_id`` and see it arrive on ``stream``."""
    reply = httpx.post(server.url("/sse/publish"), json={"to": client_id, "data": text}, headers=ADMIN)
    assert reply.status_code == 202
    return stream.read_until(f"data: {text}\n\n".encode())


# -- subscriber tokens -------------------------------------------------------------------------------


def test_no_token_is_401(server, opened):
    body = refused(subscribe(server, opened, "/sse/subscribe/alice"), 401)
    assert "token" in body["error"]


@pytest.mark.parametrize("where", ["header", "cookie", "query"])
def test_valid_token_from_each_place_subscribes(server, opened, where):
    t = token("alice")
    path, headers = "/sse/subscribe/alice", {}
    if where == "header":
        headers = bearer(t)
    elif where == "cookie":
        headers = {"Cookie": f"pushsvc_token={t}"}
    else:
        path += f"?token={t}"
    s = subscribe(server, opened, path, headers)
    assert s.status == 200
    assert delivered(server, s, "alice", f"via-{where}")


def test_wildcard_sub_may_use_any_client_id(server, opened):
    s = subscribe(server, opened, "/sse/subscribe/anyone-at-all", bearer(token("*")))
    assert s.status == 200
    assert delivered(server, s, "anyone-at-all", "wild")


@pytest.mark.parametrize(("name", "bad"), [
    ("expired", lambda: token("alice", ttl=-60)),
    ("other secret", lambda: token("alice", secret="another-secret-of-the-same-length-abcdefgh")),
    ("alg none", lambda: unsigned({"sub": "alice", "exp": int(time.time()) + 300})),
    ("HS512", lambda: token("alice", algorithm="HS512")),
    ("no sub", lambda: jwt.encode({"exp": int(time.time()) + 300}, SECRET, algorithm="HS256")),
    ("sub not a string", lambda: jwt.encode({"sub": 5, "exp": int(time.time()) + 300}, SECRET)),
    ("groups not a list", lambda: token("alice", groups="news")),
    ("for another audience", lambda: token("alice", aud="billing")),
    ("not yet valid", lambda: token("alice", nbf=int(time.time()) + 300)),
    ("garbage", lambda: "not.a.jwt"),
    ("tampered", lambda: token("alice")[:-4] + "AAAA"),
])
def test_bad_tokens_are_401_everywhere(server, opened, name, bad):
    t = bad()
    refused(subscribe(server, opened, "/sse/subscribe/alice", bearer(t)), 401, t)
    refused(subscribe(server, opened, f"/sse/subscribe/alice?token={t}"), 401, t)
    refused(subscribe(server, opened, "/sse/subscribe/alice", {"Cookie": f"pushsvc_token={t}"}), 401, t)


def test_expired_token_says_so(server, opened):
    body = refused(subscribe(server, opened, "/sse/subscribe/alice", bearer(token(ttl=-5))), 401)
    assert "expired" in body["error"]


def test_token_for_another_client_is_403(server, opened):
    t = token("mallory")
    refused(subscribe(server, opened, "/sse/subscribe/alice", bearer(t)), 403, t)
    refused(subscribe(server, opened, "/sse/subscribe?clientId=alice", bearer(t)), 403, t)


def test_groups_must_all_be_in_the_claim(server, opened):
    t = token("alice", groups=["news", "sport"])
    ok = subscribe(server, opened, "/sse/subscribe/alice?group=news&group=sport", bearer(t))
    assert ok.status == 200
    reply = httpx.post(server.url("/sse/publish"), json={"group": "sport", "data": "goal"}, headers=ADMIN)
    assert reply.status_code == 202
    assert ok.read_until(b"data: goal\n\n")
    body = refused(subscribe(server, opened, "/sse/subscribe/alice?group=news&group=admins", bearer(t)), 403)
    assert "admins" in body["error"]
    refused(subscribe(server, opened, "/sse/subscribe/alice?group=news", bearer(token("alice"))), 403)


def test_header_wins_over_a_stale_cookie(server, opened):
    headers = {**bearer(token("alice")), "Cookie": f"pushsvc_token={token('alice', ttl=-60)}"}
    assert subscribe(server, opened, "/sse/subscribe/alice", headers).status == 200


# -- tickets -----------------------------------------------------------------------------------------


def ticket_for(http: httpx.Client, t: str) -> str:
    reply = http.post("/sse/tickets", headers=bearer(t))
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    assert 1 <= reply.json()["expires_in"] <= 30
    return reply.json()["ticket"]


def test_ticket_is_good_once(server, http, opened):
    ticket = ticket_for(http, token("alice", groups=["news"]))
    s = subscribe(server, opened, f"/sse/subscribe/alice?group=news&ticket={ticket}")
    assert s.status == 200
    assert delivered(server, s, "alice", "ticketed")
    refused(subscribe(server, opened, f"/sse/subscribe/alice?group=news&ticket={ticket}"), 401, ticket)


def test_ticket_keeps_the_sub_and_groups_of_its_token(server, http, opened):
    ticket = ticket_for(http, token("alice", groups=["news"]))
    refused(subscribe(server, opened, f"/sse/subscribe/bob?ticket={ticket}"), 403, ticket)
    ticket = ticket_for(http, token("alice", groups=["news"]))
    refused(subscribe(server, opened, f"/sse/subscribe/alice?group=admins&ticket={ticket}"), 403, ticket)


def test_ticket_never_outlives_its_token(server, http, opened):
    # Two seconds or more to buy the ticket, however busy the machine; then wait past the token's end
    # (not past the ticket's 30 s): only the token's expiry can refuse it.
    expires = int(time.time()) + 3
    ticket = ticket_for(http, token("alice", exp=expires))
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    refused(subscribe(server, opened, f"/sse/subscribe/alice?ticket={ticket}"), 401, ticket)


def test_unknown_ticket_is_401(server, opened):
    refused(subscribe(server, opened, "/sse/subscribe/alice?ticket=made-up-ticket"), 401, "made-up-ticket")


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer " + "x.y.z"},
    {"Authorization": "Bearer " + token("alice", ttl=-5)},
    {"Authorization": "Bearer " + token("alice", secret="another-secret-of-the-same-length-abcdefgh")},
    {"Authorization": "Bearer " + unsigned({"sub": "alice"})},
    {"Cookie": "pushsvc_token=" + token("alice")},
])
def test_ticket_needs_a_valid_bearer_token(http, headers):
    refused(http.post("/sse/tickets", headers=headers), 401, *headers.values())


# -- publisher and admin calls ---------------------------------------------------------------------


PUBLISHER_CALLS = [
    ("POST", "/sse/publish", {"json": {"to": "alice", "data": "x"}}, 202),
    ("POST", "/sse/publish", {"json": [{"broadcast": True, "data": "x"}]}, 202),
    ("GET", "/sse/push?id=alice&content=x", {}, 202),
    ("POST", "/sse/push?id=alice&content=x", {}, 202),
    ("GET", "/sse/send?clientId=alice&content=x", {}, 202),
    ("POST", "/sse/send", {"data": {"clientId": "alice", "content": "x"}}, 202),
    ("POST", "/sse/close/alice", {}, 200),
    ("GET", "/sse/close/alice", {}, 200),
    ("GET", "/sse/close?id=alice", {}, 200),
    ("GET", "/sse/clients", {}, 200),
    ("GET", "/sse/clients/alice", {}, 404),
]


@pytest.mark.parametrize(("method", "path", "kw", "status"), PUBLISHER_CALLS)
def test_publisher_calls_need_the_publish_token(http, method, path, kw, status):
    refused(http.request(method, path, **kw), 401)
    refused(http.request(method, path, headers=bearer("wrong-token"), **kw), 403, "wrong-token")
    refused(http.request(method, path, headers=bearer(PUBLISH_TOKEN + "x"), **kw), 403)
    refused(http.request(method, path, headers={"Authorization": f"Basic {PUBLISH_TOKEN}"}, **kw), 401)
    # A subscriber's JWT is not a publisher's token.
    refused(http.request(method, path, headers=bearer(token("*")), **kw), 403)
    assert http.request(method, path, headers=ADMIN, **kw).status_code == status


def test_refused_publish_reaches_no_stream(server, http, opened):
    s = subscribe(server, opened, "/sse/subscribe/alice", bearer(token("alice")))
    assert s.read_until(b"retry:")
    http.post("/sse/publish", json={"to": "alice", "data": "forged"}, headers=bearer("wrong"))
    http.get("/sse/push?id=alice&content=forged")
    http.post("/sse/close/alice")
    assert_next_is_marker(s, publisher(http.post, headers=ADMIN, to="alice"))


def test_health_needs_no_token(http):
    assert http.get("/healthz").status_code == 200
    assert http.get("/sse/healthz").status_code == 200
