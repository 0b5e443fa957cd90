"""Two gunicorn servers on one broker URL, streams on all their workers, and a publish flood through them:
the tools of the tests that shake Redis while events flow (Sentinel, Redis Cluster)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from pushsvc.brokers.redis.schema import event_key, parse_event_id

from .helpers import connections, wait_for
from .servers import Gunicorn
from .sse import RawStream

STREAMS_PER_SERVER = 4


@contextlib.contextmanager
def two_servers(url: str, **env: str) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    """Two gunicorn servers of two workers each on the same broker URL, both healthy."""
    settings = {"PUSHSVC_BROKER_URL": url, "PUSHSVC_HEARTBEAT_SECONDS": "1", **env}
    with Gunicorn(workers=2, env=settings) as first, Gunicorn(workers=2, env=settings) as second:
        for server in (first, second):
            assert wait_for(lambda: healthy(server), 20, interval=0.2), server.output()[-3000:]  # noqa: B023
        yield first, second


def healthy(server: Gunicorn) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return all(httpx.get(server.url("/healthz"), timeout=5).status_code == 200 for _ in range(4))
    return False


def post(server: Gunicorn, body: dict | list) -> httpx.Response:
    return httpx.post(server.url("/sse/publish"), json=body, timeout=10)


def send(server: Gunicorn, body: dict) -> str:
    """The id of ``body``, published; it must be answered 202."""
    reply = post(server, body)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def open_streams(servers: tuple[Gunicorn, ...], client_id: str, per_server: int = STREAMS_PER_SERVER,
                 query: str = "") -> list[RawStream]:
    """Streams of ``client_id`` on every server, opened several at once so both workers take some."""
    def one(server: Gunicorn) -> RawStream:
        return RawStream(server.port, f"/sse/subscribe/{client_id}{query}", timeout=10)
    with ThreadPoolExecutor(8) as pool:
        opened = list(pool.map(one, [s for s in servers for _ in range(per_server)]))
    for stream in opened:
        assert stream.read_until(b"retry:", 10)
    total = len(opened)
    assert wait_for(lambda: client_connections(servers[0], client_id) == total, 20), \
        f"{client_connections(servers[0], client_id)} of {total} streams of {client_id} counted"
    return opened


def client_connections(server: Gunicorn, client_id: str) -> int:
    with contextlib.suppress(httpx.HTTPError):
        reply = httpx.get(server.url(f"/sse/clients/{client_id}"), timeout=5)
        return reply.json()["connections"] if reply.status_code == 200 else 0
    return 0


class Opened:
    """The streams a test opens, over both servers; all closed after it, and then none may be left."""

    def __init__(self, servers: tuple[Gunicorn, Gunicorn]):
        self.servers = servers
        self.streams: list[RawStream] = []

    def one(self, server: Gunicorn, path: str, headers: dict[str, str] | None = None) -> RawStream:
        stream = RawStream(server.port, path, headers, timeout=10)
        self.streams.append(stream)
        return stream

    def many(self, paths: dict[str, str]) -> dict[str, RawStream]:
        """Open ``name -> path`` all at once, alternating servers (so every worker takes some); once the
        service counts them all."""
        before = connections(self.servers[0])
        jobs = [(self.servers[n % 2], path) for n, path in enumerate(paths.values())]
        with ThreadPoolExecutor(8) as pool:
            opened = list(pool.map(lambda job: self.one(*job), jobs))
        for stream in opened:
            assert stream.status == 200 and stream.read_until(b"retry:", 10), stream.body[-300:]
        assert wait_for(lambda: connections(self.servers[0]) == before + len(opened), 20)
        return dict(zip(paths, opened, strict=True))

    def close_all(self) -> None:
        for stream in self.streams:
            stream.close()


class Flood:
    """Publishes one request after the other, alternating servers, in a thread; remembers every answer
    (status, event id, seconds it took) and what it sent (:attr:`sent`), in publish order.

    ``body(n)`` is the n-th publish; by default data ``n<n>`` to ``client_id``.
    """

    def __init__(self, servers: tuple[Gunicorn, ...], client_id: str = "", *,
                 body: Callable[[int], dict] | None = None, pause: float = 0.01):
        self.servers = servers
        self.body = body or (lambda n: {"to": client_id, "data": f"n{n}"})
        self.pause = pause
        self.answers: list[tuple[int, str | None, float]] = []
        self.sent: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            server = self.servers[n % len(self.servers)]
            body = self.body(n)
            started = time.monotonic()
            try:
                reply = post(server, body)
                status = reply.status_code
                event_id = reply.json().get("id") if status == 202 else None
            except httpx.HTTPError:
                status, event_id = 0, None
            self.sent.append(body)
            self.answers.append((status, event_id, time.monotonic() - started))
            time.sleep(self.pause)

    def accepted(self) -> list[str]:
        return [event_id for status, event_id, _ in self.answers if status == 202 and event_id]

    def accepted_for(self, addressed: Callable[[dict], bool]) -> list[str]:
        """The ids answered 202 for the publishes whose body ``addressed(body)`` says a stream gets."""
        pairs = list(zip(self.sent, self.answers, strict=False))
        return [answer[1] for body, answer in pairs if answer[0] == 202 and answer[1] and addressed(body)]

    def status_of(self, data: str) -> int | None:
        """The answer's status to the publish of ``data``, if this flood sent it."""
        for body, (status, _, _) in zip(self.sent, self.answers, strict=False):
            if body.get("data") == data:
                return status
        return None

    def accepted_since(self, count: int) -> int:
        return sum(1 for status, _, _ in self.answers[count:] if status == 202)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def ordered(ids: list[str]) -> bool:
    """The ids strictly increase (so none is there twice)."""
    keys = [event_key(*parse_event_id(i)) for i in ids]  # type: ignore[misc]
    return all(a < b for a, b in itertools.pairwise(keys))


def worker_pids(servers: tuple[Gunicorn, ...]) -> set[int]:
    return {pid for server in servers for pid in server.worker_pids()}
