"""The stream basics of the contract, over the Redis broker with two workers: same behaviour as one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis_tools import cluster_env, wait_all_workers
from .servers import Gunicorn
from .test_stream_basics import *  # noqa: F403 - the same tests, run again against this module's server


@pytest.fixture(scope="module")
def server(redis_server) -> Iterator[Gunicorn]:
    """Replaces the memory-broker server of conftest for every test imported above."""
    with Gunicorn(workers=2, env=cluster_env(redis_server)) as gunicorn:
        wait_all_workers(gunicorn, redis_server.url)
        yield gunicorn
