"""A legacy Flask app that mounts pushsvc with ``Push().init_app`` and publishes from its own code."""

from __future__ import annotations

import gevent
from flask import Flask, jsonify
from gevent import monkey

from pushsvc import Push

push = Push()
# A thread the gevent worker did not patch, like a scheduler's or a C library's.
NativeThread = monkey.get_original("threading", "Thread")


def create() -> Flask:
    app = Flask(__name__)
    app.config["PUSHSVC"] = {"URL_PREFIX": "/events", "HEARTBEAT_SECONDS": 1}
    push.init_app(app)

    @app.post("/orders/<int:number>")
    def order(number: int):
        return jsonify(id=push.send("u42", {"order": number}, event="order"))

    @app.post("/from-greenlet/<int:number>")
    def from_greenlet(number: int):
        gevent.spawn_later(0.05, push.send_group, "staff", {"greenlet": number})
        return jsonify(ok=True)

    @app.post("/from-thread/<int:number>")
    def from_thread(number: int):
        NativeThread(target=push.send_prefix, args=("u4", {"thread": number})).start()
        return jsonify(ok=True)

    @app.post("/announce")
    def announce():
        return jsonify(id=push.broadcast("all hands"), many=push.send_many(["u42", "u7"], "pair"))

    @app.post("/kick/<client_id>")
    def kick(client_id: str):
        return jsonify(closed=push.close(client_id))

    @app.get("/who")
    def who():
        return jsonify(count=push.count(), clients=push.clients())

    return app


app = create()
