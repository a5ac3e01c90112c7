#!/usr/bin/env python3
"""Publish on every hub transport, receive on every hub transport, all at once.

usage: hub_matrix.py HTTP_ADDR HTTPS_ADDR JWT_SECRET API_KEY

Receivers (each subscribes to channel "matrix" first, with a JWT): WebSocket JSON, WebSocket
protobuf, WebSocket JSON over TLS, SSE over HTTP/1.1 and over HTTP/2 (TLS), long-poll over
HTTP/1.1 and over HTTP/2, gRPC Connect stream. Publishers (each publishes {"from": NAME} once):
WebSocket JSON, WebSocket protobuf, client publish POST /v1/publish over HTTP/1.1 and HTTP/2,
server API POST /v1/api/publish over HTTP/1.1 and HTTP/2, gRPC Connect stream, gRPC Hub.Publish,
gRPC HubApi.Publish.

Prints "RECEIVERS ...", "PUBLISHERS ...", then one "CELL PUBLISHER RECEIVER ok|missing|dup N"
per pair, and "VERSION NAME HTTP/x" for the httpx clients; exits 0 once every receiver has
every message (or after 20 s).
"""
import asyncio
import json
import sys
import time

from hub_lib import (
    GrpcStream,
    HttpError,
    Ws,
    api_grpc,
    api_pb,
    grpc_channel,
    http_client,
    jwt,
    pb,
    sse_events,
)

CHANNEL = "matrix"
PUBLISHERS = [
    "ws-json",
    "ws-proto",
    "publish-h1",
    "publish-h2",
    "api-h1",
    "api-h2",
    "grpc-stream",
    "grpc-unary",
    "grpc-api",
]


def main():
    http, https, secret, api_key = sys.argv[1:5]
    asyncio.run(run(http, https, secret, api_key))


