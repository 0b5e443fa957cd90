"""How long requests wait on a Redis that hangs (``CLIENT PAUSE … ALL``), on a warm and a fresh worker.

    python -m bench.fault_probe [PAUSE_SECONDS]

Starts a private redis-server and gunicorn (one worker, Redis broker), pauses Redis, and times a publish,
a resuming subscribe's first answer and ``/healthz``; then kills the worker during a second pause and
times the fresh worker's first ``/healthz``. Prints one line per figure.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import redis

from tests.servers import Gunicorn, RedisServer
from tests.sse import RawStream


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if predicate():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def pause(url: str, seconds: float) -> None:
    admin = redis.Redis.from_url(url)
    admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
    admin.close()


def timed(label: str, call) -> None:
    started = time.monotonic()
    try:
        what = call()
    except Exception as error:  # a timeout is a figure too
        what = type(error).__name__
    print(f"{label}: {time.monotonic() - started:.2f} s -> {what}", flush=True)


def first_answer(port: int) -> str:
    stream = RawStream(port, "/sse/subscribe/b", {"Last-Event-ID": "1-1-0"}, timeout=30)
    try:
        body = stream.read_answer(30) if "busy" not in stream.body.decode() else stream.body
        return "event: busy" if b"event: busy" in body else body[:60].decode(errors="replace")
    finally:
        stream.close()


def main(seconds: float) -> None:
    server = RedisServer().start()
    env = {"PUSHSVC_BROKER_URL": server.url, "PUSHSVC_HEARTBEAT_SECONDS": "1"}
    try:
        with Gunicorn(workers=1, env=env) as gunicorn:
            wait_for(lambda: httpx.get(gunicorn.url("/healthz"), timeout=5).status_code == 200, 20)
            pause(server.url, seconds)
            timed("publish", lambda: httpx.post(gunicorn.url("/sse/publish"), json={"to": "a", "data": "x"},
                                                timeout=30).status_code)
            timed("subscribe first answer", lambda: first_answer(gunicorn.port))
            timed("healthz (warm)", lambda: httpx.get(gunicorn.url("/healthz"), timeout=30).status_code)
            time.sleep(seconds + 1)
            (old,) = gunicorn.worker_pids()
            pause(server.url, seconds)
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: gunicorn.worker_pids() not in ([], [old]), 10)
            timed("healthz (fresh worker)",
                  lambda: httpx.get(gunicorn.url("/healthz"), timeout=30).status_code)
            time.sleep(seconds + 1)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 8.0)
