#!/usr/bin/env python3
"""Hub transport checks with third-party clients. Prints "OK NAME" or "FAIL NAME: why" lines.

usage: hub_checks.py recovery HTTP_ADDR API_KEY
       hub_checks.py errors   HTTP_ADDR HTTPS_ADDR JWT_SECRET API_KEY
       hub_checks.py limits   HTTP_ADDR JWT_SECRET API_KEY
       hub_checks.py liveness HTTP_ADDR            (server with ping 1 s, idle timeout 2 s)
       hub_checks.py shutdown HTTP_ADDR            (prints READY, then the close code)

recovery: a WebSocket (JSON and protobuf) is cut mid-stream while a publisher keeps going; it
resubscribes with (offset, epoch) and must get exactly the missed publications, in order, with
no duplicate across the recovered/live boundary. Also SSE resume with Last-Event-ID, and
"recovery impossible" once history no longer covers the gap.

errors / limits: see the server configuration in crates/cli/tests/it/hub_peers.rs.
"""
import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time

import grpc
import websockets
from websockets.asyncio.client import connect as ws_connect

from hub_lib import (
    GrpcStream,
    HttpError,
    Ws,
    api_grpc,
    api_pb,
    grpc_channel,
    http_client,
    jwt,
    sse_events,
)

FAILED = []


def ok(name):
    print("OK", name, flush=True)


def fail(name, why):
    FAILED.append(name)
    print(f"FAIL {name}: {why}", flush=True)


async def check(name, coro):
    try:
        await asyncio.wait_for(coro, 30)
        ok(name)
    except Exception as e:  # noqa: BLE001 - report and go on
        fail(name, repr(e))


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


async def api(http, key, method, body):
    async with http_client(f"http://{http}") as c:
        r = await c.post(f"/v1/api/{method}", json=body, headers={"Authorization": f"apikey {key}"})
        expect(r.status_code == 200, f"{method}: {r.status_code} {r.text}")
        return r.json()


# ---------------------------------------------------------------- recovery


async def ws_recovery(http, key, codec):
    channel = f"rec-{codec}"
    total = 80
    pub_done = asyncio.Event()

    async def publisher():
        async with http_client(f"http://{http}") as c:
            for i in range(1, total + 1):
                r = await c.post(
                    "/v1/api/publish",
                    json={"channel": channel, "data": {"n": i}},
                    headers={"Authorization": f"apikey {key}"},
                )
                expect(r.status_code == 200, r.text)
                await asyncio.sleep(0.01)
        pub_done.set()

    url = f"ws://{http}/v1/ws"
    ws = await Ws(url, codec).open()
    await ws.connect()
    r = await ws.call("subscribe", {"channel": channel})
    epoch = r["subscribe"]["epoch"]
    expect(r["subscribe"].get("recoverable"), r)
    pub = asyncio.ensure_future(publisher())
    seen = []
    last = None
    while len(seen) < 20:
        p = (await ws.next_push())["publication"]
        seen.append(p["data"]["n"])
        last = (int(p["offset"]), p["epoch"])
    ws.abort()  # cut mid-stream: no close handshake
    await asyncio.sleep(0.3)  # publications keep coming while the client is away
    ws2 = await Ws(url, codec).open()
    await ws2.connect()
    r = await ws2.call(
        "subscribe", {"channel": channel, "recover": {"offset": last[0], "epoch": last[1]}}
    )
    sub = r["subscribe"]
    expect(sub.get("wasRecovering") and sub.get("recovered"), f"not recovered: {sub}")
    expect(last[1] == epoch, "epoch changed")
    recovered = [p["data"]["n"] for p in sub.get("publications", [])]
    expect(len(recovered) > 0, "nothing was published while away")
    live = []
    await pub_done.wait()
    await pub
    while (recovered + live)[-1] < total:
        p = (await ws2.next_push(timeout=5))["publication"]
        live.append(p["data"]["n"])
    after = recovered + live
    expect(after == list(range(seen[-1] + 1, total + 1)), f"seen {seen}, recovered {recovered}, live {live}")
    expect(seen == list(range(1, len(seen) + 1)), f"first connection saw {seen}")
    # Nothing more (no duplicate after the last one).
    try:
        extra = await ws2.next_push(timeout=0.3)
        raise AssertionError(f"unexpected push {extra}")
    except asyncio.TimeoutError:
        pass
    await ws2.close()
    print(f"INFO {codec}: saw 1..{seen[-1]}, recovered {len(recovered)}, then {len(live)} live", flush=True)


