"""A Redis Cluster named by ``redis+cluster://HOST:PORT[,HOST:PORT…][/?shards=N]``: what the URL says, and
a client for it that connects on first use.

The hosts are where the client first asks for the cluster's layout (any node will do; list several so
one that is down is no trouble). ``shards`` is how many streams the events are spread over (see
:mod:`.sharded`); ``user:password@`` before the hosts is the login of every node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster

from ...config import CLUSTER_SCHEMES, ConfigError

DEFAULT_SHARDS = 16
MAX_SHARDS = 1024
EXAMPLE = "like redis+cluster://10.0.0.1:7000,10.0.0.2:7000/?shards=16"


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    nodes: tuple[tuple[str, int], ...]
    shards: int = DEFAULT_SHARDS
    username: str | None = None
    password: str | None = None


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterTarget:
    """The parts of a ``redis+cluster://`` URL, or :class:`ConfigError` saying what is wrong with it."""
    from .connect import safe_url

    scheme, sep, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES or not sep:
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} is not a redis+cluster:// URL")
    rest, _, query = rest.partition("#")[0].partition("?")
    netloc, _, path = rest.partition("/")
    if path.strip("/"):
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} has a path; a cluster has no databases, "
                          f"{EXAMPLE}")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    username, _, password = userinfo.partition(":")
    nodes = tuple(_host_port(part, url) for part in hosts.split(","))
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"shards"})
    if unknown:
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} has an unknown option {unknown[0]!r}; only "
                          f"shards=N is known, {EXAMPLE}")
    shards = DEFAULT_SHARDS
    if "shards" in options:
        raw = options["shards"][-1]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_SHARDS:
            raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} asks for shards={raw!r}; use a whole "
                              f"number from 1 to {MAX_SHARDS}")
        shards = int(raw)
    return ClusterTarget(nodes, shards, unquote(username) or None, unquote(password) or None)


def _host_port(part: str, url: str) -> tuple[str, int]:
    from .connect import safe_url

    host, colon, port = part.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"PUSHSVC_BROKER_URL {safe_url(url)} needs the nodes as HOST:PORT with a numeric "
                          f"port, {EXAMPLE}")
    return host, int(port)


class LazyCluster:
    """A :class:`redis.cluster.RedisCluster` built on first use: building one asks a node for the cluster's
    layout, and a worker started while the cluster is down must still start (and refuse softly). A
    failed build is tried again on the next use."""

    def __init__(self, target: ClusterTarget, options: dict[str, Any]):
        self.target = target
        self.options = options
        self._client: RedisCluster | None = None

    @property
    def client(self) -> RedisCluster:
        if self._client is None:
            nodes = [ClusterNode(host, port) for host, port in self.target.nodes]
            host, port = self.target.nodes[0]
            try:
                # Built "from a URL" so that each node's pool is of the class asked for (a blocking one:
                # a greenlet that finds every connection to a node busy waits a while, as with one Redis).
                self._client = RedisCluster.from_url(f"redis://{host}:{port}", startup_nodes=nodes,
                                                     username=self.target.username,
                                                     password=self.target.password, **self.options)
            except redis.exceptions.RedisClusterException as error:
                # Raised when no startup node answers: the same "cannot reach Redis" as any other.
                raise redis.ConnectionError(str(error)) from error
        return self._client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        return _as_redis_errors(attribute) if callable(attribute) else attribute

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self.client.pipeline(*args, **kwargs)
        pipe.execute = _as_redis_errors(pipe.execute)
        return pipe

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _as_redis_errors(fn: Any) -> Any:
    """``fn``, raising the cluster's own errors (not RedisErrors: slots not served, no node reachable)
    as the ``ConnectionError`` every caller handles as "Redis cannot be used right now"."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.RedisClusterException as error:
            raise redis.ConnectionError(f"Redis Cluster: {error}") from error
    return call


def cluster_client(url: str, options: dict[str, Any], *, blocking: bool) -> LazyCluster:
    """A lazily built cluster client for ``url``; ``options`` as for a connection (timeouts, retry…),
    with a blocking pool per node (``timeout``: its wait) if ``blocking``."""
    options = dict(options)
    if blocking:
        options["connection_pool_class"] = redis.BlockingConnectionPool
    else:
        options.pop("timeout", None)
    return LazyCluster(parse_cluster_url(url), options)
