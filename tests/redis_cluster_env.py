"""A Redis Cluster for tests: three masters and three replicas, each a private ``redis-server
--cluster-enabled yes`` on a free loopback port with its own temporary directory (``nodes.conf`` is all
it writes), joined by ``redis-cli --cluster create``, each stopped by its PID.

Every change of shape (a failover, a killed master, a slot moved) waits until every live node says
``cluster_state:ok`` and all of them agree on who serves each of the 16384 slots, so a test that goes on
meets one cluster, not nodes that still disagree.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
import redis.cluster

from .helpers import wait_for
from .redis_ha import RedisNode
from .servers import free_port, require

SLOTS = 16384
# A master that stops answering is failed over after about two of these; short for a test, long enough
# that a loaded 2-core machine does not see a busy node as dead.
NODE_TIMEOUT_MS = 1500
CLUSTER_ARGS = (
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    # A replica may always take over from a killed master, however long ago it last heard from it, and
    # stays with its own master, so replica_of() means the same pair for the whole module.
    "--cluster-replica-validity-factor", "0", "--cluster-allow-replica-migration", "no")
SETTLE_SECONDS = 30
MIGRATE_BATCH = 100


@dataclass(frozen=True)
class NodeLine:
    """One line of ``CLUSTER NODES``: a node as the asked node sees it."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    @property
    def is_master(self) -> bool:
        return "master" in self.flags and not self.failed


def parse_nodes(text: str) -> list[NodeLine]:
    """``CLUSTER NODES`` as :class:`NodeLine` s; a slot being imported or migrated (``[…]``) is skipped."""
    lines = []
    for raw in text.strip().splitlines():
        node_id, address, flags, master, _ping, _pong, _epoch, _link, *slots = raw.split()
        port = int(address.split("@")[0].rpartition(":")[2])
        ranges = []
        for part in slots:
            if part.startswith("["):
                continue
            low, _, high = part.partition("-")
            ranges.append((int(low), int(high or low)))
        lines.append(NodeLine(node_id, port, frozenset(flags.split(",")), None if master == "-" else master,
                              tuple(ranges)))
    return lines


class ClusterNode(RedisNode):
    """A ``redis-server`` with cluster mode on; its ``nodes.conf`` lives in its own directory, so a
    restart rejoins the cluster as the same node."""

    def __init__(self) -> None:
        # A bus port of its own: the default (port + 10000) may be taken, or past 65535.
        super().__init__(args=(*CLUSTER_ARGS, "--cluster-port", str(free_port())))
        self.id = ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ask(self, *command: str | int):
        """One command to this node alone (no redirects followed)."""
        with self.client() as client:
            return client.execute_command(*command)

    def view(self) -> list[NodeLine] | None:
        """The cluster as this node sees it, or ``None`` if it does not answer."""
        with contextlib.suppress(redis.RedisError):
            return parse_nodes(self.ask("CLUSTER", "NODES").decode())
        return None

    def info(self) -> dict[str, str]:
        with contextlib.suppress(redis.RedisError):
            text = self.ask("CLUSTER", "INFO").decode()
            return dict(line.split(":", 1) for line in text.split() if ":" in line)
        return {}

    def __repr__(self) -> str:
        return f"ClusterNode(port={self.port})"


