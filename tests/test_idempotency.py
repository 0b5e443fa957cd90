"""Idempotency-Key on ``POST /sse/publish`` against real servers (contract, section 9): a retry is answered
again and delivered once, another body under the key is 422, bad keys are 400; across two gunicorn masters
on one Redis; from the command line. In-process cases (409 in flight, time to live, the stores, the Python
API) are in test_idempotency_units.py."""

from __future__ import annotations

import itertools
import json
import socket
import uuid

import httpx
import pytest

from .helpers import assert_next_is_marker, publisher
from .redis_tools import cluster_env, fresh_post, wait_all_workers
from .servers import Gunicorn, RedisServer
from .sse import RawStream
from .test_cli import run

_ids = itertools.count()


def unique(name: str) -> str:
    return f"{name}-{next(_ids)}-{uuid.uuid4().hex[:8]}"


def post_with_key(server: Gunicorn, key: str, **kw) -> httpx.Response:
    """A publish on a new connection (with two workers, either may answer it)."""
    return fresh_post(server, "/sse/publish", headers={"Idempotency-Key": key, **kw.pop("headers", {})}, **kw)


def test_a_retried_publish_is_answered_again_and_delivered_once(server, streams):
    """Inputs: one JSON publish sent three times with one key (the answer lost, say); each retry on a new
    connection."""
    cid, key = unique("idem-one"), unique("key")
    s = streams.raw(f"/sse/subscribe/{cid}")
    assert s.read_until(b"retry:")
    body = {"to": cid, "data": "charge card", "event": "order"}
    first = post_with_key(server, key, json=body)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = post_with_key(server, key, json=body)
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content  # the same JSON: the same id, the same online count
    assert s.read_until(f"id: {first.json()['id']}\n".encode())
    assert [e.data for e in s.events()] == ["charge card"]
    assert_next_is_marker(s, publisher(lambda path, **kw: fresh_post(server, path, **kw), to=cid))


def test_a_retried_batch_is_answered_again_and_delivered_once(server, streams):
    """Inputs: a batch of three events for two client ids, sent twice with one key."""
    a, b, key = unique("idem-ba"), unique("idem-bb"), unique("key")
    sa, sb = streams.raw(f"/sse/subscribe/{a}"), streams.raw(f"/sse/subscribe/{b}")
    assert sa.read_until(b"retry:") and sb.read_until(b"retry:")
    batch = [{"to": a, "data": "a1"}, {"to": [a, b], "data": "both"}, {"to": b, "data": "b1"}]
    first = post_with_key(server, key, json=batch)
    assert first.status_code == 202 and len(first.json()) == 3
    again = post_with_key(server, key, json=batch)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert sa.read_until(b"data: both\n") and sb.read_until(b"data: b1\n")
    assert [e.id for e in sa.events()] == [first.json()[0]["id"], first.json()[1]["id"]]
    assert [e.id for e in sb.events()] == [first.json()[1]["id"], first.json()[2]["id"]]
    assert_next_is_marker([sa, sb], publisher(lambda path, **kw: fresh_post(server, path, **kw), to=[a, b]))


def test_the_same_key_with_another_body_is_422_and_publishes_nothing(server, streams):
    """Inputs: other data, another target, the same JSON spelt with other spacing, the same bytes as
    another JSON type, a batch of the one event; each under the key of a published event."""
    cid, key = unique("idem-422"), unique("key")
    s = streams.raw(f"/sse/subscribe/{cid}")
    assert s.read_until(b"retry:")
    body = {"to": cid, "data": "first"}
    first = post_with_key(server, key, json=body)
    assert first.status_code == 202
    raw = json.dumps(body).encode()
    others = [dict(json={"to": cid, "data": "second"}), dict(json={"broadcast": True, "data": "first"}),
              dict(content=json.dumps(body, indent=2).encode(), headers={"Content-Type": "application/json"}),
              dict(content=raw, headers={"Content-Type": "application/merge-patch+json"}),
              dict(json=[body])]
    for other in others:
        reply = post_with_key(server, key, **other)
        assert reply.status_code == 422, (other, reply.text)
        assert reply.json()["field"] == "Idempotency-Key" and "another" in reply.json()["error"]
    assert post_with_key(server, key, json=body).content == first.content  # the first answer stays
    assert s.read_until(b"data: first\n")
    assert_next_is_marker(s, publisher(lambda path, **kw: fresh_post(server, path, **kw), to=cid))


def test_a_refused_body_does_not_take_the_key(server, streams):
    """Inputs under one key, in turn: no target (400), data over the limit (413), JSON as text/plain (415),
    then the fixed body, which publishes (202, not replayed)."""
    cid, key = unique("idem-fix"), unique("key")
    s = streams.raw(f"/sse/subscribe/{cid}")
    assert s.read_until(b"retry:")
    assert post_with_key(server, key, json={"data": "no target"}).status_code == 400
    assert post_with_key(server, key, json={"to": cid, "data": "x" * 70_000}).status_code == 413
    text = json.dumps({"to": cid, "data": "fixed"})
    assert post_with_key(server, key, content=text, headers={"Content-Type": "text/plain"}).status_code == 415
    fixed = post_with_key(server, key, json={"to": cid, "data": "fixed"})
    assert fixed.status_code == 202 and "idempotent-replayed" not in fixed.headers
    assert s.read_until(b"data: fixed\n") and [e.data for e in s.events()] == ["fixed"]