async def recovery_impossible(http, key):
    channel = "rec-gap"
    ws = await Ws(f"ws://{http}/v1/ws", "json").open()
    await ws.connect()
    await ws.call("subscribe", {"channel": channel})
    await api(http, key, "publish", {"channel": channel, "data": {"n": 0}})
    p = (await ws.next_push())["publication"]
    pos = {"offset": int(p["offset"]), "epoch": p["epoch"]}
    await ws.close()
    # More than the namespace's history (100) while away.
    await api(http, key, "broadcast", {"channels": [channel] * 150, "data": {"n": 1}})
    ws = await Ws(f"ws://{http}/v1/ws", "json").open()
    await ws.connect()
    r = await ws.call("subscribe", {"channel": channel, "recover": pos})
    sub = r["subscribe"]
    expect(sub.get("wasRecovering") and not sub.get("recovered"), sub)
    expect(not sub.get("publications"), "publications despite failed recovery")
    expect(int(sub["offset"]) == pos["offset"] + 150, sub)
    await ws.close()


async def sse_resume(http, key):
    channel = "rec-sse"
    base = f"http://{http}"
    for i in range(1, 4):
        await api(http, key, "publish", {"channel": channel, "data": {"n": i}})
    last_id, seen = None, []
    async with http_client(base) as c:
        async for eid, frame in sse_events(c, f"/v1/sse?channel={channel}"):
            if frame and "push" in frame and "publication" in frame["push"]:
                seen.append(frame["push"]["publication"]["data"]["n"])
                last_id = eid
                if len(seen) == 2:
                    break
            elif frame and "reply" in frame and "subscribe" in frame["reply"]:
                await api(http, key, "publish", {"channel": channel, "data": {"n": 4}})
                await api(http, key, "publish", {"channel": channel, "data": {"n": 5}})
    expect(seen == [4, 5], f"first stream saw {seen}")
    for i in range(6, 9):
        await api(http, key, "publish", {"channel": channel, "data": {"n": i}})
    got = []
    async with http_client(base) as c:
        async for eid, frame in sse_events(
            c, f"/v1/sse?channel={channel}", headers={"Last-Event-ID": last_id}
        ):
            if frame and "reply" in frame and "subscribe" in frame["reply"]:
                sub = frame["reply"]["subscribe"]
                expect(sub.get("recovered"), f"not recovered: {sub}")
                expect("publications" not in sub, "publications should come as events")
            if frame and "push" in frame and "publication" in frame["push"]:
                got.append(frame["push"]["publication"]["data"]["n"])
                expect(eid and eid.split(".")[0] == str(int(last_id.split(".")[0]) + len(got)), eid)
                if len(got) == 3:
                    break
    expect(got == [6, 7, 8], f"resumed stream got {got}")


async def sse_resume_before_first_publication(http, key):
    """A stream cut before any publication still resumes: the subscribe reply has an id."""
    channel = "rec-sse-quiet"
    base = f"http://{http}"
    await api(http, key, "publish", {"channel": channel, "data": {"n": 1}})
    last_id = None
    async with http_client(base) as c:
        async for eid, frame in sse_events(c, f"/v1/sse?channel={channel}"):
            last_id = eid or last_id
            if frame and "reply" in frame and "subscribe" in frame["reply"]:
                break
    expect(last_id and last_id.startswith("1."), f"no event id before the first publication: {last_id}")
    for i in (2, 3):
        await api(http, key, "publish", {"channel": channel, "data": {"n": i}})
    got = []
    async with http_client(base) as c:
        async for _eid, frame in sse_events(
            c, f"/v1/sse?channel={channel}", headers={"Last-Event-ID": last_id}
        ):
            if frame and "reply" in frame and "subscribe" in frame["reply"]:
                expect(frame["reply"]["subscribe"].get("recovered"), frame)
            if frame and "push" in frame and "publication" in frame["push"]:
                got.append(frame["push"]["publication"]["data"]["n"])
                if len(got) == 2:
                    break
    expect(got == [2, 3], f"resumed stream got {got}")


async def recovery(http, key):
    await check("ws-json-cut-and-recover", ws_recovery(http, key, "json"))
    await check("ws-proto-cut-and-recover", ws_recovery(http, key, "proto"))
    await check("ws-recovery-impossible", recovery_impossible(http, key))
    await check("sse-last-event-id-resume", sse_resume(http, key))
    await check("sse-resume-before-first-publication", sse_resume_before_first_publication(http, key))


