"""A host application whose four lifecycle hooks write what they see, one JSON line each, to the file named
by ``PRESENCE_LOG``. With ``PRESENCE_MISBEHAVE=1`` it also registers, ahead of the honest ones, hooks that
raise and hooks that block for a minute. Served by gunicorn in the tests."""

from __future__ import annotations

import json
import os
import time

from flask import Flask, Response, current_app

from pushsvc import Push, Stream, metrics

app = Flask(__name__)
push = Push(app)
LOG = os.environ["PRESENCE_LOG"]


def record(**entry: object) -> None:
    # One write of one line in append mode: lines of several workers never interleave.
    line = json.dumps({**entry, "pid": os.getpid(), "at": time.time()}) + "\n"
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(line)


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/metrics")
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


if os.environ.get("PRESENCE_MISBEHAVE") == "1":
    @push.on_connect
    def raises_on_connect(stream: Stream) -> None:
        raise RuntimeError(f"hook failure for {stream.client_id}")

    @push.on_connect
    def blocks_on_connect(stream: Stream) -> None:
        time.sleep(60)

    @push.on_online
    def raises_on_online(client_id: str, event_id: str) -> None:
        raise RuntimeError(f"hook failure for {client_id}")

    @push.on_online
    def blocks_on_online(client_id: str, event_id: str) -> None:
        time.sleep(60)


@push.on_connect
def connected(stream: Stream) -> None:
    # current_app: hooks run in the app's context.
    record(hook="connect", client=stream.client_id, groups=list(stream.groups), stream=stream.id,
           app=current_app.name)


@push.on_disconnect
def disconnected(stream: Stream, reason: str) -> None:
    record(hook="disconnect", client=stream.client_id, groups=list(stream.groups), stream=stream.id,
           reason=reason)


@push.on_online
def online(client_id: str, event_id: str) -> None:
    record(hook="online", client=client_id, id=event_id, app=current_app.name)


@push.on_offline
def offline(client_id: str, event_id: str) -> None:
    record(hook="offline", client=client_id, id=event_id)
