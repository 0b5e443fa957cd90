"""Idempotent publishing: a publish retried with the same key is answered again, never published twice.

After draft-ietf-httpapi-idempotency-key-header and Centrifugo's ``idempotency_key``. A store keeps, under
each key and for the whole service, the SHA-256 *fingerprint* of what was published with it and either
"in flight" or the first answer (the events' ids and audiences; only a ``202`` is ever kept). The service
(:meth:`pushsvc.service.Service.publish_once`) drives it in three steps:

1. :meth:`IdempotencyStore.claim` takes a free key in one atomic step, or shows what is already there;
2. after the publish, :meth:`~IdempotencyStore.record` keeps the answer for the time to live;
3. if the publish failed, :meth:`~IdempotencyStore.release` frees the key, so a retry can publish.

An in-flight claim lasts :data:`IN_FLIGHT_SECONDS` at most: a publisher that dies between steps 1 and 2
blocks retries (``409``) that long, not for a day. :class:`MemoryIdempotency` is the whole service when the
broker is one process; the Redis broker has its own (:mod:`pushsvc.brokers.redis.idempotency`). No HTTP
here: the fingerprint of a request body is made from its bytes, whoever read them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .messages import InvalidInput
from .model import Message, Published

HEADER = "Idempotency-Key"
MAX_KEY_BYTES = 255
# Long enough for any publish (a Redis publish gives up after a second), short enough that a publisher that
# died mid-publish does not hold its key for the whole time to live.
IN_FLIGHT_SECONDS = 30.0
# The memory store forgets its oldest keys past this many: a bound on a worker's memory at any publish rate.
MEMORY_MAX_KEYS = 100_000


class IdempotencyConflict(InvalidInput):
    """The key is in use: ``422`` for another payload under it, ``409`` while its first publish runs."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message, field=HEADER, status=status)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a key holds: the fingerprint published under it, and its answer (``None``: in flight)."""

    fingerprint: str
    answer: tuple[Published, ...] | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: ``token`` when the caller now owns the key, else the ``entry`` in the way."""

    token: str | None = None
    entry: Entry | None = None


class IdempotencyStore(Protocol):
    def claim(self, key: str, fingerprint: str, ttl_seconds: float) -> Claim:
        """Own ``key`` for a publish of ``fingerprint`` if it is free, atomically across the service.

        Raises ``BrokerUnavailable`` when the store cannot be reached."""

    def record(self, key: str, token: str, entry: Entry, ttl_seconds: float) -> None:
        """Keep ``entry`` (with its answer) under ``key`` for ``ttl_seconds``, if ``token`` still owns it."""

    def release(self, key: str, token: str) -> None:
        """Free ``key`` if ``token`` still owns it: its publish failed, and a retry must be able to run."""


def answer_again(entry: Entry | None, fingerprint: str) -> list[Published]:
    """The first answer under a key that is taken, if this publish is the same one and it is done; else
    :class:`IdempotencyConflict` (422: another publish, 409: still in flight)."""
    if entry is None or entry.fingerprint != fingerprint:
        raise IdempotencyConflict("this Idempotency-Key was used for another publish; a new publish needs "
                                  "a new key", status=422)
    if entry.answer is None:
        raise IdempotencyConflict("the first publish with this Idempotency-Key is still in flight; retry "
                                  "when it is answered", status=409)
    return list(entry.answer)


def check_key(value: object) -> str:
    """An idempotency key: 1 to 255 printable ASCII characters (space to ``~``), kept as given."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY_BYTES:
        raise InvalidInput(f"{HEADER} must be 1 to {MAX_KEY_BYTES} printable ASCII characters", field=HEADER)
    if not all(" " <= c <= "~" for c in value):
        raise InvalidInput(f"{HEADER} must be printable ASCII (no control characters, no non-ASCII)",
                           field=HEADER)
    return value


def fingerprint_messages(messages: Sequence[Message]) -> str:
    """The fingerprint of what the Python API publishes: each message's target and encoded bytes."""
    digest = hashlib.sha256()
    for message in messages:
        parts = [message.target.kind.encode(), *(v.encode() for v in message.target.values), message.body,
                 b"c" if message.close else b""]
        digest.update(b"%d:" % len(parts))
        for part in parts:  # length-prefixed: no two different messages hash the same bytes
            digest.update(b"%d:%s" % (len(part), part))
    return digest.hexdigest()


def fingerprint_body(content_type: str, body: bytes | Iterable[tuple[str, str]]) -> str:
    """The fingerprint of an HTTP publish: its ``Content-Type`` and raw body bytes, or for a multipart
    form (whose boundary a client makes afresh for each request) the type and the decoded field pairs."""
    digest = hashlib.sha256(content_type.encode("latin-1") + b"\n")
    if isinstance(body, bytes):
        digest.update(body)
    else:
        digest.update(json.dumps(list(body), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def new_token() -> str:
    return secrets.token_hex(8)


class MemoryIdempotency:
    """Keys in this process, forgotten when they expire or when :data:`MEMORY_MAX_KEYS` newer ones came."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = MEMORY_MAX_KEYS):
        # key -> (entry, owner's token or "" once recorded, expiry), oldest write first.
        self._entries: OrderedDict[str, tuple[Entry, str, float]] = OrderedDict()
        self._clock = clock
        self._max_keys = max_keys

    def claim(self, key: str, fingerprint: str, ttl_seconds: float) -> Claim:
        now = self._clock()
        self._forget(now)
        held = self._entries.get(key)
        if held is not None and held[2] > now:
            return Claim(entry=held[0])
        token = new_token()
        self._put(key, (Entry(fingerprint), token, now + min(ttl_seconds, IN_FLIGHT_SECONDS)))
        return Claim(token=token)

    def record(self, key: str, token: str, entry: Entry, ttl_seconds: float) -> None:
        if self._owner(key) == token:
            self._put(key, (entry, "", self._clock() + ttl_seconds))

    def release(self, key: str, token: str) -> None:
        if self._owner(key) == token:
            del self._entries[key]

    def _owner(self, key: str) -> str | None:
        held = self._entries.get(key)
        return held[1] if held is not None and held[2] > self._clock() else None

    def _put(self, key: str, value: tuple[Entry, str, float]) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)

    def _forget(self, now: float) -> None:
        # Written in order, so the expired are mostly at the front; stop at the first live one.
        while self._entries:
            key, (_, _, expires) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