# ---------------------------------------------------------------- errors


async def errors(http, https, secret, key):
    url = f"ws://{http}/v1/ws"
    good = jwt(secret, "ann")

    async def unknown_subprotocol():
        try:
            await ws_connect(url, subprotocols=["chat.v2"], proxy=None)
        except websockets.exceptions.InvalidStatus as e:
            expect(e.response.status_code == 400, e.response.status_code)
            body = json.loads(e.response.body)
            expect(body["error"]["code"] == 107, body)
            expect("subprotocol" in body["error"]["message"], body)
            return
        raise AssertionError("upgrade accepted")

    async def bad_frame(codec, frame, before_connect=False):
        ws = await Ws(url, codec).open()
        if not before_connect:
            await ws.connect(good)
        await ws.send_raw(frame)
        code, reason = await ws.wait_closed()
        expect((code, reason) == (3501, "bad request"), (code, reason))
        if not before_connect:
            d = (await ws.next_push())["disconnect"]
            expect(d["code"] == 3501, d)
        await ws.close()

    async def oversized_data():
        ws = await Ws(url, "json").open()
        await ws.connect(good)
        r = await ws.call("publish", {"channel": "news", "data": "x" * 5000})
        expect(r["error"]["code"] == 113, r)
        r = await ws.call("ping", {})  # the connection is still usable
        expect("ping" in r and "error" not in r, r)
        await ws.close()

    async def oversized_frame():
        ws = await Ws(url, "json").open()
        await ws.connect(good)
        await ws.send_raw(json.dumps({"id": 9, "publish": {"channel": "news", "data": "x" * 200_000}}))
        code, _ = await ws.wait_closed()
        expect(code == 1009, code)
        await ws.close()

    async def oversized_http():
        async with http_client(f"http://{http}") as c:
            r = await c.post(
                "/v1/publish",
                json={"channel": "news", "data": "x" * 5000},
                headers={"Authorization": f"Bearer {good}"},
            )
            expect(r.status_code == 413 and r.json()["error"]["code"] == 113, r.text)

    async def ws_connect_refused(token, code, disconnect):
        ws = await Ws(url, "json").open()
        r = await ws.connect(token)
        expect(r.get("error", {}).get("code") == code, r)
        if disconnect:
            closed = await ws.wait_closed()
            expect(closed[0] == disconnect, closed)
            d = (await ws.next_push())["disconnect"]
            expect(d["code"] == disconnect and d.get("reconnect") is None, d)
        else:
            # 109: the client may retry on the same connection with a fresh token.
            r = await ws.connect(good)
            expect("connect" in r and r["connect"]["user"] == "ann", r)
        await ws.close()

    async def http_refused(path, token, status, code, method="GET", http2=False):
        base = f"https://{https}" if http2 else f"http://{http}"
        async with http_client(base, http2) as c:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if method == "GET":
                r = await c.get(path, headers=headers)
            else:
                r = await c.post(path, json={"channel": "news", "data": {}}, headers=headers)
            expect(r.status_code == status, f"{r.status_code} {r.text}")
            expect(r.json()["error"]["code"] == code, r.text)
            if http2:
                expect(r.http_version == "HTTP/2", r.http_version)

    async def token_channels():
        token = jwt(secret, "bob", channels=["allowed"])
        ws = await Ws(url, "proto").open()
        r = await ws.connect(token)
        expect("connect" in r, r)
        r = await ws.call("subscribe", {"channel": "secret"})
        expect(r.get("error", {}).get("code") == 103, r)
        r = await ws.call("subscribe", {"channel": "allowed"})
        expect("subscribe" in r, r)
        await ws.close()
        await http_refused("/v1/sse?channel=secret", token, 403, 103)

    async def api_key():
        async with http_client(f"http://{http}") as c:
            body = {"channel": "news", "data": {"a": 1}}
            r = await c.post("/v1/api/publish", json=body)
            expect(r.status_code == 401 and r.json()["error"]["code"] == 101, r.text)
            r = await c.post("/v1/api/publish", json=body, headers={"Authorization": "apikey nope"})
            expect(r.status_code == 401, r.text)
            r = await c.post("/v1/api/frobnicate", json={}, headers={"Authorization": f"apikey {key}"})
            expect(r.status_code == 404 and r.json()["error"]["code"] == 104, r.text)
            r = await c.post(
                "/v1/api/publish",
                content=b"{",
                headers={"Authorization": f"apikey {key}", "Content-Type": "application/json"},
            )
            expect(r.status_code == 400 and r.json()["error"]["code"] == 107, r.text)
            # A JSON body must say so: a page of another site could send text/plain unasked.
            r = await c.post(
                "/v1/api/publish",
                content=json.dumps(body).encode(),
                headers={"Authorization": f"apikey {key}", "Content-Type": "text/plain"},
            )
            expect(r.status_code == 415 and r.json()["error"]["code"] == 107, r.text)
            r = await c.post(
                "/v1/api/publish",
                json={"channel": "nope:x", "data": {}},
                headers={"Authorization": f"apikey {key}"},
            )
            expect(r.status_code == 404 and r.json()["error"]["code"] == 102, r.text)
        async with grpc_channel(http) as ch:
            stub = api_grpc.HubApiStub(ch)
            try:
                await stub.Info(api_pb.InfoRequest())
                raise AssertionError("gRPC HubApi answered without an API key")
            except grpc.aio.AioRpcError as e:
                expect(e.code() == grpc.StatusCode.UNAUTHENTICATED, e.code())
            r = await stub.Info(api_pb.InfoRequest(), metadata=(("authorization", f"apikey {key}"),))
            expect(len(r.result.nodes) == 1, r)

    async def grpc_bad_token():
        async with grpc_channel(http) as ch:
            s = GrpcStream(ch, token=jwt("wrong", "eve"))
            r = await s.call_method("connect", {})
            expect(r["error"]["code"] == 101, r)
            d = (await s.next_push())["disconnect"]
            expect(d["code"] == 3500, d)
            await s.close()

    async def grpc_oversized():
        async with grpc_channel(http) as ch:
            stub = api_grpc.HubStub(ch)
            md = (("authorization", f"Bearer {good}"),)
            from hub_lib import pb

            r = await stub.Publish(pb.PublishRequest(channel="news", data=b'"' + b"x" * 5000 + b'"'), metadata=md)
            expect(r.error.code == 113, r)
            try:
                await stub.Publish(pb.PublishRequest(channel="news", data=b"x" * 300_000), metadata=md)
                raise AssertionError("a 300 kB gRPC message was accepted")
            except grpc.aio.AioRpcError as e:
                expect(e.code() == grpc.StatusCode.OUT_OF_RANGE, e.code())

    async def signaling_room():
        # alice speaks protobuf, bob JSON: rooms ride on Session::handle, so both codecs meet.
        sdp = (
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
            "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n"
            "a=fingerprint:sha-256 DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09:DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF\r\n"
            "a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n"
        )
        alice = await Ws(url, "proto").open()
        bob = await Ws(url, "json").open()
        try:
            await alice.connect(good)
            await bob.connect(jwt(secret, "bob"))
            r = await alice.call("roomJoin", {"room": "call:py", "peerId": "alice", "data": {"n": 1}})
            expect("roomJoin" in r and not r["roomJoin"].get("polite"), r)
            r = await bob.call("roomJoin", {"room": "call:py", "peerId": "bob", "data": {"n": 2}})
            j = r["roomJoin"]
            expect(j.get("polite") is True, r)
            expect([m["peerId"] for m in j["members"]] == ["alice"] and j["members"][0]["data"] == {"n": 1}, r)
            p = await alice.next_push()
            expect(p["roomJoin"]["peer"]["peerId"] == "bob" and p["roomJoin"]["peer"]["data"] == {"n": 2}, p)
            r = await bob.call(
                "offer", {"room": "call:py", "to": "alice", "description": {"type": "offer", "sdp": sdp}}
            )
            expect(r["offer"].get("delivered") == 1, r)
            p = (await alice.next_push())["signal"]
            expect(p["from"] == "bob" and p["offer"]["sdp"] == sdp, p)
            r = await bob.call(
                "candidate",
                {
                    "room": "call:py",
                    "candidate": {"candidate": "candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host", "sdpMid": "0"},
                },
            )
            expect(r["candidate"].get("delivered") == 1, r)
            p = (await alice.next_push())["signal"]
            expect(p["candidate"]["candidate"] == "candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host", p)
            r = await bob.call(
                "offer", {"room": "call:py", "to": "alice", "description": {"type": "offer", "sdp": "v=0\r\nx\r\n"}}
            )
            expect(r["error"]["code"] == 107, r)
            r = await bob.call("offer", {"room": "call:other", "description": {"type": "offer", "sdp": sdp}})
            expect(r["error"]["code"] == 102, r)
            await bob.close()
            p = (await alice.next_push())["roomLeave"]
            expect(p["peerId"] == "bob" and p["room"] == "call:py", p)
        finally:
            await alice.close()
            await bob.close()

    async def room_permission():
        ws = await Ws(url, "json").open()
        try:
            await ws.connect(jwt(secret, "perm"))
            r = await ws.call("roomJoin", {"room": "nowhere:x", "peerId": "p"})
            expect(r.get("error", {}).get("code") == 102, r)
            r = await ws.call("roomJoin", {"room": "locked:x", "peerId": "p"})
            expect(r.get("error", {}).get("code") == 103, r)
            r = await ws.call("roomJoin", {"room": "call:ok", "peerId": "p"})
            expect("roomJoin" in r, r)
        finally:
            await ws.close()

    async def signaling_flood():
        # The server runs with [hub.rooms] max_commands_per_second = 5, command_burst = 10.
        await wait_idle(http)
        cand = {"candidate": "candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host", "sdpMid": "0"}
        names = ["fa", "fb", "ca", "cb"]
        peers = [await Ws(url, "json").open() for _ in names]
        try:
            for w, n in zip(peers, names):
                await w.connect(jwt(secret, n))
            fa, fb, ca, cb = peers
            await fa.call("roomJoin", {"room": "call:flood", "peerId": "fa"})
            await fb.call("roomJoin", {"room": "call:flood", "peerId": "fb"})
            await ca.call("roomJoin", {"room": "call:calm", "peerId": "ca"})
            await cb.call("roomJoin", {"room": "call:calm", "peerId": "cb"})
            await fa.next_push()  # fb joined
            await ca.next_push()  # cb joined
            codes_seen = []
            for _ in range(30):
                r = await fb.call("candidate", {"room": "call:flood", "to": "fa", "candidate": cand})
                codes_seen.append(r["error"]["code"] if "error" in r else 0)
            limited = codes_seen.count(111)
            expect(limited >= 15 and set(codes_seen) <= {0, 111}, codes_seen)
            # fa got exactly the accepted ones.
            for _ in range(codes_seen.count(0)):
                expect("signal" in await fa.next_push(), "relayed candidate")
            # The calm room is not disturbed.
            r = await cb.call("candidate", {"room": "call:calm", "to": "ca", "candidate": cand})
            expect(r.get("candidate", {}).get("delivered") == 1, r)
            expect("signal" in await ca.next_push(), "calm room delivery")
            async with http_client(f"http://{http}") as c:
                m = (await c.get("/metrics")).text
            line = next(
                (l for l in m.splitlines() if l.startswith('switchboard_hub_signal_refused_total{reason="rate_limited"}')),
                None,
            )
            expect(line is not None and float(line.split()[-1]) >= limited, line)
        finally:
            for w in peers:
                await w.close()

    async def close_handshake():
        # The server answers the client's close frame (a clean close for browsers too).
        ws = await ws_connect(url, subprotocols=["switchboard.json"], proxy=None)
        await ws.send(json.dumps({"id": 1, "connect": {"token": good}}))
        await ws.recv()
        await ws.close()
        rcvd = ws.protocol.close_rcvd
        expect(rcvd is not None and rcvd.code == 1000, rcvd)

    await check("ws-close-handshake-1000", close_handshake())
    await check("ws-room-permission-102-103", room_permission())
    await check("ws-signaling-flood-111", signaling_flood())
    await check("unknown-subprotocol-400", unknown_subprotocol())
    await check("malformed-json-frame-3501", bad_frame("json", "{not json"))
    await check("malformed-proto-frame-3501", bad_frame("proto", b"\xff\xff\xff\xff\x0f"))
    await check("binary-frame-on-json-3501", bad_frame("json", b"\x01\x02"))
    await check("command-before-connect-3501", bad_frame("json", '{"id":1,"ping":{}}', True))
    await check("oversized-data-113", oversized_data())
    await check("oversized-ws-frame-1009", oversized_frame())
    await check("oversized-http-publish-413", oversized_http())
    await check("bad-jwt-ws-101-3500", ws_connect_refused(jwt("wrong", "eve"), 101, 3500))
    await check("garbage-jwt-ws-101-3500", ws_connect_refused("not.a.jwt", 101, 3500))
    await check("expired-jwt-ws-109-retry", ws_connect_refused(jwt(secret, "ann", exp_in=-60), 109, None))
    await check("anonymous-refused-ws-101-3500", ws_connect_refused("", 101, 3500))
    await check("bad-jwt-sse-401", http_refused("/v1/sse?channel=news", jwt("wrong", "e"), 401, 101))
    await check(
        "expired-jwt-publish-h2-401",
        http_refused("/v1/publish", jwt(secret, "ann", exp_in=-60), 401, 109, "POST", http2=True),
    )
    await check("anonymous-poll-401", http_refused("/v1/poll?channel=news&timeout=0", None, 401, 101))
    await check("unknown-namespace-sse-404", http_refused("/v1/sse?channel=nope:x", good, 404, 102))
    await check("token-channels-claim-103", token_channels())
    await check("api-key-required-401", api_key())
    await check("grpc-bad-jwt-101-3500", grpc_bad_token())
    await check("grpc-oversized-113-out-of-range", grpc_oversized())
    await check("ws-signaling-room", signaling_room())


