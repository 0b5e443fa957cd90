"""Clients that try to exhaust the server: a reader that stalls (memory must stay bounded; it is cut off,
the others keep their events) and a flood of subscribes over ``PUSHSVC_MAX_CONNECTIONS`` (soft refusal;
open streams, publish and health are not hurt)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .helpers import assert_next_is_marker, connections, wait_for
from .servers import Gunicorn
from .sse import RawStream, parse

QUEUE_SIZE = 200
EVENT_BYTES = 16 * 1024
BATCHES = 300
PER_BATCH = 10
MAX_STREAMS = 20
# Long, so that a publisher held up by the stalled reader would show: it would wait for this deadline.
WRITE_TIMEOUT_SECONDS = 30


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    env = {"PUSHSVC_QUEUE_SIZE": str(QUEUE_SIZE), "PUSHSVC_HISTORY_SIZE": "100",
           "PUSHSVC_WRITE_TIMEOUT_SECONDS": str(WRITE_TIMEOUT_SECONDS), "PUSHSVC_HEARTBEAT_SECONDS": "0.5",
           "PUSHSVC_MAX_CONNECTIONS": str(MAX_STREAMS)}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


class Drain:
    """A reader that keeps up with anything: raw chunks into a list, decoded once at the end.

    (Appending to one bytes object, as RawStream does, is quadratic: at tens of MiB the test client itself
    would fall behind and be cut off as slow.)
    """

    def __init__(self, server: Gunicorn, path: str, marker: bytes):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.chunks: list[bytes] = []
        self.received = 0
        self.marker = marker
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        tail = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            self.chunks.append(chunk)
            self.received += len(chunk)
            if self.marker in tail + chunk:
                return
            tail = chunk[-len(self.marker):]

    def body(self) -> str:
        raw = b"".join(self.chunks)
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0]
        out, pos = [], 0
        while True:
            eol = rest.index(b"\r\n", pos)
            size = int(rest[pos:eol], 16)
            if size == 0 or eol + 2 + size > len(rest):
                break
            out.append(rest[eol + 2: eol + 2 + size])
            pos = eol + 2 + size + 2
            if pos >= len(rest):
                break
        return b"".join(out).decode()

    def close(self) -> None:
        self.sock.close()


def test_a_stalled_reader_cannot_grow_memory(server):
    pid = server.worker_pids()[0]
    stalled = RawStream(server.port, "/sse/subscribe/load-stalled", rcvbuf=4096)
    assert stalled.status == 200
    end_marker = b"data: load-done\n\n"
    fast = Drain(server, "/sse/subscribe/load-fast", end_marker)
    assert wait_for(lambda: connections(server) == 2)
    try:
        with httpx.Client(base_url=server.base, timeout=10) as http:
            batch = [{"to": ["load-stalled", "load-fast"], "data": f"{i:04d}" + "x" * (EVENT_BYTES - 4)}
                     for i in range(PER_BATCH)]
            assert http.post("/sse/publish", json=batch).status_code == 202
            before = rss_bytes(pid)
            slowest = 0.0
            for n in range(BATCHES):
                # The healthy reader is a Python thread on a shared machine: let it stay within ten batches
                # (100 events, half its queue), so that only the stalled reader can fall behind.
                assert wait_for(lambda n=n: fast.received >= (n - 10) * PER_BATCH * EVENT_BYTES, 10)
                started = time.monotonic()
                assert http.post("/sse/publish", json=batch).status_code == 202
                slowest = max(slowest, time.monotonic() - started)
            grown = rss_bytes(pid) - before
            total = BATCHES * PER_BATCH * EVENT_BYTES
            # Unbounded buffering would hold all of it (about 47 MiB); the queue holds 200 events (3 MiB).
            assert grown < total / 3, f"worker RSS grew {grown >> 20} MiB for {total >> 20} MiB published"
            # Never blocked, a publish takes milliseconds; one that waited on the stalled reader would take
            # its write deadline. A sixth of that leaves a loaded machine room and still tells them apart.
            assert slowest < WRITE_TIMEOUT_SECONDS / 6, f"a publish took {slowest:.2f} s, a reader stalled"
            assert wait_for(lambda: http.get("/sse/clients/load-stalled").status_code == 404, 10)
            http.post("/sse/publish", json={"to": "load-fast", "data": "load-done"})
        fast.thread.join(30)
        got = parse(fast.body())
        assert got[-1].data == "load-done", server.output()[-3000:]
        assert len(got) == (BATCHES + 1) * PER_BATCH + 1, "the fast reader lost events"
    finally:
        stalled.close()
        fast.close()


def test_a_flood_over_the_limit_gets_the_soft_refusal(server):
    assert wait_for(lambda: connections(server) == 0, 10), "streams of an earlier test are still open"
    open_streams = [RawStream(server.port, f"/sse/subscribe/load-keep-{i}") for i in range(MAX_STREAMS)]
    try:
        for s in open_streams:
            assert s.status == 200 and s.read_until(b"retry:")
        assert wait_for(lambda: connections(server) == MAX_STREAMS)

        def knock(i: int) -> RawStream:
            s = RawStream(server.port, f"/sse/subscribe/load-flood-{i}", timeout=10)
            s.wait_closed(10)
            s.close()
            return s

        answers: list[int | str] = []
        flood_done = threading.Event()

        def probe() -> None:
            # Health and publish calls, one after the other, from before the flood until after it. A call
            # that found no room would wait in the accept queue until the client's timeout and fail.
            with httpx.Client(base_url=server.base, timeout=10) as http:
                while not flood_done.is_set():
                    for call in (lambda: http.get("/healthz"),
                                 lambda: http.post("/sse/publish", json={"to": "nobody", "data": "x"})):
                        try:
                            answers.append(call().status_code)
                        except httpx.HTTPError as error:
                            answers.append(repr(error))

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        assert wait_for(lambda: len(answers) >= 2)
        with ThreadPoolExecutor(max_workers=30) as pool:
            refused = list(pool.map(knock, range(120)))
        flood_done.set()
        prober.join(10)

        for s in refused:
            assert s.status == 200 and s.closed
            events = parse(s.body.decode())
            assert [e.event for e in events] == ["busy"], (s.status, s.body, server.output()[-3000:])
            assert b"retry: " in s.body
        assert not prober.is_alive()
        assert set(answers) <= {200, 202}, answers
        assert connections(server) == MAX_STREAMS

        def publish(data: str) -> str:
            reply = httpx.post(server.url("/sse/publish"), json={"prefix": "load-keep-", "data": data})
            assert reply.json()["online"] == MAX_STREAMS
            return reply.json()["id"]

        # The held streams were never refused or ended: nothing (no busy, no close) came before this.
        assert_next_is_marker(open_streams, publish)
    finally:
        for s in open_streams:
            s.close()
