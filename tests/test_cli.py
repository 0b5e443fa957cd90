"""``pushsvc`` on the command line, run as ``python -m pushsvc.cli`` against a real server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx
import pytest

from .helpers import wait_for
from .servers import ROOT, Gunicorn, free_port


def run(server_url: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushsvc.cli", "--url", server_url, *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


class Background:
    """``pushsvc …`` running on; its output lines arrive in queues as they are printed."""

    def __init__(self, server_url: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "pushsvc.cli", "--url", server_url, *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(pipe, lines), daemon=True).start()

    @staticmethod
    def _pump(pipe, lines: queue.Queue) -> None:
        for line in pipe:
            lines.put(line.rstrip("\n"))

    def line(self, which: queue.Queue, timeout: float = 10) -> str:
        return which.get(timeout=timeout)

    def wait_err(self, needle: str, timeout: float = 10) -> str:
        end = time.monotonic() + timeout
        while True:
            line = self.err.get(timeout=max(0.01, end - time.monotonic()))
            if needle in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def listen(server) -> Iterator:
    started: list[Background] = []

    def start(*args: str) -> Background:
        b = Background(server.base, "listen", *args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def test_publish_to_one_client(server, streams):
    s = streams.raw("/sse/subscribe/cli-one")
    assert s.read_until(b"retry:")
    done = run(server.base, "publish", "--to", "cli-one", "--event", "note", "hello there")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["online"] == 1
    assert s.read_until(f"id: {answer['id']}\nevent: note\ndata: hello there\n\n".encode())


def test_publish_json_from_stdin_to_group_prefix_and_everyone(server, streams):
    s = streams.raw("/sse/subscribe/cli-many-1?group=cli-g")
    assert s.read_until(b"retry:")
    assert run(server.base, "publish", "--group", "cli-g", "--json", stdin='{"n": 1}\n').returncode == 0
    assert run(server.base, "publish", "--prefix", "cli-many-", "-", stdin="two\nlines\n").returncode == 0
    assert run(server.base, "publish", "--all", "--retry", "1500", "three").returncode == 0
    assert s.read_until(b"data: three\n")
    assert [e.data for e in s.events()] == ['{"n":1}', "two\nlines", "three"]
    assert b"retry: 1500\n" in s.body


@pytest.mark.parametrize(("args", "stdin", "expected"), [
    (("publish", "--to", "cli-x", "--event", "close", "x"), None, "400"),  # a reserved event name
    (("publish", "--to", "bad id", "x"), None, "400"),
    (("publish", "--to", "cli-x", "--json", "{not json"), None, "--json: the data is not valid JSON"),
    (("clients", "cli-nobody"), None, "404"),
])
def test_errors_are_one_clear_line(server, args, stdin, expected):
    done = run(server.base, *args, stdin=stdin)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushsvc: ") and expected in lines[0], done.stderr


def test_unreachable_server_is_one_line():
    done = run(f"http://127.0.0.1:{free_port()}", "clients")
    assert done.returncode == 1
    assert done.stderr.startswith("pushsvc: cannot reach http://127.0.0.1:") and done.stderr.count("\n") == 1


def test_missing_target_is_a_usage_error(server):
    done = run(server.base, "publish", "x")
    assert done.returncode == 2
    assert "one of the arguments --to --group --prefix --all is required" in done.stderr


def test_clients_and_close(server, streams):
    s = streams.raw("/sse/subscribe/cli-list?group=cli-a&group=cli-b")
    assert s.read_until(b"retry:")
    table = run(server.base, "clients")
    assert table.returncode == 0
    rows = [line.split() for line in table.stdout.splitlines()]
    assert ["cli-list", "1", "cli-a,cli-b"] in rows, table.stdout
    assert "clients," in table.stdout.splitlines()[-1]
    one = run(server.base, "clients", "cli-list", "--json")
    assert json.loads(one.stdout) == {"id": "cli-list", "connections": 1, "groups": ["cli-a", "cli-b"]}
    closed = run(server.base, "close", "cli-list")
    assert closed.returncode == 0 and closed.stdout == "closed 1 streams of cli-list\n"
    assert s.wait_closed(5) and b"event: close" in s.body


def test_listen_prints_events_as_they_arrive(server, listen):
    b = listen("cli-listen", "--json", "--group", "cli-lg")
    assert wait_for(lambda: run(server.base, "clients", "cli-listen").returncode == 0, 10)
    sent = time.monotonic()
    first = json.loads(run(server.base, "publish", "--to", "cli-listen", "a\nb").stdout)
    got = json.loads(b.line(b.out))
    assert got == {"id": first["id"], "event": "message", "data": "a\nb"}
    assert time.monotonic() - sent < 5
    run(server.base, "publish", "--group", "cli-lg", "--event", "ping", "p")
    assert json.loads(b.line(b.out))["event"] == "ping"
    # event: close ends the listener for good, with status 0.
    run(server.base, "close", "cli-listen")
    assert json.loads(b.line(b.out))["event"] == "close"
    assert b.proc.wait(10) == 0


def test_listen_resumes_after_a_drop():
    # Heartbeats every 30 s, and the listener gives up on a silent stream after 1 s: a drop, every second.
    env = {"PUSHSVC_HEARTBEAT_SECONDS": "30", "PUSHSVC_RETRY_MS": "1000"}
    with Gunicorn(env=env) as server, httpx.Client(base_url=server.base, timeout=5) as http:
        b = Background(server.base, "listen", "cli-resume", "--idle", "1", "--count", "3")
        try:
            assert wait_for(lambda: http.get("/sse/clients/cli-resume").status_code == 200, 10)
            first = http.post("/sse/publish", json={"to": "cli-resume", "data": "one"}).json()["id"]
            assert b.line(b.out) == f"{first} message one"
            assert b.wait_err("reconnecting in").endswith(f" from {first}")
            # Published while the listener is away: replayed when it comes back with its Last-Event-ID.
            for data in ("two", "three"):
                assert http.post("/sse/publish", json={"to": "cli-resume", "data": data}).status_code == 202
            assert b.line(b.out).endswith(" message two")
            assert b.line(b.out).endswith(" message three")
            assert b.proc.wait(10) == 0
        finally:
            b.stop()


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        ok = self.headers.get("Authorization") == "Bearer s3cret"
        body = json.dumps({"id": "1-1", "online": 0} if ok else {"error": "a publish token is required"})
        self.send_response(202 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_publish_token_from_the_environment():
    httpd = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
        denied = run(url, "publish", "--to", "u1", "x", env=env)
        assert denied.returncode == 1
        assert denied.stderr == "pushsvc: the server answered 401 Unauthorized: a publish token is required\n"
        allowed = run(url, "publish", "--to", "u1", "x", env={**env, "PUSHSVC_PUBLISH_TOKEN": "s3cret"})
        assert allowed.returncode == 0 and json.loads(allowed.stdout) == {"id": "1-1", "online": 0}
        assert "s3cret" not in allowed.stderr
        assert _Recorder.seen[-1] == ("POST", "/sse/publish", "Bearer s3cret")
        assert _Recorder.seen[0][2] is None
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_listen_stops_when_the_server_says_closed_for_good(server):
    # A resume from a close event's id is answered 204: the listener stops, as a browser's EventSource does.
    done = run(server.base, "listen", "cli-gone", "--last-event-id", "1-1.close", timeout=10)
    assert done.returncode == 0
    assert done.stderr == "pushsvc: cli-gone was closed by the server; not reconnecting\n"
