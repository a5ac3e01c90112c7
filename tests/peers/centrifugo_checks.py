#!/usr/bin/env python3
"""Centrifugo's own SDKs against switchboard: centrifuge-python (JSON and protobuf) at
/connection/websocket, and cent (Centrifugo's HTTP API client) at /api. Prints "OK NAME" or
"FAIL NAME: why" lines, then "DONE N failed".

usage: centrifugo_checks.py HTTP_ADDR API_KEY JWT_SECRET

The server runs with --api-key API_KEY --jwt-hmac-secret JWT_SECRET and anonymous clients
allowed on loopback (the default).
"""
import asyncio
import json
import sys
import traceback

import httpx
from cent import (
    BroadcastRequest,
    ChannelsRequest,
    Client as Cent,
    CentApiResponseError,
    CentUnauthorizedError,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    StreamPosition,
)
from centrifuge import (
    Client,
    ClientEventHandler,
    ReplyError,
    SubscriptionEventHandler,
)
import websockets

from hub_lib import jwt

ADDR, API_KEY, SECRET = sys.argv[1], sys.argv[2], sys.argv[3]
WS = f"ws://{ADDR}/connection/websocket"
failed = 0


def ok(name):
    print(f"OK {name}", flush=True)


def fail(name, why):
    global failed
    failed += 1
    print(f"FAIL {name}: {why}", flush=True)


