"""Settings: read once from ``PUSHSVC_*`` environment variables and Flask config, validated, frozen.

Precedence, highest first: keyword arguments (``create_app(heartbeat_seconds=5)``), the Flask config
mapping ``app.config["PUSHSVC"]`` (keys without the prefix, any case), ``PUSHSVC_*`` in the environment,
then the defaults below. A bad value raises :class:`ConfigError` with one sentence naming the setting.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

PREFIX = "PUSHSVC_"

# The schemes of PUSHSVC_BROKER_URL, by broker: the one list that validation, the broker factory and the
# start-up check share.
MEMORY_SCHEMES = ("memory",)
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The master that Redis Sentinel names (pushsvc/brokers/redis/connect.py).
SENTINEL_SCHEMES = ("redis+sentinel",)
# A Redis Cluster, the events spread over shards (pushsvc/brokers/redis/cluster_url.py).
CLUSTER_SCHEMES = ("redis+cluster",)
BROKER_SCHEMES = MEMORY_SCHEMES + REDIS_SCHEMES + SENTINEL_SCHEMES + CLUSTER_SCHEMES

DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_RETRY_MS = 3000
DEFAULT_HISTORY_SIZE = 10_000
DEFAULT_HISTORY_TTL_SECONDS = 600.0
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_MESSAGE_BYTES = 65_536
# A client that has not taken a single byte for this long is gone (a laptop lid closed, a dead NAT).
DEFAULT_WRITE_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_TARGETS = 1000
DEFAULT_MAX_GROUPS = 32
# Soft refusals (busy, broker down) ask browsers to come back after this, give or take half.
DEFAULT_BUSY_RETRY_MS = 5000
# A publish retried with the same Idempotency-Key within this long is answered again, not published: a day
# outlasts any publisher's retries (the IETF draft and Centrifugo keep keys about as long).
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 86_400.0
# Open streams of one client id per worker: tabs and devices of one user fit; one id cannot take a worker.
DEFAULT_MAX_STREAMS_PER_CLIENT = 100
# A reload, a reconnect after a restart or a move to another worker takes a browser a few seconds
# (EventSource waits retry_ms, 3 s, before it comes back): within this, no online/offline is reported.
DEFAULT_PRESENCE_GRACE_SECONDS = 5.0
MAX_PRESENCE_GRACE_SECONDS = 3600.0
# With Redis, the clients of a worker that dies without a word stay online this long after its last
# refresh (it refreshes three times as often): longer forgives a worker that stalls, shorter reports its
# clients offline sooner. The contract promises at most 30 s.
DEFAULT_PRESENCE_TTL_SECONDS = 15.0
MIN_PRESENCE_TTL_SECONDS = 3.0
MAX_PRESENCE_TTL_SECONDS = 30.0
# A webhook receiver that is down is retried this long (with backoff) before its batch is given up.
DEFAULT_WEBHOOK_RETRY_SECONDS = 600.0
WEBHOOK_SCHEMES = ("http", "https")
# The longest request line gunicorn accepts (its own maximum): the query of a subscribe that joins many
# groups must fit, and a longer query string is refused with a clear 400 on any server.
MAX_REQUEST_LINE_BYTES = 8190


class ConfigError(ValueError):
    """A setting that pushsvc cannot start with. The message is one sentence naming it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of pushsvc, validated. Build it with :meth:`load`."""

    broker_url: str = "memory://"
    url_prefix: str = "/sse"
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    retry_ms: int = DEFAULT_RETRY_MS
    history_size: int = DEFAULT_HISTORY_SIZE
    history_ttl_seconds: float = DEFAULT_HISTORY_TTL_SECONDS
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    cors_origins: tuple[str, ...] = ("*",)
    jwt_secret: str | None = None
    publish_token: str | None = None
    write_timeout_seconds: float = DEFAULT_WRITE_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_targets: int = DEFAULT_MAX_TARGETS
    max_groups: int = DEFAULT_MAX_GROUPS
    busy_retry_ms: int = DEFAULT_BUSY_RETRY_MS
    log_level: str = "INFO"
    idempotency_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS
    max_streams_per_client: int = DEFAULT_MAX_STREAMS_PER_CLIENT
    # GET|POST /push and /send of the original design; off: they answer 404 (see SECURITY.md).
    legacy_routes: bool = True
    # Presence transitions (section 8 of the contract): on_online/on_offline, webhooks, ?presence=1.
    presence_grace_seconds: float = DEFAULT_PRESENCE_GRACE_SECONDS
    presence_ttl_seconds: float = DEFAULT_PRESENCE_TTL_SECONDS
    # Off: no transitions are tracked at all (per-stream hooks and /sse/clients still work).
    presence_tracking: bool = True
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_retry_seconds: float = DEFAULT_WEBHOOK_RETRY_SECONDS
    # Redis replicas that must hold an event before its publish is answered 202 (Redis WAIT); 0: none.
    redis_min_replicas: int = 0
    # While events flow (more than 50 a second), a worker's reader waits this long before it reads again,
    # so events that come one at a time are read several per wake-up; 0: read each one at once.
    redis_read_linger_ms: int = 5

    @classmethod
    def load(
        cls,
        config: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Merge the sources, convert each value to its type and validate the whole."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            if key in env and env[key] != "":
                raw[f.name] = env[key]
        for source in (config or {}), overrides:
            for key, value in source.items():
                name = key.lower().removeprefix(PREFIX.lower())
                if name not in _FIELD_NAMES:
                    raise ConfigError(f"unknown setting {PREFIX}{name.upper()}")
                raw[name] = value
        values = {name: _convert(name, value) for name, value in raw.items()}
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first setting that makes no sense."""
        if self.broker_scheme not in BROKER_SCHEMES:
            _fail("broker_url", f"is {self.broker_url!r}; use memory://, redis://HOST:PORT/DB or "
                  "redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB] or "
                  "redis+cluster://HOST:PORT[,HOST:PORT…][/?shards=N]")
        if not self.url_prefix.startswith("/") or self.url_prefix.endswith("/") or " " in self.url_prefix:
            _fail("url_prefix", "must start with / and not end with / (for example /sse)")
        for name in ("heartbeat_seconds", "history_ttl_seconds", "write_timeout_seconds",
                     "idempotency_ttl_seconds"):
            if not getattr(self, name) > 0:
                _fail(name, "must be a positive number of seconds")
        for name in ("retry_ms", "history_size", "queue_size", "max_connections", "max_message_bytes",
                     "max_body_bytes", "max_batch", "max_targets", "max_groups", "busy_retry_ms",
                     "max_streams_per_client"):
            if getattr(self, name) < 1:
                _fail(name, "must be a positive whole number")
        if not 0 <= self.redis_read_linger_ms <= 1000:
            _fail("redis_read_linger_ms", "must be a whole number of milliseconds from 0 to 1000")
        if self.redis_min_replicas < 0:
            _fail("redis_min_replicas", "must be 0 (do not wait for replicas) or a positive whole number")
        if self.max_body_bytes < self.max_message_bytes + 1024:
            _fail("max_body_bytes", "must leave room for one message of max_message_bytes and its fields")
        if not self.cors_origins:
            _fail("cors_origins", "must list at least one origin, or *")
        self._validate_presence()
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            _fail("log_level", "must be DEBUG, INFO, WARNING, ERROR or CRITICAL")

    def _validate_presence(self) -> None:
        if not 0 <= self.presence_grace_seconds <= MAX_PRESENCE_GRACE_SECONDS:
            _fail("presence_grace_seconds", f"must be 0 to {MAX_PRESENCE_GRACE_SECONDS:.0f} seconds")
        if not MIN_PRESENCE_TTL_SECONDS <= self.presence_ttl_seconds <= MAX_PRESENCE_TTL_SECONDS:
            _fail("presence_ttl_seconds",
                  f"must be {MIN_PRESENCE_TTL_SECONDS:.0f} to {MAX_PRESENCE_TTL_SECONDS:.0f} seconds")
        if not self.webhook_retry_seconds > 0:
            _fail("webhook_retry_seconds", "must be a positive number of seconds")
        if self.webhook_url is None:
            if self.webhook_secret is not None:
                _fail("webhook_secret", "is set but PUSHSVC_WEBHOOK_URL is not")
            return
        parts = urlsplit(self.webhook_url)
        if parts.scheme not in WEBHOOK_SCHEMES or not parts.hostname:
            _fail("webhook_url", f"is {self.webhook_url!r}; use http://HOST[:PORT]/PATH or https://…")
        if not self.presence_tracking:
            _fail("webhook_url", "is set but PUSHSVC_PRESENCE_TRACKING is off; webhooks need it")

    @property
    def broker_scheme(self) -> str:
        return urlsplit(self.broker_url).scheme


