"""In-process micro-benchmark of one publish and one subscribe through the WSGI app, without gunicorn
or sockets: what Flask and pushsvc cost per request, so the rest of the end-to-end figure is the server's.

    python bench/micro_request.py [--requests 20000] [--profile]

Prints CPU microseconds per request for: a publish to one client id with one stream open (the unicast
scenario), the same with an empty registry, and a subscribe up to its first chunk (then closed).
``--profile`` prints the top of a cProfile of the publish instead (cumulative, slowed by the profiler).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gevent

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pushsvc import create_app

BODY = b'{"to":"c1","data":"@T0000000000000000;S0000000000;xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'


def environ(method: str, path: str, body: bytes = b"", query: str = "") -> dict:
    return {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.version": (1, 0), "wsgi.input_terminated": True,
    }


def start_response(status: str, headers: list, exc_info: object = None) -> Callable[[bytes], None]:
    return lambda data: None


def per_request_us(fn: Callable[[], None], n: int) -> float:
    """The median over 5 rounds of CPU time per call."""
    rounds = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    app = create_app({"PUSHSVC": {"LOG_LEVEL": "warning", "QUEUE_SIZE": 1_000_000}})
    service = app.extensions["pushsvc"]

    def publish() -> None:
        for chunk in app(environ("POST", "/sse/publish", BODY), start_response):
            assert chunk.startswith(b'{"id"'), chunk

    def subscribe() -> None:
        body = app(environ("GET", "/sse/subscribe/s1"), start_response)
        next(iter(body))
        body.close()

    print(f"publish, empty registry: {per_request_us(publish, args.requests):.1f} µs")
    stream = app(environ("GET", "/sse/subscribe/c1"), start_response)
    next(iter(stream))  # registered; its queue takes every event (a greenlet would drain it)

    def publish_and_drain() -> None:
        publish()
        stream_queue = next(iter(service.registry.connections)).queue
        while stream_queue.qsize():
            stream_queue.get_nowait()

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [publish_and_drain() for _ in range(args.requests)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        return
    print(f"publish to one open stream: {per_request_us(publish_and_drain, args.requests):.1f} µs")
    stream.close()
    print(f"subscribe to the first chunk, then close: {per_request_us(subscribe, args.requests // 4):.1f} µs")
    gevent.sleep(0)


if __name__ == "__main__":
    main()
