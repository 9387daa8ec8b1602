"""A delivery loop on the JetStream store's worker half, run as a real process by the tests
that kill it: read → POST → ack, or NAK with a short delay on a failure.

``python store_worker.py NATS_URL WORKER_NAME`` delivers every route in the routes kept in KV
to its ``subscriber`` URL, adding ``x-worker: WORKER_NAME`` so a test can tell who delivered.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp

from evroute.store.base import Retry, starts
from evroute.store.nats.store import parse_routes
from evroute.store.opener import open_store, parse


async def main(url: str, name: str) -> None:
    store = open_store(parse(url))
    doc = store.routes("routes.yaml")
    assert doc is not None, "put the routes in KV first"
    routeset = parse_routes(doc.text)
    routes = list(routeset.routes)
    store.use_routes(routes, routeset.settings)
    d = store.deliveries()
    await d.attach(starts(routes))
    await d.join(name, time.time())  # the tests wait for every worker to be here
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession() as http:

        async def one(route, ev) -> None:  # type: ignore[no-untyped-def]
            headers = {"ce-id": ev.event.id, "x-worker": name, "evroute-attempt": str(ev.attempt)}
            try:
                async with http.post(
                    route.subscriber.uri, data=ev.event.data or b"", headers=headers
                ) as resp:
                    ok = 200 <= resp.status < 300
            except aiohttp.ClientError:
                ok = False
            if ok:
                await d.succeeded(route.name, ev.seq, ev.token, scheduled=False, dlq_id=None)
            else:
                now = time.time()
                await d.retry(
                    Retry(route.name, ev.seq, ev.attempt, now + 0.05, now, 503, "x", None), ev.token
                )

        async def loop(route) -> None:  # type: ignore[no-untyped-def]
            limit = 1 if route.delivery.ordering == "ordered" else 16
            while not stop.is_set():
                try:
                    batch = await d.read(route.name, route.broker, 0, limit)
                except Exception:
                    await asyncio.sleep(0.1)
                    continue
                await asyncio.gather(*(one(route, ev) for ev in batch))

        await asyncio.gather(*(loop(r) for r in routes))
    await d.close()
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
