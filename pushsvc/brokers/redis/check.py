"""Is ``PUSHSVC_BROKER_URL`` a Redis pushsvc can use? Checked once at start-up, answered in one line."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...config import REDIS_SCHEMES, ConfigError, Settings
from .cluster_url import is_cluster, parse_cluster_url
from .connect import connect, is_sentinel, parse_sentinel_url
from .connect import safe_url as _safe

CONNECT_TIMEOUT_SECONDS = 2.0
# GETDEL (tickets) and XTRIM MINID (history TTL) came with Redis 6.2.
MIN_VERSION = (6, 2)


def check_url(url: str) -> None:
    """Raise :class:`ConfigError` (one line) for a Redis URL that cannot be right, before any I/O."""
    if is_sentinel(url):
        parse_sentinel_url(url)
        return
    if is_cluster(url):
        parse_cluster_url(url)
        return
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname or port == -1:
            raise ConfigError(f"PUSHSVC_BROKER_URL {_safe(url)} needs a host and a numeric port, like "
                              "redis://127.0.0.1:6379/0")
        db = parts.path.strip("/")
        if db and not (db.isascii() and db.isdigit()):
            raise ConfigError(f"PUSHSVC_BROKER_URL {_safe(url)} names database {db!r}; use a number, like /0")
    elif parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(f"PUSHSVC_BROKER_URL {_safe(url)} is not a redis://, rediss://, unix://, "
                          "redis+sentinel:// or redis+cluster:// URL")


def check_reachable(url: str) -> None:
    """Raise :class:`ConfigError` (one line) unless ``url`` is a Redis that answers, with the commands
    pushsvc needs (Redis 6.2 or later)."""
    check_url(url)
    client = connect(url, blocking=False, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                     socket_timeout=CONNECT_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0))
    try:
        version = _version(client)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
        raise ConfigError(f"PUSHSVC_BROKER_URL {_safe(url)} cannot be reached: {error}") from None
    finally:
        client.close()
    if _numbers(version) < MIN_VERSION:
        raise ConfigError(f"PUSHSVC_BROKER_URL {_safe(url)} runs Redis {version}; pushsvc needs 6.2 or later")


def _version(client: redis.Redis) -> str:
    """The oldest Redis version among the servers (every master of a cluster, which must be whole)."""
    if not isinstance(client, redis.Redis):  # a cluster
        state = client.cluster_info().get("cluster_state")
        if state != "ok":
            raise redis.ConnectionError(f"the cluster says cluster_state:{state}")
        infos = client.info("server", target_nodes=client.PRIMARIES).values()
        return min((str(info.get("redis_version", "0")) for info in infos), key=_numbers)
    return str(client.info("server").get("redis_version", "0"))


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def main() -> None:
    """Check ``PUSHSVC_BROKER_URL`` from the environment; exit with one line when it cannot be used."""
    try:
        check_reachable(Settings.load().broker_url)
    except ConfigError as error:
        sys.exit(f"pushsvc: {error}")