# ---------------------------------------------------------------- limits


async def wait_idle(http):
    async with http_client(f"http://{http}") as c:
        for _ in range(200):
            r = await c.get("/healthz")
            if r.json()["components"]["hub"]["connections"] == 0:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("connections did not drain")


async def limits(http, secret, key):
    url = f"ws://{http}/v1/ws"

    async def channels_per_connection():
        ws = await Ws(url, "json").open()
        await ws.connect(jwt(secret, "cpc"))
        for i in range(3):
            r = await ws.call("subscribe", {"channel": f"c{i}"})
            expect("subscribe" in r, r)
        r = await ws.call("subscribe", {"channel": "c3"})
        expect(r.get("error", {}).get("code") == 106, r)
        await ws.close()

    async def connections_per_user():
        token = jwt(secret, "dup")
        a = await Ws(url, "json").open()
        b = await Ws(url, "proto").open()
        expect("connect" in await a.connect(token), "a")
        expect("connect" in await b.connect(token), "b")
        c = await Ws(url, "json").open()
        r = await c.connect(token)
        expect(r.get("error", {}).get("code") == 114, r)
        closed = await c.wait_closed()
        expect(closed == (3504, "connection limit"), closed)
        for w in (a, b, c):
            await w.close()

    async def connections_total():
        await wait_idle(http)
        open_ = []
        for i in range(8):
            w = await Ws(url, "json").open()
            r = await w.connect(jwt(secret, f"u{i}"))
            expect("connect" in r, (i, r))
            open_.append(w)
        w = await Ws(url, "json").open()
        r = await w.connect(jwt(secret, "u9"))
        expect(r.get("error", {}).get("code") == 115, r)
        expect((await w.wait_closed())[0] == 3504, "close code")
        await w.close()
        async with http_client(f"http://{http}") as c:
            r = await c.get(
                "/v1/poll?channel=news&timeout=0",
                headers={"Authorization": f"Bearer {jwt(secret, 'u10')}"},
            )
            expect(r.status_code == 503 and r.json()["error"]["code"] == 115, r.text)
        for w in open_:
            await w.close()

    async def slow_consumer():
        await wait_idle(http)
        ws = await ws_connect(url, subprotocols=["switchboard.json"], proxy=None, max_queue=1)
        await ws.send(json.dumps({"id": 1, "connect": {"token": jwt(secret, "slow")}}))
        await ws.recv()
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "slow"}}))
        await ws.recv()
        # Stop reading. Publish in bursts of 8, well inside the 32-message queue, until the socket
        # buffers are full and the hub queue overflows (seen on /metrics).
        async with http_client(f"http://{http}") as c:

            async def slow_disconnects():
                text = (await c.get("/metrics")).text
                for line in text.splitlines():
                    if line.startswith("switchboard_hub_slow_consumer_disconnects_total"):
                        return float(line.split()[-1])
                return 0.0

            before = await slow_disconnects()
            bursts = 0
            while await slow_disconnects() == before:
                expect(bursts < 2000, "no overflow after 2000 bursts")
                r = await c.post(
                    "/v1/api/broadcast",
                    json={"channels": ["slow"] * 8, "data": {"pad": "x" * 3000}},
                    headers={"Authorization": f"apikey {key}"},
                )
                expect(r.status_code == 200, r.text)
                bursts += 1
                # Let the writer move the burst into the socket: two bursts back to back
                # (48 KB) would overflow the 64 KiB queue of a client that still reads,
                # when this machine is loaded and the writer runs late.
                await asyncio.sleep(0.02)
        frames = 0
        last = None
        try:
            while True:
                last = json.loads(await asyncio.wait_for(ws.recv(), 10))
                frames += 1
        except websockets.exceptions.ConnectionClosed as e:
            expect(e.rcvd is not None, "no close frame")
            expect((e.rcvd.code, e.rcvd.reason) == (3008, "slow consumer"), e.rcvd)
        expect(last == {"push": {"disconnect": {"code": 3008, "reason": "slow consumer", "reconnect": True}}}, last)
        expect(32 < frames < bursts * 8, f"{frames} frames for {bursts * 8} publications")
        print(f"INFO slow consumer: {bursts * 8} published, {frames} frames read, then 3008", flush=True)

    await check("max-channels-per-connection-106", channels_per_connection())
    await check("max-connections-per-user-114-3504", connections_per_user())
    await check("max-connections-115-3504-503", connections_total())
    await check("slow-consumer-3008", slow_consumer())


