"""One Redis call per round trip for a question many greenlets ask at once (the stream's head, asked by
every subscribe of a connect storm).

A caller never gets an answer read before it asked: callers that arrive while a call is on its way wait
for the next one, which starts as soon as that one returns and answers all of them. So a storm of
thousands of subscribes holds one connection of the pool, not all of them (past which the pool's short
wait turns subscribes away), and each one still sees the stream as it was after it arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.monkey import is_module_patched

T = TypeVar("T")


class Coalesced(Generic[T]):
    """``call()`` runs ``fn`` (in a greenlet of its own) for every caller waiting since the last run."""

    def __init__(self, fn: Callable[[], T], *, cooperative: bool | None = None):
        self._fn = fn
        # Whether sockets yield to the hub (None: ask gevent's patching at each call, as a gunicorn gevent
        # worker patches after the broker may have been built).
        self._cooperative = cooperative
        self._waiting: AsyncResult | None = None
        self._running = False

    def __call__(self) -> T:
        cooperative = self._cooperative
        if not (is_module_patched("socket") if cooperative is None else cooperative):
            # Unpatched, a call blocks the thread: nobody else can ask meanwhile, and a wait would let
            # the hub run greenlets that block in their own reads (a reader's XREAD) instead.
            return self._fn()
        result = self._waiting
        if result is None:
            result = self._waiting = AsyncResult()
            if not self._running:
                self._running = True
                gevent.spawn(self._run)
        return result.get()

    def _run(self) -> None:
        try:
            while self._waiting is not None:
                result, self._waiting = self._waiting, None
                try:
                    result.set(self._fn())
                except Exception as error:  # every waiter of this round gets it, as if it had called
                    result.set_exception(error)
        finally:
            self._running = False
