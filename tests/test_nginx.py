"""Debian's nginx in front of gunicorn with ``deploy/nginx.conf``, as documented: events pass at once,
heartbeats keep the stream open past nginx's read timeout, and resume works through it.

nginx runs in the foreground from a temporary prefix on a free port and is stopped by its PID. Locally
the module is skipped when nginx is missing; with ``PUSHSVC_REQUIRE_NGINX=1`` (CI) that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .servers import ROOT, Gunicorn, free_port, require, stop_process
from .sse import RawStream

# Shorter than the documented 60 s so that a test can outlast it: streams must survive on heartbeats.
READ_TIMEOUT = 2
# What "at once" must beat: a buffering nginx holds a response until its 4-8 KiB buffer fills, and one
# small event or a 16-byte heartbeat a second takes minutes to fill it. Seconds are still "at once".
AT_ONCE_SECONDS = 5


class Nginx:
    """``nginx`` with a documented site of ``deploy/`` included, upstream and listen port rewritten:
    ``listen`` is the line that gets ``port`` (and keeps what follows the port, such as ``ssl http2``),
    ``edits`` more (old, new) replacements, ``scheme`` how the test reaches it."""

    def __init__(self, upstream_port: int, site: str = "nginx.conf", listen: str = "listen 80;",
                 edits: tuple[tuple[str, str], ...] = (), scheme: str = "http"):
        self.binary = require("nginx", "PUSHSVC_REQUIRE_NGINX")
        self.port = free_port()
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="pushsvc-nginx-"))
        # nginx started as root runs its workers as nobody: they must be able to enter the prefix.
        os.chmod(self.dir, 0o755)
        text = (ROOT / "deploy" / site).read_text()
        for old, new in (("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
                         (listen, re.sub(r"^listen \d+", f"listen 127.0.0.1:{self.port}", listen)),
                         ("proxy_read_timeout 60s;", f"proxy_read_timeout {READ_TIMEOUT}s;"), *edits):
            assert old in text, f"deploy/{site} no longer has {old!r}; update this test with it"
            text = text.replace(old, new)
        (self.dir / "pushsvc.conf").write_text(text)
        temp = "\n".join(f"    {kind}_temp_path {self.dir / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.dir / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {self.dir / "nginx.pid"};
error_log {self.dir / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    access_log {self.dir / "access.log"};
{temp}
    include {self.dir / "pushsvc.conf"};
}}
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Nginx:
        conf = str(self.dir / "nginx.conf")
        check = subprocess.run([self.binary, "-t", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                                "-c", conf], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                                      "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if httpx.get(self.base + "/healthz", timeout=1, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"nginx did not answer:\n{self.errors()}")

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[Gunicorn, Nginx]]:
    with Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "1"}) as gunicorn:
        nginx = Nginx(gunicorn.port)
        try:
            yield gunicorn, nginx.start()
        finally:
            nginx.stop()


@pytest.fixture
def via(proxied) -> Iterator:
    _gunicorn, nginx = proxied
    opened: list[RawStream] = []

    def open_stream(path: str, headers: dict[str, str] | None = None) -> RawStream:
        s = RawStream(nginx.port, path, headers)
        opened.append(s)
        return s

    open_stream.http = httpx.Client(base_url=nginx.base, timeout=5)
    yield open_stream
    open_stream.http.close()
    for s in opened:
        s.close()


def test_stream_headers_and_first_chunk_pass_at_once(via):
    started = time.monotonic()
    s = via("/sse/subscribe/ngx-head")
    assert s.status == 200
    assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "content-length" not in s.headers
    assert s.read_until(b"retry: 3000\n", AT_ONCE_SECONDS)
    assert time.monotonic() - started < AT_ONCE_SECONDS


def test_each_event_passes_before_the_next_is_published(via):
    s = via("/sse/subscribe/ngx-fast")
    assert s.read_until(b"retry:")
    for i in range(10):
        reply = via.http.post("/sse/publish", json={"to": "ngx-fast", "data": f"n{i}"})
        assert reply.status_code == 202
        # Ten events of a few bytes never fill a proxy buffer: each one here came through on its own.
        assert s.read_until(f"data: n{i}\n\n".encode(), AT_ONCE_SECONDS)
    assert [e.data for e in s.events()] == [f"n{i}" for i in range(10)]


def test_heartbeats_keep_the_stream_open_past_the_read_timeout(via):
    started = time.monotonic()
    s = via("/sse/subscribe/ngx-idle")
    assert s.read_until(b"retry:")
    # Heartbeats come after a second of quiet, never sooner: this many span twice nginx's read timeout.
    beats = READ_TIMEOUT * 2 + 1
    assert s.read_until(b": keep-alive\n\n", beats * 3, count=beats), "nginx closed an idle stream"
    assert time.monotonic() - started >= READ_TIMEOUT * 2
    via.http.post("/sse/publish", json={"to": "ngx-idle", "data": "still here"})
    assert s.read_until(b"data: still here\n")


def test_resume_through_nginx(via):
    s = via("/sse/subscribe/ngx-resume")
    assert s.read_until(b"retry:")
    first = via.http.post("/sse/publish", json={"to": "ngx-resume", "data": "one"}).json()["id"]
    assert s.read_until(b"data: one\n")
    s.close()
    for data in ("two", "three"):
        assert via.http.post("/sse/publish", json={"to": "ngx-resume", "data": data}).status_code == 202
    back = via("/sse/subscribe/ngx-resume", {"Last-Event-ID": first})
    assert back.read_until(b"data: three\n")
    assert [e.data for e in back.events()] == ["two", "three"]
    query = via(f"/sse/subscribe/ngx-resume?lastEventId={first}")
    assert query.read_until(b"data: three\n")
    assert [e.data for e in query.events()] == ["two", "three"]


def test_publish_health_and_metrics_through_nginx(via):
    assert via.http.get("/healthz").json()["status"] == "ok"
    assert via.http.post("/sse/publish", json={"broadcast": True, "data": "x"}).status_code == 202
    # Scrapes from loopback are allowed by the documented config.
    assert "pushsvc_events_published_total" in via.http.get("/metrics").text


def test_a_restart_behind_nginx_ends_streams_cleanly_with_a_retry_hint():
    gunicorn = Gunicorn(env={"PUSHSVC_HEARTBEAT_SECONDS": "1"})
    nginx = Nginx(gunicorn.port)  # skips here, before anything runs, where nginx is not installed
    streams: list[RawStream] = []
    try:
        gunicorn.start()
        nginx.start()
        streams = [RawStream(nginx.port, f"/sse/subscribe/ngx-term-{i}") for i in range(3)]
        for s in streams:
            assert s.read_until(b"retry: 3000\n")
        gunicorn.stop()
        for s in streams:
            # nginx passes the farewell and the end of the chunked body on, as gunicorn wrote them.
            assert s.wait_closed(5)
            assert re.search(rb": restarting\n\nretry: \d+\n\n$", s.body), s.body[-100:]
        # With no gunicorn behind it, nginx answers 502 (pushsvc.js rebuilds its EventSource after one,
        # with backoff; a bare EventSource would stop for good).
        assert httpx.get(nginx.base + "/healthz", timeout=5).status_code == 502
    finally:
        for s in streams:
            s.close()
        nginx.stop()
        gunicorn.stop()
