"""``@push.authorize`` over real HTTP: a host app decides each subscribe with its own login (a session)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from .helpers import wait_for
from .servers import Gunicorn


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with Gunicorn(app="tests.apps.security_app:app", env={"PUSHSVC_HEARTBEAT_SECONDS": "0.3"}) as gunicorn:
        yield gunicorn


@contextlib.contextmanager
def logged_in(server: Gunicorn, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=5) as http:
        assert http.get(f"/login/{user}").status_code == 200
        yield http


def status_of(http: httpx.Client, path: str) -> int:
    with http.stream("GET", path) as reply:
        return reply.status_code


def test_no_login_is_401(server):
    with httpx.Client(base_url=server.base, timeout=5) as http:
        assert status_of(http, "/sse/subscribe/bob") == 401


def test_the_hook_sees_the_session_of_the_request(server):
    with logged_in(server, "bob") as bob:
        with bob.stream("GET", "/sse/subscribe/bob") as stream:
            assert stream.status_code == 200
            assert wait_for(lambda: httpx.get(server.url("/sse/clients/bob")).status_code == 200)
            assert httpx.post(server.url("/sse/publish"), json={"to": "bob", "data": "hello bob"}).json()[
                "online"] == 1
            # Heartbeats (every 0.3 s) may come first.
            lines = zip(range(40), stream.iter_lines(), strict=False)
            assert any(line == "data: hello bob" for _, line in lines)
        assert status_of(bob, "/sse/subscribe/alice") == 403
        assert status_of(bob, "/sse/subscribe/bob?group=staff") == 403
        assert bob.get("/sse/subscribe/alice").json()["error"]


def test_the_hook_sees_the_groups(server):
    with logged_in(server, "staff-carol") as carol:
        assert status_of(carol, "/sse/subscribe/staff-carol?group=staff&group=all") == 200
