"""The application's lifecycle hooks: what they are given, and how they are called.

Every hook call runs in a greenlet of its own: a hook that raises is logged (with the client id) and
counted, one that blocks holds only its own greenlet, never a stream, a publish or another hook.
``on_online``/``on_offline`` reach the application through a consumer (:meth:`Hooks.consumer`), which
returns once every hook of its transitions has returned (or :data:`HOOK_TIMEOUT_SECONDS` passed), so with
Redis a transition is acknowledged only after its hooks ran. No Flask here.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import gevent

from .stats import Stats
from .transitions import Consumer, Transition

log = logging.getLogger(__name__)

# How long a batch of on_online/on_offline calls may take before its transitions count as handled anyway
# (the calls still running go on in their greenlets): a hook that hangs must not hold presence for good.
HOOK_TIMEOUT_SECONDS = 20.0
# on_online/on_offline batches handled at once in one process.
HOOK_CONCURRENCY = 16


class Stream:
    """One open stream, as ``on_connect`` and ``on_disconnect`` see it."""

    __slots__ = ("cause", "client_id", "groups", "id", "opened", "presence")

    def __init__(self, client_id: str, groups: tuple[str, ...], *, presence: bool = False):
        #: Unique for the whole service.
        self.id = uuid.uuid4().hex
        self.client_id = client_id
        self.groups = groups
        #: Whether it asked for ``event: presence`` (``?presence=1``).
        self.presence = presence
        #: When it opened, in Unix seconds.
        self.opened = time.time()
        #: Set by the service when it decided the end itself (cut off as slow, or by the drain).
        self.cause: str | None = None

    def __repr__(self) -> str:
        return f"Stream({self.client_id!r}, groups={self.groups}, id={self.id!r})"


class Hooks:
    """The functions the application registered, by hook, and the context each call runs in.

    ``context()`` is entered around every call (the extension gives the Flask app's ``app_context``, so a
    hook may use ``current_app``, its database session, its logger). :meth:`bound` shares the lists.
    """

    def __init__(self, context: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.connect: list[Callable[[Stream], Any]] = []
        self.disconnect: list[Callable[[Stream, str], Any]] = []
        self.online: list[Callable[[str, str], Any]] = []
        self.offline: list[Callable[[str, str], Any]] = []
        self.context = context

    def bound(self, context: Callable[[], AbstractContextManager[Any]]) -> Hooks:
        """The same hooks (registered before or after), called inside ``context()``."""
        view = Hooks(context)
        view.connect, view.disconnect, view.online, view.offline = (
            self.connect, self.disconnect, self.online, self.offline)
        return view

    @property
    def transitions(self) -> bool:
        return bool(self.online or self.offline)

    def spawn(self, stats: Stats, kind: str, hook: Callable[..., Any], client_id: str,
              *args: Any) -> gevent.Greenlet:
        """Call ``hook(*args)`` in a greenlet of its own; log (with the client id) and count its errors."""
        return gevent.spawn(self._call, stats, kind, hook, client_id, args)

    def _call(self, stats: Stats, kind: str, hook: Callable[..., Any], client_id: str,
              args: tuple[Any, ...]) -> None:
        try:
            with self.context():
                hook(*args)
        except Exception:
            stats.hook_errors[kind] += 1
            log.exception("on_%s hook %s failed for client %s worker=%s", kind,
                          getattr(hook, "__qualname__", hook), client_id, os.getpid())

    def consumer(self, stats: Stats) -> Consumer:
        """The consumer that calls ``on_online``/``on_offline`` for each transition."""
        def handle(transitions: Sequence[Transition]) -> None:
            calls = []
            for transition in transitions:
                hooks = self.online if transition.type == "online" else self.offline
                calls += [self.spawn(stats, transition.type, hook, transition.client,
                                     transition.client, transition.id) for hook in hooks]
            done = gevent.joinall(calls, timeout=HOOK_TIMEOUT_SECONDS)
            if len(done) < len(calls):
                log.warning("%d on_online/on_offline hooks still running after %.0f s (first client %s); "
                            "their transitions count as handled", len(calls) - len(done),
                            HOOK_TIMEOUT_SECONDS, transitions[0].client)
        return Consumer("hooks", handle, concurrency=HOOK_CONCURRENCY)
