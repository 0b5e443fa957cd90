"""``PUSHSVC_REDIS_MIN_REPLICAS``: a publish answered ``202`` only once Redis replicas hold it (``WAIT``)."""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script

from ..base import NotReplicated
from .scripts import PUBLISH

# With PUSHSVC_REDIS_MIN_REPLICAS, how long a publish waits for its replicas (Redis WAIT) before it is
# answered 503. The script's deadline is brought forward by half of it, so that the deadline and the wait
# together (0.5 s) stay as far inside the command timeout as the deadline alone: an answer that comes
# back after the timeout would be a 503 that says nothing was stored.
WAIT_TIMEOUT_MS = 200


def publish_replicated(client: redis.Redis, script: Script, keys: list[str], args: list[Any],
                       min_replicas: int) -> Any:
    """Run the publish script, then ``WAIT`` for ``min_replicas`` on the same connection, in the same
    round trip (WAIT counts the replicas that have this connection's last write); the script's reply.
    :class:`NotReplicated` when fewer confirmed in time (the event is stored and may still be delivered)."""
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", min_replicas, WAIT_TIMEOUT_MS)
        reply, acked = pipe.execute(raise_on_error=False)
        if not isinstance(reply, redis.exceptions.NoScriptError):
            break
        client.script_load(PUBLISH)  # a new master (failover) has not seen the script yet
    for result in (reply, acked):
        if isinstance(result, Exception):
            raise result
    if acked < min_replicas:
        raise NotReplicated(f"{acked} of {min_replicas} replicas confirmed in {WAIT_TIMEOUT_MS} ms")
    return reply
