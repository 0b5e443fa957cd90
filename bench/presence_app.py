"""The app ``bench/presence.py`` serves: pushsvc's standalone service, plus (with ``BENCH_HOOKS=1``) the
four lifecycle hooks, each only counting its calls, as an application that uses them all would."""

from __future__ import annotations

import os
from collections import Counter

from flask import Response, jsonify

from pushsvc import Push, Stream
from pushsvc.app import create_app

app = create_app()
calls: Counter[str] = Counter()


@app.get("/bench/hooks")
def hook_calls() -> Response:
    return jsonify(calls)


if os.environ.get("BENCH_HOOKS") == "1":
    push: Push = app.extensions["pushsvc.push"]

    @push.on_connect
    def connected(stream: Stream) -> None:
        calls["connect"] += 1

    @push.on_disconnect
    def disconnected(stream: Stream, reason: str) -> None:
        calls["disconnect"] += 1

    @push.on_online
    def online(client_id: str, event_id: str) -> None:
        calls["online"] += 1

    @push.on_offline
    def offline(client_id: str, event_id: str) -> None:
        calls["offline"] += 1
