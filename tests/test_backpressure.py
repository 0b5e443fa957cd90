"""Slow and silent clients: they are cut off, and nobody else notices."""

from __future__ import annotations

import httpx
import pytest

from .helpers import wait_for
from .servers import Gunicorn
from .sse import RawStream


@pytest.fixture(scope="module")
def tight():
    env = {"PUSHSVC_QUEUE_SIZE": "20", "PUSHSVC_WRITE_TIMEOUT_SECONDS": "2", "PUSHSVC_HEARTBEAT_SECONDS": "1",
           "PUSHSVC_MAX_MESSAGE_BYTES": "1000000"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


def connected(server: Gunicorn, client_id: str) -> bool:
    return httpx.get(server.url(f"/sse/clients/{client_id}"), timeout=5).status_code == 200


def test_a_client_that_stops_reading_is_cut_off_and_a_fast_one_keeps_receiving(tight):
    # The slow one has a tiny receive buffer and never reads after the headers.
    slow = RawStream(tight.port, "/sse/subscribe/bp-slow", rcvbuf=4096)
    fast = RawStream(tight.port, "/sse/subscribe/bp-fast")
    try:
        assert wait_for(lambda: connected(tight, "bp-slow") and connected(tight, "bp-fast"))
        payload = "x" * 60_000  # 150 of these overflow the kernel buffers (up to 4 MiB) on both ends
        with httpx.Client(base_url=tight.base, timeout=10) as http:
            for n in range(150):
                batch = [{"to": ["bp-slow", "bp-fast"], "data": f"{n}:{payload}"}]
                assert http.post("/sse/publish", json=batch).status_code == 202
                fast.read_for(0.001)
        assert wait_for(lambda: not connected(tight, "bp-slow"), 10), "the slow client must be cut off"
        assert fast.read_until(b"data: 149:", 10)
        assert [e.data.split(":")[0] for e in fast.events()] == [str(n) for n in range(150)]
        assert httpx.get(tight.url("/sse/clients"), timeout=5).json()["connections"] == 1
        assert "cut off slow client bp-slow" in tight.output()
    finally:
        slow.close()
        fast.close()


def test_a_client_that_never_reads_is_gone_within_the_write_timeout(tight):
    silent = RawStream(tight.port, "/sse/subscribe/bp-silent", rcvbuf=4096)
    other = RawStream(tight.port, "/sse/subscribe/bp-other")
    try:
        assert wait_for(lambda: connected(tight, "bp-silent") and connected(tight, "bp-other"))
        with httpx.Client(base_url=tight.base, timeout=10) as http:
            # 7 MB fills the kernel's buffers (4 MiB at most each way); 8 events never fill the queue (20),
            # so only the write deadline can end this stream.
            for n in range(8):
                http.post("/sse/publish", json={"broadcast": True, "data": f"{n}:" + "y" * 900_000})
            assert other.read_until(b"data: 7:", 10)
            assert wait_for(lambda: not connected(tight, "bp-silent"), 8)
            http.post("/sse/publish", json={"to": "bp-other", "data": "still served"})
        assert other.read_until(b"data: still served\n\n", 5)
        assert "cut off slow client bp-silent" in tight.output()
        assert "write timeout" in tight.output()
    finally:
        silent.close()
        other.close()
