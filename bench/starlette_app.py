"""The fastest Python peer: sse-starlette on uvicorn (one process, uvloop and httptools).

Run only by ``bench/run.py``. Streams are sse-starlette's ``EventSourceResponse`` fed by one bounded
asyncio queue each; the publish and count routes are the few lines a team would add, in the same shape as
pushsvc's: ``{"to": id, "data": …}`` or ``{"broadcast": true, "data": …}``, or a JSON array of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

QUEUE_SIZE = 256
by_client: dict[str, set[asyncio.Queue]] = {}
everyone: set[asyncio.Queue] = set()


async def subscribe(request: Request) -> EventSourceResponse:
    client_id = request.path_params["client_id"]
    queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)

    async def events() -> AsyncIterator[dict]:
        by_client.setdefault(client_id, set()).add(queue)
        everyone.add(queue)
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            everyone.discard(queue)
            peers = by_client.get(client_id)
            if peers is not None:
                peers.discard(queue)
                if not peers:
                    del by_client[client_id]

    return EventSourceResponse(events(), ping=15)


def _deliver(item: dict) -> int:
    queues = everyone if item.get("broadcast") else by_client.get(item["to"], ())
    delivered = 0
    for queue in list(queues):
        try:
            queue.put_nowait(item["data"])
            delivered += 1
        except asyncio.QueueFull:  # a slow reader: skip it, like the others cut theirs off
            pass
    return delivered


async def publish(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    items = body if isinstance(body, list) else [body]
    return JSONResponse({"delivered": sum(_deliver(item) for item in items)}, status_code=202)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"connections": len(everyone)})


app = Starlette(routes=[
    Route("/subscribe/{client_id}", subscribe),
    Route("/publish", publish, methods=["POST"]),
    Route("/healthz", healthz),
])