# ---------------------------------------------------------------- liveness


class RawWs:
    """A minimal WebSocket client that never answers pings (to see the server give up)."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: switchboard.json\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(head)

    def send_text(self, text):
        data = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        self.s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("eof")
            buf += chunk
        return buf

    def frame(self):
        b0, b1 = self._exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exact(8))[0]
        return b0 & 0x0F, self._exact(n)


def liveness_raw(http):
    """Connect, then stay silent: pings arrive every second, then close 3012 after ~2 s."""
    ws = RawWs(http)
    ws.send_text(json.dumps({"id": 1, "connect": {}}))
    start = time.monotonic()
    pings, close = 0, None
    while close is None:
        op, payload = ws.frame()
        if op == 0x9:
            pings += 1
        elif op == 0x8:
            close = (struct.unpack("!H", payload[:2])[0], payload[2:].decode(), time.monotonic() - start)
    expect(pings >= 1, "no ping")
    expect(close[0] == 3012 and close[1] == "stale", close)
    expect(1.5 <= close[2] <= 5, f"closed after {close[2]:.1f}s")


def liveness_no_connect(http):
    ws = RawWs(http)
    start = time.monotonic()
    while True:
        op, payload = ws.frame()
        if op == 0x8:
            code = struct.unpack("!H", payload[:2])[0]
            expect(code == 3012, code)
            expect(time.monotonic() - start >= 1.5, "closed too early")
            return


async def liveness(http):
    async def kept_alive():
        # websockets answers pings: the connection outlives the idle timeout.
        ws = await Ws(f"ws://{http}/v1/ws", "json").open()
        await ws.connect()
        await asyncio.sleep(3.5)
        r = await ws.call("ping", {})
        expect("error" not in r, r)
        await ws.close()

    async def sse_heartbeat():
        start = time.monotonic()
        async with http_client(f"http://{http}") as c:
            async for _eid, frame in sse_events(c, "/v1/sse?channel=hb"):
                if frame is None:  # a comment
                    expect(time.monotonic() - start < 2.5, "heartbeat too late")
                    return

    loop = asyncio.get_running_loop()
    await asyncio.gather(
        check("ws-ping-then-stale-3012", loop.run_in_executor(None, liveness_raw, http)),
        check("ws-no-connect-stale-3012", loop.run_in_executor(None, liveness_no_connect, http)),
        check("ws-pong-keeps-alive", kept_alive()),
        check("sse-heartbeat-comment", sse_heartbeat()),
    )


async def shutdown(http):
    ws = await Ws(f"ws://{http}/v1/ws", "proto").open()
    await ws.connect()
    await ws.call("subscribe", {"channel": "bye"})
    print("READY", flush=True)
    code, reason = await ws.wait_closed(timeout=20)
    d = (await ws.next_push())["disconnect"]
    print("CLOSED", code, reason, d["code"], flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    fn = {"recovery": recovery, "errors": errors, "limits": limits, "liveness": liveness, "shutdown": shutdown}[mode]
    asyncio.run(fn(*args))
    print("DONE", len(FAILED), "failed", flush=True)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