def test_form_publishes_are_idempotent_too(server, streams):
    """Inputs: a urlencoded form sent twice; a multipart form sent twice (httpx draws a new boundary for
    each request, so the raw bodies differ while the fields are the same)."""
    cid = unique("idem-form")
    s = streams.raw(f"/sse/subscribe/{cid}")
    assert s.read_until(b"retry:")
    form_key, multi_key = unique("key"), unique("key")
    first = post_with_key(server, form_key, data={"to": cid, "data": "by form"})
    assert post_with_key(server, form_key, data={"to": cid, "data": "by form"}).content == first.content
    fields = {"to": (None, cid), "data": (None, "by multipart")}
    one = post_with_key(server, multi_key, files=fields)
    two = post_with_key(server, multi_key, files=fields)
    assert one.status_code == 202 and two.headers["idempotent-replayed"] == "true"
    assert two.content == one.content
    assert s.read_until(b"data: by multipart\n")
    assert [e.data for e in s.events()] == ["by form", "by multipart"]


def raw_publish(server: Gunicorn, key: bytes) -> tuple[int, bytes]:
    """POST over a plain socket, so the key's bytes reach the server exactly as given."""
    body = b'{"broadcast": true, "data": "bad key"}'
    head = (b"POST /sse/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: " + key + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# (key, what it is, whether the app sees it: gunicorn itself refuses some control bytes in a header, with
# a 400 of its own; the app's check of those is in test_idempotency_units.py).
BAD_KEYS = [
    (b"", "empty", True),
    (b"  ", "spaces only (trimmed to empty)", True),
    (b"k" * 256, "256 bytes", True),
    (b"a\tb", "a tab inside", True),
    ("caf\u00e9".encode("latin-1"), "a byte above ASCII", True),
    ("caf\u00e9".encode(), "UTF-8", True),
    (b"a\x7fb", "DEL", False),
    (b"a\x01b", "SOH", False),
]


@pytest.mark.parametrize(("key", "what", "by_app"), BAD_KEYS, ids=[k[1] for k in BAD_KEYS])
def test_bad_keys_are_400_naming_the_header_and_publish_nothing(server, streams, key, what, by_app):
    s = streams.raw("/sse/subscribe/idem-bad")
    assert s.read_until(b"retry:")
    status, body = raw_publish(server, key)
    assert status == 400, what
    if by_app:
        assert json.loads(body)["field"] == "Idempotency-Key"
    assert_next_is_marker(s, publisher(lambda path, **kw: fresh_post(server, path, **kw), broadcast=True))


def test_the_longest_key_and_every_printable_character_are_accepted(server):
    """Inputs: 255 bytes; every character from space to ``~`` in one key."""
    for key in ("k" * 255, "".join(chr(c) for c in range(0x21, 0x7F)) + " end"):
        first = post_with_key(server, key, json={"broadcast": True, "data": "ok"})
        assert first.status_code == 202, first.text
        again = post_with_key(server, key, json={"broadcast": True, "data": "ok"})
        assert again.headers["idempotent-replayed"] == "true" and again.content == first.content


def test_the_cli_sends_the_key(server, streams):
    """Inputs: ``pushsvc publish --idempotency-key K`` run twice with the same event, once with another."""
    cid, key = unique("idem-cli"), unique("key")
    s = streams.raw(f"/sse/subscribe/{cid}")
    assert s.read_until(b"retry:")
    args = ("publish", "--to", cid, "--idempotency-key", key, "from the shell")
    first, again = run(server.base, *args), run(server.base, *args)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
    other = run(server.base, "publish", "--to", cid, "--idempotency-key", key, "something else")
    assert other.returncode == 1 and "422" in other.stderr
    assert s.read_until(b"data: from the shell\n")
    assert_next_is_marker(s, publisher(lambda path, **kw: fresh_post(server, path, **kw), to=cid))


# -- two gunicorn masters on one Redis ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_masters(redis_server: RedisServer):
    with Gunicorn(workers=2, env=cluster_env(redis_server)) as a, \
            Gunicorn(workers=2, env=cluster_env(redis_server)) as b:
        wait_all_workers(a, redis_server.url)
        wait_all_workers(b, redis_server.url)
        yield a, b


def test_a_retry_on_another_machine_is_answered_again(two_masters, redis_server):
    """Inputs: a publish to master A, its retry to master B (and B's other worker), a batch the same way,
    and another body under A's key on B; streams on both masters."""
    a, b = two_masters
    cid, key, batch_key = unique("idem-far"), unique("key"), unique("key")
    streams = [RawStream(a.port, f"/sse/subscribe/{cid}"), RawStream(b.port, f"/sse/subscribe/{cid}")]
    try:
        for s in streams:
            assert s.read_until(b"retry:")
        first = post_with_key(a, key, json={"to": cid, "data": "once"})
        assert first.status_code == 202 and first.json()["online"] == 2
        for target in (b, b, a):
            again = post_with_key(target, key, json={"to": cid, "data": "once"})
            assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
        conflict = post_with_key(b, key, json={"to": cid, "data": "twice"})
        assert conflict.status_code == 422
        batch = [{"to": cid, "data": "b1"}, {"to": cid, "data": "b2"}]
        one = post_with_key(b, batch_key, json=batch)
        two = post_with_key(a, batch_key, json=batch)
        assert two.headers["idempotent-replayed"] == "true" and two.json() == one.json()
        for s in streams:
            assert s.read_until(b"data: b2\n")
            assert [e.data for e in s.events()] == ["once", "b1", "b2"]
        assert_next_is_marker(streams, publisher(lambda path, **kw: fresh_post(b, path, **kw), to=cid))
    finally:
        for s in streams:
            s.close()