class Proxy:
    """A TCP proxy whose connections can all be cut at once."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.writers = []

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        up_r, up_w = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_w]

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except Exception:  # noqa: BLE001
                pass
            finally:
                w.close()

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        except BaseException:  # noqa: BLE001 - cut or shut down with the loop
            pass

    def cut(self):
        for w in self.writers:
            w.transport.abort()
        self.writers = []


class Events(ClientEventHandler):
    def __init__(self):
        self.connected = asyncio.Event()
        self.disconnects = []
        self.connects = 0

    async def on_connected(self, ctx):
        self.connects += 1
        self.connected.set()

    async def on_disconnected(self, ctx):
        self.disconnects.append((ctx.code, ctx.reason))


class SubEvents(SubscriptionEventHandler):
    def __init__(self):
        self.pubs = []
        self.subscribed = []
        self.joins = []
        self.arrived = asyncio.Event()

    async def on_publication(self, ctx):
        self.pubs.append(ctx.pub)
        self.arrived.set()

    async def on_subscribed(self, ctx):
        self.subscribed.append(ctx)

    async def on_join(self, ctx):
        self.joins.append(ctx)


async def until(pred, timeout=10):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def encode(value, protobuf):
    return json.dumps(value).encode() if protobuf else value


def decode(data):
    return json.loads(data) if isinstance(data, (bytes, bytearray)) else data


def cent():
    return Cent(f"http://{ADDR}/api", API_KEY)


async def check(name, coro):
    try:
        await coro
        ok(name)
    except Exception as e:  # noqa: BLE001
        fail(name, f"{type(e).__name__}: {e} {traceback.format_exc(limit=3)!r}")


async def pubsub(protobuf):
    """Connect (anonymous), subscribe, receive from cent and from switchboard's own API,
    publish from the client, presence, presence stats, history."""
    events = Events()
    client = Client(WS, events=events, use_protobuf=protobuf, name="checks")
    await client.connect()
    await client.ready(timeout=5)
    sub_events = SubEvents()
    channel = f"py-{'pb' if protobuf else 'json'}"
    sub = client.new_subscription(channel, events=sub_events)
    await sub.subscribe()
    await sub.ready(timeout=5)
    r = cent().publish(PublishRequest(channel=channel, data={"n": 1}))
    assert r.offset == 1, r
    httpx.post(
        f"http://{ADDR}/v1/api/publish",
        headers={"Authorization": f"apikey {API_KEY}"},
        json={"channel": channel, "data": {"n": 2}},
    ).raise_for_status()
    # centrifuge-python hands protobuf payloads over as bytes, JSON ones as values.
    await sub.publish(encode({"n": 3}, protobuf))
    await until(lambda: len(sub_events.pubs) >= 3)
    got = [(p.offset, decode(p.data)) for p in sub_events.pubs]
    assert got == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3})], got
    presence = await sub.presence()
    assert len(presence.clients) == 1, presence
    stats = await sub.presence_stats()
    assert stats.num_clients == 1, stats
    history = await sub.history(limit=10)
    assert [decode(p.data) for p in history.publications] == [{"n": 1}, {"n": 2}, {"n": 3}], history
    assert history.offset == 3 and history.epoch, history
    top = await sub.history(limit=0)
    assert top.publications == [] and top.offset == 3, top
    await client.disconnect()


async def token_user():
    """A connection token with a user and a channels claim."""
    events = Events()
    client = Client(WS, events=events, token=jwt(SECRET, "alice", channels=["secret"]))
    await client.connect()
    await client.ready(timeout=5)
    sub = client.new_subscription("secret", events=SubEvents())
    await sub.subscribe()
    await sub.ready(timeout=5)
    p = cent().presence(PresenceRequest(channel="secret"))
    users = [c.user for c in p.presence.values()]
    assert users == ["alice"], p
    # The channels claim refuses another channel: 103.
    other = client.new_subscription("elsewhere", events=SubEvents())
    await other.subscribe()
    await until(lambda: other.state.value == "unsubscribed")
    await client.disconnect()


async def refused_token():
    events = Events()
    client = Client(WS, events=events, token="not.a.token", min_reconnect_delay=0.1)
    await client.connect()
    await until(lambda: events.disconnects)
    code, _ = events.disconnects[0]
    assert code == 3500, events.disconnects
    await asyncio.sleep(1)
    assert events.connects == 0 and len(events.disconnects) == 1, "no reconnect after 3500"
    await client.disconnect()


async def recovery(protobuf):
    """A cut connection, then automatic recovery with exactly the missed publications."""
    host, port = ADDR.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    events = Events()
    client = Client(
        f"ws://127.0.0.1:{proxy.port}/connection/websocket",
        events=events,
        use_protobuf=protobuf,
        min_reconnect_delay=0.3,
        max_reconnect_delay=0.5,
    )
    await client.connect()
    await client.ready(timeout=5)
    channel = f"recover-{'pb' if protobuf else 'json'}"
    sub_events = SubEvents()
    sub = client.new_subscription(channel, events=sub_events)
    await sub.subscribe()
    await sub.ready(timeout=5)
    api = cent()
    for n in range(1, 4):
        api.publish(PublishRequest(channel=channel, data={"n": n}))
    await until(lambda: len(sub_events.pubs) == 3)
    proxy.cut()
    for n in range(4, 9):
        api.publish(PublishRequest(channel=channel, data={"n": n}))
    await until(lambda: len(sub_events.pubs) >= 8)
    await asyncio.sleep(0.3)
    got = [decode(p.data)["n"] for p in sub_events.pubs]
    assert got == list(range(1, 9)), got
    assert any(s.recovered for s in sub_events.subscribed[1:]), "recovered after the cut"
    assert events.connects >= 2
    await client.disconnect()
    proxy.server.close()


async def server_disconnect():
    events = Events()
    client = Client(WS, events=events, token=jwt(SECRET, "bob"))
    await client.connect()
    await client.ready(timeout=5)
    cent().disconnect(DisconnectRequest(user="bob"))
    await until(lambda: events.disconnects)
    code, _ = events.disconnects[0]
    assert code == 3503, events.disconnects
    await asyncio.sleep(0.8)
    assert events.connects == 1, "3503 means no reconnect"
    await client.disconnect()


async def unsupported_rpc():
    client = Client(WS, events=Events())
    await client.connect()
    await client.ready(timeout=5)
    try:
        await client.rpc("method", {"x": 1})
        raise AssertionError("rpc succeeded")
    except ReplyError as e:
        assert e.code == 108, e
    await client.disconnect()


async def raw_frames():
    """Batched commands in one frame; an unknown method (104); a malformed frame (3501)."""
    async with websockets.connect(WS) as ws:
        await ws.send(
            '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"batch"}}\n'
            '{"id":3,"teleport":{}}'
        )
        replies = {}
        while len(replies) < 3:
            r = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if r.get("id"):
                replies[r["id"]] = r
        assert "connect" in replies[1] and "subscribe" in replies[2], replies
        assert replies[3]["error"]["code"] == 104, replies
        await ws.send("not json")
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as e:
            assert e.rcvd.code == 3501, e


def api_methods():
    api = cent()
    r = api.broadcast(BroadcastRequest(channels=["b1", "b2", "nowhere:x"], data={"b": 1}))
    assert r.responses[0].result.offset == 1, r
    assert r.responses[2].error.code == 102, r
    h = api.history(HistoryRequest(channel="b1", limit=10, since=StreamPosition(offset=0, epoch=r.responses[0].result.epoch)))
    assert [p.data for p in h.publications] == [{"b": 1}], h
    api.history_remove(HistoryRemoveRequest(channel="b1"))
    h = api.history(HistoryRequest(channel="b1", limit=10))
    assert h.publications == [], h
    s = api.presence_stats(PresenceStatsRequest(channel="b1"))
    assert s.num_clients == 0, s
    info = api.info(InfoRequest())
    assert len(info.nodes) == 1 and info.nodes[0].uid, info
    try:
        api.publish(PublishRequest(channel="nowhere:x", data={}))
        raise AssertionError("unknown namespace accepted")
    except CentApiResponseError as e:
        assert e.code == 102, e
    try:
        Cent(f"http://{ADDR}/api", "wrong-key").info(InfoRequest())
        raise AssertionError("wrong key accepted")
    except CentUnauthorizedError:
        pass


async def channels_api():
    client = Client(WS, events=Events())
    await client.connect()
    await client.ready(timeout=5)
    sub = client.new_subscription("listed-one", events=SubEvents())
    await sub.subscribe()
    await sub.ready(timeout=5)
    c = cent().channels(ChannelsRequest(pattern="listed-*"))
    assert list(c.channels) == ["listed-one"], c
    assert c.channels["listed-one"].num_clients == 1, c
    await client.disconnect()


async def main():
    await check("python-json-pubsub", pubsub(False))
    await check("python-protobuf-pubsub", pubsub(True))
    await check("python-token-user-and-channels-claim", token_user())
    await check("python-refused-token-3500", refused_token())
    await check("python-json-recovery-after-cut", recovery(False))
    await check("python-protobuf-recovery-after-cut", recovery(True))
    await check("python-server-disconnect-3503", server_disconnect())
    await check("python-rpc-not-available-108", unsupported_rpc())
    await check("raw-batched-unknown-malformed", raw_frames())
    await check("cent-api-methods", asyncio.to_thread(api_methods))
    await check("cent-channels", channels_api())
    print(f"DONE {failed} failed", flush=True)


asyncio.run(main())
