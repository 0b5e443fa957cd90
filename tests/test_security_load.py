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

from .helpers import wait_for
from .servers import Gunicorn
from .sse import RawStream, parse

QUEUE_SIZE = 200
EVENT_BYTES = 16 * 1024
BATCHES = 300
PER_BATCH = 10
MAX_STREAMS = 20


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    env = {"PUSHSVC_QUEUE_SIZE": str(QUEUE_SIZE), "PUSHSVC_HISTORY_SIZE": "100",
           "PUSHSVC_WRITE_TIMEOUT_SECONDS": "3", "PUSHSVC_HEARTBEAT_SECONDS": "0.5",
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


def connections(server: Gunicorn) -> int:
    return httpx.get(server.url("/sse/clients"), timeout=5).json()["connections"]


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
            assert slowest < 2.0, f"a publish took {slowest:.2f} s while a reader stalled"
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
            assert b"busy" not in s.read_for(0.01)
        assert wait_for(lambda: connections(server) == MAX_STREAMS)

        def knock(i: int) -> RawStream:
            s = RawStream(server.port, f"/sse/subscribe/load-flood-{i}", timeout=10)
            s.wait_closed(10)
            s.close()
            return s

        latencies: list[float] = []
        statuses: list[int] = []
        flood_done = threading.Event()

        def probe() -> None:
            # Health and publish calls, one after the other, from before the flood until after it.
            with httpx.Client(base_url=server.base, timeout=10) as http:
                while not flood_done.is_set():
                    for call in (lambda: http.get("/healthz"),
                                 lambda: http.post("/sse/publish", json={"to": "nobody", "data": "x"})):
                        started = time.monotonic()
                        statuses.append(call().status_code)
                        latencies.append(time.monotonic() - started)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        assert wait_for(lambda: len(latencies) >= 2)
        with ThreadPoolExecutor(max_workers=30) as pool:
            refused = list(pool.map(knock, range(120)))
        flood_done.set()
        prober.join(10)

        for s in refused:
            assert s.status == 200 and s.closed
            events = parse(s.body.decode())
            assert [e.event for e in events] == ["busy"], (s.status, s.body, server.output()[-3000:])
            assert b"retry: " in s.body
        assert set(statuses) <= {200, 202}
        assert max(latencies) < 1.0, f"publish/health slowed to {max(latencies):.2f} s"
        assert connections(server) == MAX_STREAMS
        reply = httpx.post(server.url("/sse/publish"), json={"prefix": "load-keep-", "data": "still here"})
        assert reply.json()["online"] == MAX_STREAMS
        for s in open_streams:
            assert s.read_until(b"data: still here\n\n", 5)
    finally:
        for s in open_streams:
            s.close()