async def run(http, https, secret, api_key):
    got = {}  # receiver -> list of "from" values
    ready = {}
    versions = {}

    def record(name, data):
        if isinstance(data, dict) and "from" in data:
            got[name].append(data["from"])

    def tok(user):
        return jwt(secret, user)

    async def ws_receiver(name, url, codec):
        ws = await Ws(url, codec).open()
        r = await ws.connect(tok(name))
        assert "connect" in r, r
        r = await ws.call("subscribe", {"channel": CHANNEL})
        assert "subscribe" in r, r
        ready[name].set()
        try:
            while True:
                p = await ws.next_push(timeout=30)
                if "publication" in p:
                    record(name, p["publication"].get("data"))
        finally:
            await ws.close()

    async def sse_receiver(name, base, http2):
        async with http_client(base, http2) as c:
            path = f"/v1/sse?channel={CHANNEL}&token={tok(name)}"
            subscribed = False
            async for _id, frame in sse_events(
                c, path, on_open=lambda r: versions.__setitem__(name, r.http_version)
            ):
                if frame is None:
                    continue
                if "reply" in frame and "subscribe" in frame["reply"]:
                    subscribed = True
                    ready[name].set()
                elif subscribed and "push" in frame and "publication" in frame["push"]:
                    record(name, frame["push"]["publication"].get("data"))

    async def poll_receiver(name, base, http2):
        async with http_client(base, http2) as c:
            headers = {"Authorization": f"Bearer {tok(name)}"}
            r = await c.get(f"/v1/poll?channel={CHANNEL}&timeout=0", headers=headers)
            versions[name] = r.http_version
            if r.status_code != 200:
                raise HttpError(r.status_code, r.text)
            cursor = r.json()["cursor"]
            ready[name].set()
            while True:
                r = await c.get(
                    "/v1/poll",
                    params={"channel": CHANNEL, "since": cursor, "timeout": "5"},
                    headers=headers,
                )
                if r.status_code != 200:
                    raise HttpError(r.status_code, r.text)
                body = r.json()
                assert body["recovered"], body
                cursor = body["cursor"]
                for p in body["publications"]:
                    record(name, p.get("data"))

    async def grpc_receiver(name):
        ch = grpc_channel(http)
        s = GrpcStream(ch, token=tok(name))
        try:
            r = await s.call_method("connect", {})
            assert "connect" in r, r
            r = await s.call_method("subscribe", {"channel": CHANNEL})
            assert "subscribe" in r, r
            ready[name].set()
            while True:
                p = await s.next_push(timeout=30)
                if "publication" in p:
                    record(name, p["publication"].get("data"))
        finally:
            await s.close()
            await ch.close()

    receivers = {
        "ws-json": lambda n: ws_receiver(n, f"ws://{http}/v1/ws", "json"),
        "ws-proto": lambda n: ws_receiver(n, f"ws://{http}/v1/ws", "proto"),
        "wss-json": lambda n: ws_receiver(n, f"wss://{https}/v1/ws", "json"),
        "sse-h1": lambda n: sse_receiver(n, f"http://{http}", False),
        "sse-h2": lambda n: sse_receiver(n, f"https://{https}", True),
        "poll-h1": lambda n: poll_receiver(n, f"http://{http}", False),
        "poll-h2": lambda n: poll_receiver(n, f"https://{https}", True),
        "grpc-stream": grpc_receiver,
    }
    for name in receivers:
        got[name] = []
        ready[name] = asyncio.Event()
    tasks = {n: asyncio.ensure_future(f(n)) for n, f in receivers.items()}

    async def all_ready():
        await asyncio.gather(*(e.wait() for e in ready.values()))

    waiter = asyncio.ensure_future(all_ready())
    done, _ = await asyncio.wait(
        [waiter, *tasks.values()], timeout=20, return_when=asyncio.FIRST_COMPLETED
    )
    if waiter not in done:
        for n, t in tasks.items():
            if t.done() and t.exception():
                print(f"RECEIVER-ERROR {n} {t.exception()!r}", flush=True)
        raise SystemExit("receivers did not get ready")

    # ---- publishers
    async def ws_pub(codec):
        ws = await Ws(f"ws://{http}/v1/ws", codec).open()
        await ws.connect(tok("pub-" + codec))
        r = await ws.call("publish", {"channel": CHANNEL, "data": {"from": f"ws-{codec}"}})
        assert "publish" in r, r
        await ws.close()

    async def publish_http(name, base, http2):
        async with http_client(base, http2) as c:
            r = await c.post(
                "/v1/publish",
                json={"channel": CHANNEL, "data": {"from": name}},
                headers={"Authorization": f"Bearer {tok(name)}"},
            )
            versions[name] = r.http_version
            assert r.status_code == 200, r.text
            assert "result" in r.json(), r.text

    async def api_http(name, base, http2):
        async with http_client(base, http2) as c:
            r = await c.post(
                "/v1/api/publish",
                json={"channel": CHANNEL, "data": {"from": name}},
                headers={"Authorization": f"apikey {api_key}"},
            )
            versions[name] = r.http_version
            assert r.status_code == 200, r.text

    async def grpc_stream_pub():
        ch = grpc_channel(http)
        s = GrpcStream(ch, token=tok("grpc-pub"))
        await s.call_method("connect", {})
        r = await s.call_method("publish", {"channel": CHANNEL, "data": {"from": "grpc-stream"}})
        assert "publish" in r, r
        await s.close()
        await ch.close()

    async def grpc_unary_pub():
        async with grpc_channel(http) as ch:
            stub = api_grpc.HubStub(ch)
            req = pb.PublishRequest(channel=CHANNEL, data=json.dumps({"from": "grpc-unary"}).encode())
            r = await stub.Publish(req, metadata=(("authorization", f"Bearer {tok('unary')}"),))
            assert not r.HasField("error"), r

    async def grpc_api_pub():
        async with grpc_channel(http) as ch:
            stub = api_grpc.HubApiStub(ch)
            req = api_pb.ApiPublishRequest(
                channel=CHANNEL, data=json.dumps({"from": "grpc-api"}).encode()
            )
            r = await stub.Publish(req, metadata=(("authorization", f"apikey {api_key}"),))
            assert not r.HasField("error"), r

    pubs = [
        ws_pub("json"),
        ws_pub("proto"),
        publish_http("publish-h1", f"http://{http}", False),
        publish_http("publish-h2", f"https://{https}", True),
        api_http("api-h1", f"http://{http}", False),
        api_http("api-h2", f"https://{https}", True),
        grpc_stream_pub(),
        grpc_unary_pub(),
        grpc_api_pub(),
    ]
    results = await asyncio.gather(*pubs, return_exceptions=True)
    for name, r in zip(PUBLISHERS, results):
        if isinstance(r, BaseException):
            print(f"PUBLISHER-ERROR {name} {r!r}", flush=True)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(set(PUBLISHERS) <= set(v) for v in got.values()):
            break
        await asyncio.sleep(0.05)
    for n, t in tasks.items():
        if t.done() and t.exception():
            print(f"RECEIVER-ERROR {n} {t.exception()!r}", flush=True)
        t.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)

    print("RECEIVERS", " ".join(receivers), flush=True)
    print("PUBLISHERS", " ".join(PUBLISHERS), flush=True)
    for name, v in sorted(versions.items()):
        print("VERSION", name, v)
    for p in PUBLISHERS:
        for r in receivers:
            n = got[r].count(p)
            state = "ok" if n == 1 else ("missing" if n == 0 else "dup")
            print("CELL", p, r, state, n)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
