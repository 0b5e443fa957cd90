"""The peer a Flask team would otherwise pick: flask-sse behind gunicorn's gevent worker, with Redis.

Run only by ``bench/run.py`` inside its own virtualenv (``bench/out/venv-peer``). The stream is
flask-sse's own blueprint, untouched; the publish route is the few lines such a team would add.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, jsonify, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["PEER_REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")
_admin = redis.Redis.from_url(os.environ["PEER_REDIS_URL"])


@app.post("/publish")
def publish():
    """One event ``{"channel", "data"}``, or a JSON array of them (the batch scenario)."""
    body = request.get_json()
    items = body if isinstance(body, list) else [body]
    for item in items:
        sse.publish(item["data"], channel=item.get("channel", "sse"))
    return jsonify({"published": len(items)}), 202


@app.get("/ready")
def ready():
    """How many streams have subscribed in Redis (flask-sse sends no headers before the first event)."""
    listing = _admin.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    if isinstance(listing, bytes):
        listing = listing.decode()
    return str(sum(1 for line in listing.splitlines() if line.strip()))
