"""The Redis Cluster the sharded-broker tests run on (``tests/redis_cluster_env.py``) is one: three
masters with a replica each, every slot served, keys found through a cluster client, and it comes
through a slot move, a failover and a killed master as the tests expect. One cluster for the module."""

from __future__ import annotations

import pytest
import redis

from .redis_cluster_env import SLOTS, Cluster


def test_three_masters_with_a_replica_each_serve_every_slot(redis_cluster: Cluster):
    masters = redis_cluster.masters()
    assert len(masters) == 3 and len(redis_cluster.nodes) == 6
    replicas = {redis_cluster.replica_of(master) for master in masters}
    assert len(replicas) == 3 and not replicas & set(masters)
    assert sum(len(redis_cluster.slots_of(master)) for master in masters) == SLOTS
    url = redis_cluster.url(4)
    assert url.startswith("redis+cluster://127.0.0.1:") and url.endswith("/?shards=4")
    assert url.count(",") == 5


def test_a_key_set_on_its_master_is_read_through_the_cluster_and_follows_a_moved_slot(
        redis_cluster: Cluster):
    key = "{env-move}:k"
    owner = redis_cluster.master_for_key(key)
    with owner.client() as direct:
        direct.set(key, "v1")
    client = redis_cluster.client()
    try:
        assert client.get(key) == b"v1"
        slot = redis_cluster.slot_of(key)
        target = next(m for m in redis_cluster.masters() if m is not owner)
        # Half way the client reads the key on its old master, then (ASK) on the new one.
        def reads() -> None:
            assert client.get(key) == b"v1"
        redis_cluster.move_slot(slot, target, during=reads, moved=reads)
        assert redis_cluster.master_for_key(key) is target
        with target.client() as direct:
            assert direct.get(key) == b"v1"
        with owner.client() as direct, pytest.raises(redis.exceptions.MovedError):
            direct.get(key)
        assert client.get(key) == b"v1"
        client.set(key, "v2")
        with target.client() as direct:
            assert direct.get(key) == b"v2"
    finally:
        client.close()


def test_a_failover_and_a_killed_master_leave_a_served_cluster(redis_cluster: Cluster):
    client = redis_cluster.client()
    try:
        key = "{env-fault}:k"
        client.set(key, "kept")
        master = redis_cluster.master_for_key(key)
        replica = redis_cluster.replica_of(master)
        assert redis_cluster.failover(master) is replica
        assert redis_cluster.master_for_key(key) is replica
        assert redis_cluster.replica_of(replica) is master
        assert client.get(key) == b"kept"

        survivor = redis_cluster.kill(replica)
        assert survivor is master and redis_cluster.master_for_key(key) is master
        assert not replica.alive() and len(redis_cluster.masters()) == 3
        assert client.get(key) == b"kept"
        redis_cluster.restart(replica)
        assert redis_cluster.replica_of(master) is replica
    finally:
        client.close()