class Cluster:
    """Three masters with a replica each; see the module docstring."""

    def __init__(self, masters: int = 3) -> None:
        self.cli = require("redis-cli", "PUSHSVC_REQUIRE_REDIS")
        self.nodes = [ClusterNode() for _ in range(2 * masters)]

    # -- life ----------------------------------------------------------------------------------------

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
            node.id = node.ask("CLUSTER", "MYID").decode()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run([self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
                                  "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
        self.wait_ok()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive()]

    # -- what a test connects to -----------------------------------------------------------------

    def url(self, shards: int | None = None) -> str:
        """The broker URL, naming every node (one that is down is skipped by a client)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}" + (f"/?shards={shards}" if shards is not None else "")

    def client(self) -> redis.RedisCluster:
        nodes = [redis.cluster.ClusterNode("127.0.0.1", node.port) for node in self.live()]
        return redis.RedisCluster(startup_nodes=nodes, socket_timeout=5)

    # -- who serves what ---------------------------------------------------------------------------

    def _lines(self) -> list[NodeLine]:
        for node in self.live():
            view = node.view()
            if view is not None:
                return view
        raise AssertionError("no cluster node answers")

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[ClusterNode]:
        """The masters now (``CLUSTER NODES``), in the order of their first slot."""
        lines = sorted((ln for ln in self._lines() if ln.is_master), key=lambda ln: ln.slots or ((SLOTS, 0),))
        return [self.node(ln.port) for ln in lines]

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        replicas = [ln for ln in self._lines() if ln.master_id == master.id and not ln.failed]
        assert replicas, f"{master} has no replica"
        return self.node(replicas[0].port)

    def slot_of(self, key: str) -> int:
        return int(self.live()[0].ask("CLUSTER", "KEYSLOT", key))

    def master_for_slot(self, slot: int) -> ClusterNode:
        for line in self._lines():
            if line.is_master and any(low <= slot <= high for low, high in line.slots):
                return self.node(line.port)
        raise AssertionError(f"no master serves slot {slot}")

    def master_for_key(self, key: str) -> ClusterNode:
        return self.master_for_slot(self.slot_of(key))

    def stream_holding(self, entry_id: str, match: str = "*",
                       where: Callable[[dict[bytes, bytes]], bool] | None = None) -> str | None:
        """The stream key (matching ``match``, on any master) that holds the entry ``entry_id`` whose
        fields ``where(fields)`` accepts: entry ids are unique in one stream only."""
        for master in self.masters():
            with master.client() as client:
                for key in client.scan_iter(match=match, _type="stream"):
                    entries = client.xrange(key, entry_id, entry_id)
                    if any(where is None or where(fields) for _, fields in entries):
                        return key.decode()
        return None

    def stream_entries(self, match: str = "*") -> dict[ClusterNode, int]:
        """Master -> the entries of its stream keys matching ``match``."""
        found = {}
        for master in self.masters():
            with master.client() as client:
                found[master] = sum(client.xlen(key) for key in client.scan_iter(match=match, _type="stream"))
        return found

    def slots_of(self, master: ClusterNode) -> list[int]:
        line = next(ln for ln in self._lines() if ln.id == master.id)
        return [slot for low, high in line.slots for slot in range(low, high + 1)]

    # -- waiting for one cluster -------------------------------------------------------------------

    def settled(self) -> bool:
        """Every live node is ok, knows every node as it is, and all agree on each slot's master; every
        replica of a live master has its copy."""
        live = self.live()
        layouts = set()
        for node in live:
            view = node.view()
            if view is None or node.info().get("cluster_state") != "ok":
                return False
            if {ln.port for ln in view if not ln.failed} != {n.port for n in live}:
                return False
            layout = frozenset((ln.port, ln.slots) for ln in view if ln.is_master)
            if sum(high - low + 1 for _, ranges in layout for low, high in ranges) != SLOTS:
                return False
            layouts.add(layout)
            if any(ln.master_id for ln in view if "myself" in ln.flags) and \
                    node.ask("INFO", "replication").get("master_link_status") != "up":
                return False
        return len(layouts) == 1

    def wait_ok(self, timeout: float = SETTLE_SECONDS) -> None:
        assert wait_for(self.settled, timeout, interval=0.1), [(n.port, n.info().get("cluster_state"),
                                                               n.view()) for n in self.live()]

    # -- faults --------------------------------------------------------------------------------------

    def failover(self, master: ClusterNode) -> ClusterNode:
        """``CLUSTER FAILOVER`` on ``master``'s replica: it becomes master, ``master`` its replica; the new
        master, once the cluster is ok again."""
        replica = self.replica_of(master)
        assert replica.ask("CLUSTER", "FAILOVER") == b"OK"
        assert wait_for(lambda: replica in self.masters() and master not in self.masters(), SETTLE_SECONDS,
                        interval=0.1), self._lines()
        self.wait_ok()
        return replica

    def kill(self, master: ClusterNode) -> ClusterNode:
        """SIGKILL ``master``; its replica, once the cluster has made it master and is ok again."""
        replica = self.replica_of(master)
        master.signal(signal.SIGKILL)
        assert master.proc is not None
        master.proc.wait(10)
        assert wait_for(lambda: replica in self.masters(), SETTLE_SECONDS, interval=0.1), self._lines()
        self.wait_ok()
        return replica

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again: it rejoins (its nodes.conf is kept) as a replica of who took over."""
        node.start()
        self.wait_ok()

    # -- resharding ----------------------------------------------------------------------------------

    def move_slot(self, slot: int, to: ClusterNode, *, during: Callable[[], object] | None = None,
                  moved: Callable[[], object] | None = None) -> None:
        """Move ``slot`` and its keys to master ``to`` while the cluster serves, as ``redis-cli --cluster
        reshard`` does: IMPORTING on ``to``, MIGRATING on the owner, ``MIGRATE`` of its keys in batches,
        then ``SETSLOT NODE`` everywhere. ``during()`` runs once the slot is migrating but its keys are
        still on the owner; ``moved()`` once they are all on ``to`` but the slot is not handed over yet
        (the owner answers ``ASK`` for them: what a client meets between two batches of a reshard)."""
        source = self.master_for_slot(slot)
        if source is to:
            return
        to.ask("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        source.ask("CLUSTER", "SETSLOT", slot, "MIGRATING", to.id)
        if during is not None:
            during()
        while keys := source.ask("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH):
            source.ask("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
        if moved is not None:
            moved()
        # The new owner first, so it never refuses a key it already holds (as redis-cli does).
        for node in [to, source, *(m for m in self.masters() if m not in (to, source))]:
            node.ask("CLUSTER", "SETSLOT", slot, "NODE", to.id)
        assert wait_for(lambda: self.master_for_slot(slot) is to, SETTLE_SECONDS, interval=0.1)
        self.wait_ok()

    def move_slots(self, source: ClusterNode, to: ClusterNode, count: int) -> list[int]:
        """Move the first ``count`` slots of ``source`` to ``to``; the slots moved."""
        slots = self.slots_of(source)[:count]
        for slot in slots:
            self.move_slot(slot, to)
        return slots


@contextlib.contextmanager
def started_cluster() -> Iterator[Cluster]:
    """A running cluster; every node stopped afterwards, however far the start got."""
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
