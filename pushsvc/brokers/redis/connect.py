"""Where the Redis broker's connections go: one Redis server named by its URL, or the master that Redis
Sentinel names (``redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB]``).

With Sentinel every connection asks a sentinel for the master's address when it connects (redis-py's
:class:`~redis.sentinel.SentinelConnectionPool`), so after a failover each connection that breaks, or that
finds its server demoted (``READONLY``), comes back on the new master by itself: the reader, the shared
pool and everything that uses it (presence, tickets, idempotency, the clock) follow without a restart.
Sentinel itself demotes the old master with ``CLIENT KILL TYPE normal``, which ends every connection to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from ...config import SENTINEL_SCHEMES, ConfigError
from .cluster_url import LazyCluster, cluster_client, is_cluster

DEFAULT_SENTINEL_PORT = 26379
# Asking a sentinel for the master fails fast too: three sentinels that do not answer cost a publish
# at most this much each before it is answered 503.
SENTINEL_TIMEOUT_SECONDS = 0.3


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the sentinels, the master's name, the database."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL, or :class:`ConfigError` saying what is wrong with it.

    ``user:password@`` before the hosts is the master's login (the sentinels are asked without one).
    """
    scheme, sep, rest = url.partition("://")
    example = "like redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
    if scheme not in SENTINEL_SCHEMES or not sep:
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} is not a redis+sentinel:// URL")
    rest = rest.partition("?")[0].partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_host_port(part, url, example) for part in hosts.split(","))
    names = [p for p in path.split("/") if p]
    if not names or len(names) > 2:
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} must name the master after the hosts, "
                          f"{example}")
    db = names[1] if len(names) == 2 else "0"
    if not (db.isascii() and db.isdigit()):
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} names database {db!r}; use a number, like /0")
    return SentinelTarget(sentinels, unquote(names[0]), int(db), unquote(username) or None,
                          unquote(password) or None)


def _host_port(part: str, url: str, example: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        host, port = part.strip(), str(DEFAULT_SENTINEL_PORT)
    host = host.removeprefix("[").removesuffix("]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} needs sentinels as HOST:PORT with a numeric "
                          f"port, {example}")
    return host, int(port)


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0] in SENTINEL_SCHEMES


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A pool of connections to the master Sentinel names, where a greenlet that finds every connection
    busy waits (a while) for one instead of failing at once, as :class:`redis.BlockingConnectionPool`."""


def connect(url: str, *, blocking: bool, **options: Any) -> redis.Redis:
    """A client for ``url`` with its own pool. ``options`` are redis-py's pool and connection options
    (``max_connections``, ``timeout`` for a blocking pool, socket timeouts, ``client_name``…). For a
    Redis Cluster, a client of the whole cluster (see :mod:`.cluster_url`), with pools per node."""
    if is_cluster(url):
        return cluster_client(url, options, blocking=blocking)  # type: ignore[return-value]
    if not is_sentinel(url):
        pool_class = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
        try:
            pool = pool_class.from_url(url, **options)
        except ValueError as error:
            raise ConfigError(f"PUSHSVC_BROKER_URL is not a valid Redis URL: {error}") from None
        return redis.Redis(connection_pool=pool)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs={
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS, "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "retry": options.get("retry")})
    if not blocking:
        options.pop("timeout", None)
    pool_class = BlockingSentinelPool if blocking else SentinelConnectionPool
    return sentinel.master_for(target.master, connection_pool_class=pool_class, db=target.db,
                               username=target.username, password=target.password, **options)


def blocking_reader(url: str, *, name: str, block_seconds: float, connect_timeout: float) -> redis.Redis:
    """A client with a pool of its own and one connection, for blocking reads (``XREAD BLOCK``): it must
    never wait for, or hold, a connection of the shared pool. Its socket timeout outlasts a blocking read;
    no retries (a lost read is read again from its last id by its owner). It connects on first use."""
    return connect(url, blocking=False, max_connections=1, socket_connect_timeout=connect_timeout,
                   socket_timeout=block_seconds + 5, socket_keepalive=True, retry=Retry(NoBackoff(), 0),
                   client_name=name)


def server_address(client: redis.Redis) -> str | None:
    """``host:port`` of the server the client's pool uses now (for Sentinel: the master it last found)."""
    if isinstance(client, LazyCluster):
        return None  # many servers: their clocks are taken to agree (NTP), as the cluster's own do
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        address = pool.master_address
    else:
        kwargs = pool.connection_kwargs
        address = (kwargs.get("host"), kwargs.get("port")) if "host" in kwargs else None
    return None if address is None else f"{address[0]}:{address[1]}"


def disconnect(client: redis.Redis) -> None:
    """Close the client's connections; it connects again on its next command."""
    if isinstance(client, LazyCluster):
        client.close()
    else:
        client.connection_pool.disconnect()


def safe_url(url: str) -> str:
    """The URL without its password, fit for a log line."""
    rest = url.partition("://")[2]
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return url.replace(userinfo + "@", userinfo.partition(":")[0] + ":***@", 1)
