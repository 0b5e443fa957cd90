"""Presence webhooks: each batch of transitions POSTed as JSON, signed, retried with capped jittered backoff.

``{"events": [{"id", "type", "client", "time"}, …]}`` with ``X-Pushsvc-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw body keyed by ``PUSHSVC_WEBHOOK_SECRET`` (when set). A non-2xx answer, a timeout
or a refused connection is retried for ``PUSHSVC_WEBHOOK_RETRY_SECONDS``, then the batch is given up
(logged and counted). The consumer runs in its own greenlets, so a receiver that is slow or down never
holds a stream or a publish; with Redis, a batch is acknowledged only once delivered (or given up), so a
worker that restarts or dies loses none (see docs/PRESENCE.md).

urllib3 does the HTTP: kept connections to the receiver, separate connect and read timeouts, and plain
sockets that gevent's monkey-patching (the gunicorn worker) makes cooperative.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Sequence

import gevent
import urllib3

from .config import Settings
from .stats import Stats
from .transitions import Consumer, Transition

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pushsvc-Signature"
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 10.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
# Batches POSTed at once by one process.
CONCURRENCY = 4


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def encode(transitions: Sequence[Transition]) -> bytes:
    return json.dumps({"events": [t.to_json() for t in transitions]}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


class Webhook:
    """POSTs transitions to ``settings.webhook_url``."""

    def __init__(self, settings: Settings, stats: Stats):
        assert settings.webhook_url is not None
        self.url = settings.webhook_url
        self.secret = settings.webhook_secret
        self.retry_seconds = settings.webhook_retry_seconds
        self.stats = stats
        self.http = urllib3.PoolManager(
            num_pools=2, maxsize=CONCURRENCY, retries=False,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS))

    def consumer(self) -> Consumer:
        return Consumer("webhook", self.deliver, concurrency=CONCURRENCY)

    def deliver(self, transitions: Sequence[Transition]) -> None:
        """POST one batch until the receiver takes it, or the retry period is over."""
        body = encode(transitions)
        headers = {"Content-Type": "application/json", "User-Agent": "pushsvc-webhook"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        give_up = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            failure = self._post(body, headers)
            if failure is None:
                self.stats.webhook_deliveries += 1
                self.stats.webhook_events += len(transitions)
                return
            attempt += 1
            cap = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** min(attempt - 1, 16))
            delay = random.uniform(cap / 2, cap)
            if time.monotonic() + delay > give_up:
                self.stats.webhook_failures += 1
                log.error("webhook gave up on %d transitions (first %s, client %s) after %d tries: %s",
                          len(transitions), transitions[0].id, transitions[0].client, attempt, failure)
                return
            self.stats.webhook_retries += 1
            log.warning("webhook try %d for %d transitions (first %s, client %s) failed: %s; again in "
                        "%.1f s", attempt, len(transitions), transitions[0].id, transitions[0].client,
                        failure, delay)
            gevent.sleep(delay)

    def _post(self, body: bytes, headers: dict[str, str]) -> str | None:
        """``None`` when the receiver answered 2xx, else what went wrong."""
        try:
            response = self.http.request("POST", self.url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as error:
            return f"no answer ({error.__class__.__name__}: {error})"
        if 200 <= response.status < 300:
            return None
        return f"answer {response.status}"