_FIELD_NAMES = {f.name for f in fields(Settings)}

# The PUSHSVC_* variables that are not Settings: gunicorn's, read by pushsvc/server/gunicorn_conf.py, and
# the command-line client's, read by pushsvc/cli.py (tests/test_unknown_settings.py keeps both true).
SERVER_VARIABLES = ("PUSHSVC_BIND", "PUSHSVC_WORKERS", "PUSHSVC_WORKER_CONNECTIONS", "PUSHSVC_BACKLOG",
                    "PUSHSVC_WORKER_TIMEOUT", "PUSHSVC_GRACEFUL_TIMEOUT", "PUSHSVC_KEEPALIVE",
                    "PUSHSVC_CONTROL_SOCKET", "PUSHSVC_ACCESS_LOG")
CLIENT_VARIABLES = ("PUSHSVC_URL", "PUSHSVC_SUBSCRIBER_TOKEN")
# Set in the environment once it has been checked: the gunicorn arbiter checks before it forks, so the
# app each worker builds does not say it again.
ENVIRONMENT_CHECKED = "_PUSHSVC_ENVIRONMENT_CHECKED"


def known_variables() -> frozenset[str]:
    """Every ``PUSHSVC_*`` name pushsvc reads: its settings, its gunicorn settings, its client's."""
    settings = {PREFIX + name.upper() for name in _FIELD_NAMES}
    return frozenset(settings.union(SERVER_VARIABLES, CLIENT_VARIABLES))


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One sentence for each ``PUSHSVC_*`` variable that pushsvc does not read, with the closest name."""
    env = os.environ if environ is None else environ
    known = known_variables()
    # Compared without the prefix they all share, which would make any two names look alike.
    bare = sorted(name.removeprefix(PREFIX) for name in known)  # sorted: the same pick on every run
    found = []
    for name in sorted(key for key in env if key.startswith(PREFIX) and key not in known):
        close = difflib.get_close_matches(name.removeprefix(PREFIX), bare, n=1)
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "no pushsvc setting has a name like it"
        found.append(f"unknown setting {name} in the environment is ignored; {hint}")
    return found


def check_environment(*, always: bool = False) -> list[str]:
    """:func:`unknown_variables` of ``os.environ``, once: ``[]`` in a process started by one that has
    checked already (a gunicorn worker), unless ``always`` (the arbiter, which starts the service)."""
    if os.environ.get(ENVIRONMENT_CHECKED) and not always:
        return []
    os.environ[ENVIRONMENT_CHECKED] = "1"
    return unknown_variables()


def _fail(name: str, why: str) -> None:
    raise ConfigError(f"{PREFIX}{name.upper()} {why}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _to_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip().rstrip("/") for item in items if item.strip())


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError(value)
    return text in _TRUE


def _to_optional_text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


# Converter and description by the field's real type (resolved, not its annotation's spelling): a field of
# a type not listed here fails at import, never converts silently.
_CONVERTERS: dict[Any, tuple[Callable[[Any], Any], str]] = {
    bool: (_to_bool, "true or false (1/0, yes/no, on/off)"),
    int: (_to_int, "a whole number"),
    float: (_to_float, "a number"),
    str: (str, "text"),
    str | None: (_to_optional_text, "text"),
    tuple[str, ...]: (_to_list, "a comma separated list"),
}
_FIELD_CONVERTERS = {name: _CONVERTERS[kind] for name, kind in typing.get_type_hints(Settings).items()}


def _convert(name: str, value: Any) -> Any:
    convert, description = _FIELD_CONVERTERS[name]
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{PREFIX}{name.upper()} must be {description}, not {value!r}") from None
