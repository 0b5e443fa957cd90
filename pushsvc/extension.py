"""``Push``: pushsvc as a Flask extension, and the Python API for publishing from application code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from flask import Flask, current_app, has_app_context

from .auth import Authorizer
from .blueprint import create_blueprint
from .config import Settings, check_environment
from .cors import Cors
from .hooks import Hooks, Stream
from .idempotency import check_key, fingerprint_messages
from .messages import build_batch, check_name, compose
from .model import Message, Published, Target
from .service import Service

log = logging.getLogger(__name__)

EXTENSION_KEY = "pushsvc"


class Push:
    """Mount pushsvc in a Flask app and publish from anywhere in it.

    ``Push(app)`` or ``push = Push(); push.init_app(app)``. Settings come from ``PUSHSVC_*`` environment
    variables, ``app.config["PUSHSVC"]`` and the keyword arguments given here, in rising precedence.

    The publishing methods work inside a request, in a background greenlet or thread, or in a process that
    serves no streams at all (with the Redis broker): outside an application context they use the app
    this object was initialised with last.
    """

    def __init__(self, app: Flask | None = None, **settings: Any):
        self._settings = settings
        self._service: Service | None = None
        self._authorizers: list[Authorizer] = []
        self._hooks = Hooks()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **settings: Any) -> None:
        merged = {**self._settings, **settings}
        # Once per process; under pushsvc's gunicorn configuration the arbiter has said it already.
        for line in check_environment():
            log.warning("%s", line)
        config = Settings.load(app.config.get("PUSHSVC"), **merged)
        # Hooks run outside any request, in this app's context (current_app, its extensions, its logger).
        service = Service(config, authorizers=self._authorizers, hooks=self._hooks.bound(app.app_context))
        app.extensions[EXTENSION_KEY] = service
        app.extensions["pushsvc.cors"] = Cors(config.cors_origins)
        if config.jwt_secret is not None and config.publish_token is None:
            log.warning("PUSHSVC_JWT_SECRET is set but PUSHSVC_PUBLISH_TOKEN is not: anyone who can reach "
                        "the server can publish and close streams")
        app.register_blueprint(create_blueprint(), url_prefix=config.url_prefix)
        self._service = service

    def authorize(self, function: Authorizer) -> Authorizer:
        """Decorator: ``function(client_id, groups)`` decides each subscribe, inside its request.

        It can read the host application's session or login (``flask.session``, ``current_user``);
        a false answer refuses the stream with 403, and ``flask.abort(401)`` works too. It runs after the
        JWT check when ``PUSHSVC_JWT_SECRET`` is set, and every registered function must agree.
        """
        self._authorizers.append(function)
        return function

    # -- lifecycle hooks (section 8 of the contract); each call runs in a greenlet of its own ------------

    def on_connect(self, function: Callable[[Stream], Any]) -> Callable[[Stream], Any]:
        """Decorator: ``function(stream)`` when a stream opens, in the worker that holds it.

        ``stream.client_id``, ``stream.groups`` (a tuple) and ``stream.id`` (unique) say which. Like every
        hook, it runs in a greenlet of its own, outside any request but inside the app's context
        (``current_app`` works): one that raises is logged with the client id and counted, one that
        blocks delays nothing else. Register hooks before the first request.
        """
        self._hooks.connect.append(function)
        return function

    def on_disconnect(self, function: Callable[[Stream, str], Any]) -> Callable[[Stream, str], Any]:
        """Decorator: ``function(stream, reason)`` once when a stream ends, in the worker that held it;
        ``reason`` is ``"client"`` (it hung up), ``"closed"`` (a close), ``"slow"`` (cut off for not
        keeping up), ``"drain"`` (the worker restarts) or ``"error"`` (the broker failed)."""
        self._hooks.disconnect.append(function)
        return function

    def on_online(self, function: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
        """Decorator: ``function(client_id, event_id)`` when a client id's first stream opens anywhere in
        the service (not when it comes back within ``PUSHSVC_PRESENCE_GRACE_SECONDS``). Once for the whole
        service, in one process; at least once under faults, so dedupe by ``event_id``."""
        self._hooks.online.append(function)
        return function

    def on_offline(self, function: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
        """Decorator: ``function(client_id, event_id)`` when a client id's last stream ended and none came
        back within ``PUSHSVC_PRESENCE_GRACE_SECONDS`` (a worker that died counts once its presence expired).
        Once for the whole service, as :meth:`on_online`."""
        self._hooks.offline.append(function)
        return function

    @property
    def service(self) -> Service:
        """The service of the current app, or of the app this object was initialised with."""
        if has_app_context() and EXTENSION_KEY in current_app.extensions:
            return current_app.extensions[EXTENSION_KEY]
        if self._service is None:
            raise RuntimeError("Push is not initialised: call Push(app) or push.init_app(app) first")
        return self._service

    def send(self, client_id: str, data: Any, *, event: str | None = None, retry: int | None = None,
             idempotency_key: str | None = None) -> str:
        """Send an event to every stream of one client id; returns the event id.

        With ``idempotency_key`` (every send method takes it, as ``POST /sse/publish`` takes the
        Idempotency-Key header): a repeat with the same key and the same event within
        ``PUSHSVC_IDEMPOTENCY_TTL_SECONDS`` publishes nothing and returns the first id; the same key with
        another event raises :class:`~pushsvc.IdempotencyConflict` (``status`` 422, or 409 while the first
        is still being published).
        """
        return self._send(Target.clients([check_name(client_id)]), data, event, retry, idempotency_key)

    def send_many(self, client_ids: Iterable[str], data: Any, *, event: str | None = None,
                  retry: int | None = None, idempotency_key: str | None = None) -> str:
        """Send one event to each of a set of client ids."""
        ids = [check_name(i) for i in client_ids]
        if not ids:
            raise ValueError("send_many needs at least one client id")
        return self._send(Target.clients(ids), data, event, retry, idempotency_key)

    def send_group(self, group: str, data: Any, *, event: str | None = None, retry: int | None = None,
                   idempotency_key: str | None = None) -> str:
        """Send to every connection that joined ``group``."""
        return self._send(Target.group(check_name(group, field="group")), data, event, retry, idempotency_key)

    def send_prefix(self, prefix: str, data: Any, *, event: str | None = None,
                    retry: int | None = None, idempotency_key: str | None = None) -> str:
        """Send to every client whose id starts with ``prefix``."""
        return self._send(Target.prefix(check_name(prefix, field="prefix")), data, event, retry,
                          idempotency_key)

    def broadcast(self, data: Any, *, event: str | None = None, retry: int | None = None,
                  idempotency_key: str | None = None) -> str:
        """Send to every open connection."""
        return self._send(Target.everyone(), data, event, retry, idempotency_key)

    def send_batch(self, events: Sequence[Mapping[str, Any]], *,
                   idempotency_key: str | None = None) -> list[str]:
        """Publish several events, each with its own target, in one call; returns their ids in order.

        Each event is a mapping like the body of ``POST /sse/publish``: exactly one of ``to`` (an id or a
        list), ``group``, ``prefix`` or ``broadcast``, plus ``data`` and optionally ``event`` and
        ``retry``. All are checked first: one invalid event raises :class:`~pushsvc.InvalidInput` naming
        its index, and nothing is published. Much cheaper per event than one call each (with Redis, one
        round trip for the whole batch). ``idempotency_key`` as for :meth:`send`, for the whole batch.
        """
        service = self.service
        return [p.id for p in _publish(service, build_batch(list(events), service.settings), idempotency_key)]

    def close(self, client_id: str) -> int:
        """End every stream of ``client_id`` for good; returns how many were open."""
        return self.service.close(check_name(client_id))

    def clients(self) -> list[dict[str, Any]]:
        """``[{"id", "connections", "groups"}, …]`` for the whole service."""
        return [c.to_json() for c in self.service.clients().values()]

    def count(self) -> int:
        """How many client ids have at least one open stream, whole service."""
        return len(self.service.clients())

    def _send(self, target: Target, data: Any, event: str | None, retry: int | None,
              idempotency_key: str | None) -> str:
        service = self.service
        message = compose(target, data, service.settings, event=event, retry=retry)
        return _publish(service, [message], idempotency_key)[0].id


def _publish(service: Service, messages: list[Message], idempotency_key: str | None) -> list[Published]:
    """Publish, once per key when there is one; its fingerprint is the encoded messages."""
    if idempotency_key is None:
        return service.publish(messages)
    key = check_key(idempotency_key)
    return service.publish_once(key, fingerprint_messages(messages), messages)[0]
