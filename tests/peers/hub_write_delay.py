#!/usr/bin/env python3
"""Write coalescing ([hub] write_delay_ms) keeps every publication, in order, on both
WebSocket subprotocols: a burst published through the server API reaches two subscribers
(python `websockets`) complete, in order, without duplicates, within the delay plus slack.

usage: hub_write_delay.py HTTP_ADDR API_KEY COUNT DELAY_MS
"""
import asyncio
import sys
import time

import httpx

from hub_lib import Ws


async def main():
    addr, key, count, delay_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    subs = []
    for codec in ("json", "proto"):
        ws = await Ws(f"ws://{addr}/v1/ws", codec).open()
        r = await ws.connect()
        assert "connect" in r, r
        r = await ws.call("subscribe", {"channel": "burst"})
        assert "subscribe" in r, r
        subs.append(ws)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://{addr}") as c:
        for i in range(count):
            r = await c.post(
                "/v1/api/publish",
                json={"channel": "burst", "data": {"n": i}},
                headers={"Authorization": f"apikey {key}"},
            )
            assert r.status_code == 200, r.text
    for ws in subs:
        seen = []
        while len(seen) < count:
            push = await ws.next_push(timeout=5)
            pub = push.get("publication")
            if pub is None:
                continue
            seen.append(pub["data"]["n"])
        assert seen == list(range(count)), f"{ws.codec}: out of order or missing: {seen[:20]}..."
        try:
            extra = await ws.next_push(timeout=0.3)
            raise AssertionError(f"{ws.codec}: unexpected extra push {extra}")
        except asyncio.TimeoutError:
            pass
        await ws.close()
    took = time.monotonic() - started
    print(f"ok {count} publications x 2 subscribers in {took:.2f}s with write_delay_ms={delay_ms}")


asyncio.run(main())
