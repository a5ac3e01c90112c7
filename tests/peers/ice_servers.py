#!/usr/bin/env python3
"""GET /v1/ice-servers gives credentials a real ICE agent (aioice) can use for TURN, and
POST /v1/ice-servers/revoke makes them useless before they expire.

usage: ice_servers.py HTTP_ADDR API_KEY JWT_SECRET
"""
import asyncio
import re
import sys
import time

import aioice
import httpx

from hub_lib import jwt


async def gather(turn_url, username, credential):
    m = re.match(r"turn:([^:?]+):(\d+)\?transport=(udp|tcp)", turn_url)
    assert m, turn_url
    host, port, transport = m.group(1), int(m.group(2)), m.group(3)
    conn = aioice.Connection(
        ice_controlling=True,
        components=1,
        turn_server=(host, port),
        turn_username=username,
        turn_password=credential,
        turn_transport=transport,
        use_ipv6=False,
    )
    try:
        await asyncio.wait_for(conn.gather_candidates(), 20)
    except Exception as e:  # noqa: BLE001 - a refused allocation may surface as an error
        print(f"gather failed: {e!r}")
    kinds = [c.type for c in conn.local_candidates]
    await conn.close()
    return kinds


async def main():
    addr, key, secret = sys.argv[1], sys.argv[2], sys.argv[3]
    token = jwt(secret, "carol")
    async with httpx.AsyncClient(base_url=f"http://{addr}") as c:
        r = await c.get("/v1/ice-servers", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body["ttl"], int) and body["ttl"] > 0, body
        servers = body["iceServers"]
        urls = [u for s in servers for u in s["urls"]]
        assert any(u.startswith("stun:") for u in urls), urls
        assert any(u.startswith("turns:") for u in urls), urls
        turn = next(s for s in servers if any(u.startswith("turn:") for u in s["urls"]))
        expiry, user = turn["username"].split(":", 1)
        assert user == "carol", turn
        assert int(expiry) > time.time() + body["ttl"] - 60, turn
        udp_url = next(u for u in turn["urls"] if u.endswith("transport=udp"))
        assert any(u.endswith("transport=tcp") for u in turn["urls"]), turn

        kinds = await gather(udp_url, turn["username"], turn["credential"])
        print("before revoke:", kinds)
        assert "relay" in kinds, kinds

        r = await c.post("/v1/ice-servers/revoke", json={"user": "carol"})
        assert r.status_code == 401, r.text
        r = await c.post(
            "/v1/ice-servers/revoke", json={"user": "carol"}, headers={"Authorization": f"apikey {key}"}
        )
        assert r.status_code == 200, r.text

        kinds = await gather(udp_url, turn["username"], turn["credential"])
        print("after revoke:", kinds)
        assert "relay" not in kinds, kinds

        r = await c.get("/v1/ice-servers", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == 103, r.text
        # Someone else still gets working credentials.
        r = await c.get("/v1/ice-servers", headers={"Authorization": f"Bearer {jwt(secret, 'dave')}"})
        assert r.status_code == 200, r.text
        turn = next(s for s in r.json()["iceServers"] if "username" in s)
        kinds = await gather(udp_url, turn["username"], turn["credential"])
        assert "relay" in kinds, kinds
    print("ok")


asyncio.run(main())
