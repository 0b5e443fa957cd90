"""A host application that mounts pushsvc and decides subscriptions with its own login (``@app.get("/healthz")
def healthz() -> str:
    return "ok"


@push.authorize``).

Its "login" is a signed Flask session set by ``/login/<user>``; a user may subscribe as itself only, and
may join group ``staff`` only when its name starts with ``staff-``. Served by gunicorn in the tests.
"""

from __future__ import annotations

from flask import Flask, abort, session

from pushsvc import Push

app = Flask(__name__)
app.secret_key = "security-app-session-key-for-tests-only"
push = Push(app)


@app.get("/login/<user>")
def login(user: str) -> str:
    session["user"] = user
    return "ok"


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@push.authorize
def same_user(client_id: str, groups: tuple[str, ...]) -> bool:
    user = session.get("user")
    if user is None:
        abort(401)
    return client_id == user and all(g != "staff" or user.startswith("staff-") for g in groups)
