"""Three switchboard nodes sharing one Redis act as one hub (crates/cli/tests/it/cluster.rs).

usage: cluster_checks.py NODES SECRET APIKEY REDIS_PORT REDIS_START_COMMAND VICTIM_ADDR VICTIM_PID

NODES is a comma-separated list of the nodes' plain HTTP addresses (HOST:PORT). The checks use
third-party clients only (websockets, httpx, grpcio): publications between clients on different
nodes and transports, recovery after moving to another node, cluster-wide presence and
join/leave, a WebRTC signaling exchange across nodes, and Redis faults: a stop and restart of
redis-server (publishes refused with a clear temporary error meanwhile, health degraded, local
clients kept, everything back afterwards) and a cut of every pub/sub connection (no publication
lost: missed ones come back through the hub's gap detection and history recovery).

A fourth node (VICTIM) is killed with SIGKILL mid-way: its clients' presence entries and room
peers expire cluster-wide (the servers run with presence_ttl_secs = 3).

Prints "OK name" / "FAIL name: why" per check and "DONE n failed".
"""
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time

from hub_lib import GrpcStream, Ws, grpc_channel, http_client, jwt

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OFFER = open(
    os.path.join(ROOT, "crates/signal/tests/fixtures/datachannel-offer.sdp"), newline=""
).read()
ANSWER = OFFER.replace("a=setup:actpass", "a=setup:active")
CANDIDATE = {"candidate": "candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host", "sdpMid": "0"}

failures = 0


def ok(name):
    print(f"OK {name}", flush=True)


def fail(name, why):
    global failures
    failures += 1
    print(f"FAIL {name}: {why}", flush=True)


async def check(name, coro, limit=60):
    try:
        await asyncio.wait_for(coro, limit)
        ok(name)
    except Exception as e:  # noqa: BLE001 - report and go on
        fail(name, repr(e))


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


class Cluster:
    def __init__(self, nodes, secret, key, redis_port, redis_start):
        self.nodes = nodes
        self.secret = secret
        self.key = key
        self.redis_port = redis_port
        self.redis_start = redis_start

    def ws_url(self, i):
        return f"ws://{self.nodes[i]}/v1/ws"

    async def ws(self, i, user, codec="json"):
        w = await Ws(self.ws_url(i), codec).open()
        r = await w.connect(jwt(self.secret, user))
        expect("connect" in r, r)
        return w

    async def api(self, i, method, body):
        async with http_client(f"http://{self.nodes[i]}") as c:
            r = await c.post(
                f"/v1/api/{method}", json=body, headers={"Authorization": f"apikey {self.key}"}
            )
            return r.status_code, r.json()

    async def health(self, i):
        async with http_client(f"http://{self.nodes[i]}") as c:
            return (await c.get("/healthz")).json()

    async def metric(self, i, name):
        async with http_client(f"http://{self.nodes[i]}") as c:
            text = (await c.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return None

    async def wait_broker(self, up, limit=20):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            states = [(await self.health(i))["components"]["hub"]["broker_status"] for i in range(3)]
            if all(s == ("up" if up else "down") for s in states):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"brokers not {'up' if up else 'down'}: {states}")

    def redis_cli(self, *args):
        return subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )


def data_of(push):
    return push["publication"]["data"]


async def next_publication(client, limit=10):
    """The next publication push, skipping others (join/leave)."""
    deadline = time.monotonic() + limit
    while True:
        p = await client.next_push(max(0.1, deadline - time.monotonic()))
        if "publication" in p:
            return p["publication"]


# ---------------------------------------------------------------- checks


async def fanout(c):
    """Subscribers on three nodes and two transports get publications made on every node."""
    a = await c.ws(0, "sub-a", "json")
    b = await c.ws(1, "sub-b", "proto")
    async with grpc_channel(c.nodes[2]) as ch:
        g = GrpcStream(ch, token=jwt(c.secret, "sub-c"))
        try:
            r = await g.call_method("connect", {})
            expect("connect" in r, r)
            for s in (a, b):
                r = await s.call("subscribe", {"channel": "fanout"})
                expect("subscribe" in r, r)
            r = await g.call_method("subscribe", {"channel": "fanout"})
            expect("subscribe" in r, r)
            # Publishers: a client on node 0 (WebSocket), the server API on node 1 (HTTP),
            # a client on node 2 (gRPC stream).
            r = await a.call("publish", {"channel": "fanout", "data": {"n": 1}})
            expect("publish" in r, r)
            status, body = await c.api(1, "publish", {"channel": "fanout", "data": {"n": 2}})
            expect(status == 200, body)
            r = await g.call_method("publish", {"channel": "fanout", "data": {"n": 3}})
            expect("publish" in r, r)
            for name, client in (("ws-json@0", a), ("ws-proto@1", b), ("grpc@2", g)):
                got = [await next_publication(client) for _ in range(3)]
                expect([p["data"]["n"] for p in got] == [1, 2, 3], (name, got))
                expect([int(p["offset"]) for p in got] == [1, 2, 3], (name, got))
                expect(len({p["epoch"] for p in got}) == 1, (name, got))
        finally:
            await g.close()
            await a.close()
            await b.close()


async def recover_elsewhere(c):
    """A client subscribed on node 0 leaves, misses three publications, comes back on node 2."""
    a = await c.ws(0, "mover")
    r = await a.call("subscribe", {"channel": "moves"})
    pos = r["subscribe"]
    await a.close()
    for n in range(3):
        status, body = await c.api(1, "publish", {"channel": "moves", "data": {"n": n}})
        expect(status == 200, body)
    b = await c.ws(2, "mover", "proto")
    try:
        r = await b.call(
            "subscribe",
            {"channel": "moves", "recover": {"offset": int(pos.get("offset", 0)), "epoch": pos["epoch"]}},
        )
        s = r["subscribe"]
        expect(s.get("recovered") is True, s)
        expect([p["data"]["n"] for p in s.get("publications", [])] == [0, 1, 2], s)
    finally:
        await b.close()


async def presence(c):
    """Presence and join/leave messages span the nodes."""
    clients = [await c.ws(i, f"pres-{i}") for i in range(3)]
    try:
        r = await clients[0].call("subscribe", {"channel": "chat:lobby"})
        expect("subscribe" in r, r)
        r = await clients[1].call("subscribe", {"channel": "chat:lobby"})
        expect("subscribe" in r, r)
        # Its own join comes first (join messages go to every subscriber), then pres-1's.
        while True:
            p = await clients[0].next_push()
            expect("join" in p, p)
            if p["join"]["info"]["user"] == "pres-1":
                break
            expect(p["join"]["info"]["user"] == "pres-0", p)
        r = await clients[2].call("subscribe", {"channel": "chat:lobby"})
        expect("subscribe" in r, r)
        r = await clients[2].call("presence", {"channel": "chat:lobby"})
        users = sorted(i["user"] for i in r["presence"]["presence"].values())
        expect(users == ["pres-0", "pres-1", "pres-2"], r)
        status, body = await c.api(0, "presence_stats", {"channel": "chat:lobby"})
        expect(status == 200 and body["result"]["numClients"] == 3, body)
        await clients[1].close()
        deadline = time.monotonic() + 10
        while True:
            p = await clients[0].next_push(max(0.1, deadline - time.monotonic()))
            if "leave" in p:
                expect(p["leave"]["info"]["user"] == "pres-1", p)
                break
    finally:
        for w in clients:
            await w.close()


async def signaling(c):
    """A WebRTC offer/answer/candidates exchange between peers on two nodes."""
    alice = await c.ws(0, "alice")
    bob = await c.ws(1, "bob")
    carol = await c.ws(2, "carol")
    try:
        r = await alice.call("roomJoin", {"room": "call:x", "peerId": "alice", "data": {"n": 1}})
        expect(r["roomJoin"].get("polite") in (None, False), r)
        r = await bob.call("roomJoin", {"room": "call:x", "peerId": "bob", "data": {"n": 2}})
        j = r["roomJoin"]
        expect(j.get("polite") is True and [m["peerId"] for m in j["members"]] == ["alice"], r)
        expect(j["members"][0]["data"] == {"n": 1}, r)
        p = await alice.next_push()
        expect(p["roomJoin"]["peer"]["peerId"] == "bob", p)
        r = await bob.call("offer", {"room": "call:x", "to": "alice", "description": {"type": "offer", "sdp": OFFER}})
        expect(r["offer"].get("delivered") == 1, r)
        s = (await alice.next_push())["signal"]
        expect(s["from"] == "bob" and s["offer"]["sdp"] == OFFER, s)
        r = await alice.call("answer", {"room": "call:x", "to": "bob", "description": {"type": "answer", "sdp": ANSWER}})
        expect(r["answer"].get("delivered") == 1, r)
        s = (await bob.next_push())["signal"]
        expect(s["from"] == "alice" and s["answer"]["sdp"] == ANSWER, s)
        r = await alice.call("candidate", {"room": "call:x", "to": "bob", "candidate": CANDIDATE})
        expect(r["candidate"].get("delivered") == 1, r)
        s = (await bob.next_push())["signal"]
        expect(s["candidate"]["candidate"].startswith("candidate:1 1 udp"), s)
        # A third peer on node 2; broadcasts reach both others; duplicate ids are refused
        # across nodes; an unknown recipient is 102.
        r = await carol.call("roomJoin", {"room": "call:x", "peerId": "alice"})
        expect(r.get("error", {}).get("code") == 105, r)
        r = await carol.call("roomJoin", {"room": "call:x", "peerId": "carol"})
        expect([m["peerId"] for m in r["roomJoin"]["members"]] == ["alice", "bob"], r)
        await alice.next_push()
        await bob.next_push()
        r = await carol.call("candidate", {"room": "call:x", "candidate": CANDIDATE})
        expect(r["candidate"].get("delivered") == 2, r)
        expect("signal" in await alice.next_push() and "signal" in await bob.next_push(), "broadcast")
        r = await carol.call("bye", {"room": "call:x", "to": "zed"})
        expect(r.get("error", {}).get("code") == 102, r)
        # bob's connection ends: alice (node 0) and carol (node 2) are told.
        await bob.close()
        for w in (alice, carol):
            p = await w.next_push()
            expect(p["roomLeave"]["peerId"] == "bob" and not p["roomLeave"].get("timedOut"), p)
    finally:
        for w in (alice, bob, carol):
            await w.close()


async def simultaneous_joins(c):
    """Two peers join one room at the same moment on two nodes, 20 times: each time exactly one
    of them is told to make the first offer (its join result lists the other, or a roomJoin
    push says polite: true), never both, never neither."""
    a = await c.ws(0, "race-a")
    b = await c.ws(1, "race-b")
    races = 0
    try:
        for i in range(20):
            room = f"call:race{i}"
            ra, rb = await asyncio.gather(
                a.call("roomJoin", {"room": room, "peerId": "a"}),
                b.call("roomJoin", {"room": room, "peerId": "b"}),
            )
            await asyncio.sleep(0.3)
            pushes = {}
            for name, w in (("a", a), ("b", b)):
                got = []
                while not w.pushes.empty():
                    got.append(w.pushes.get_nowait())
                pushes[name] = [p["roomJoin"] for p in got if "roomJoin" in p]
            listed_a = [m["peerId"] for m in ra["roomJoin"].get("members", [])]
            listed_b = [m["peerId"] for m in rb["roomJoin"].get("members", [])]
            offers_a = "b" in listed_a or any(p.get("polite") for p in pushes["a"])
            offers_b = "a" in listed_b or any(p.get("polite") for p in pushes["b"])
            expect(offers_a != offers_b, (i, ra, rb, pushes))
            if not listed_a and not listed_b:
                races += 1
            await a.call("roomLeave", {"room": room})
            await b.call("roomLeave", {"room": room})
            await asyncio.sleep(0.05)
            for w in (a, b):
                while not w.pushes.empty():
                    w.pushes.get_nowait()
        print(f"INFO simultaneous-joins: {races} of 20 were real races", flush=True)
    finally:
        await a.close()
        await b.close()


async def dead_node(c, victim_addr, victim_pid):
    """A node dies without a word (SIGKILL): its room peer is reported as timed out to a peer
    on another node, and its subscriber leaves the channel's presence, once the entries expire."""
    import signal

    dave = await c.ws(0, "dave")
    carol = await Ws(f"ws://{victim_addr}/v1/ws", "json").open()
    try:
        r = await carol.connect(jwt(c.secret, "carol-v"))
        expect("connect" in r, r)
        r = await carol.call("roomJoin", {"room": "call:dead", "peerId": "carol"})
        expect("roomJoin" in r, r)
        r = await carol.call("subscribe", {"channel": "chat:dead"})
        expect("subscribe" in r, r)
        r = await dave.call("roomJoin", {"room": "call:dead", "peerId": "dave"})
        expect([m["peerId"] for m in r["roomJoin"]["members"]] == ["carol"], r)
        r = await dave.call("subscribe", {"channel": "chat:dead"})
        r = await dave.call("presence", {"channel": "chat:dead"})
        users = sorted(i["user"] for i in r["presence"]["presence"].values())
        expect(users == ["carol-v", "dave"], r)
        os.kill(victim_pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        left = None
        while left is None:
            p = await dave.next_push(max(0.1, deadline - time.monotonic()))
            if "roomLeave" in p:
                left = p["roomLeave"]
            # keep the room peer alive meanwhile
            await dave.call("ping", {})
        expect(left["peerId"] == "carol" and left.get("timedOut") is True, left)
        deadline = time.monotonic() + 20
        while True:
            r = await dave.call("presence", {"channel": "chat:dead"})
            users = sorted(i["user"] for i in r["presence"]["presence"].values())
            if users == ["dave"]:
                break
            expect(time.monotonic() < deadline, f"carol still present: {users}")
            await asyncio.sleep(0.2)
    finally:
        carol.abort()
        await dave.close()


async def redis_restart(c):
    """redis-server stops: publishes are refused with a temporary error, health says degraded,
    local clients stay; it restarts: every node resubscribes and publications flow again, with
    the history (Redis with an append-only file) continuing where it was."""
    sub = await c.ws(1, "outage-sub")
    pub = await c.ws(0, "outage-pub")
    try:
        r = await sub.call("subscribe", {"channel": "outage"})
        expect("subscribe" in r, r)
        status, body = await c.api(0, "publish", {"channel": "outage", "data": {"n": 1}})
        expect(status == 200, body)
        first = await next_publication(sub)
        expect(first["data"] == {"n": 1}, first)

        r = c.redis_cli("shutdown")
        expect(r.returncode in (0, 1), r)  # the connection drops as Redis exits
        await c.wait_broker(up=False)
        h = await c.health(0)
        expect(h["status"] == "degraded" and h["components"]["hub"]["broker"] == "redis", h)
        expect(await c.metric(0, "switchboard_hub_broker_up") == 0, "broker_up gauge")
        status, body = await c.api(0, "publish", {"channel": "outage", "data": {"n": 2}})
        expect(status >= 500 and body["error"]["code"] == 100, (status, body))
        expect(body["error"].get("temporary") is True, body)
        expect("unavailable" in body["error"]["message"].lower(), body)
        r = await pub.call("publish", {"channel": "outage", "data": {"n": 2}})
        expect(r.get("error", {}).get("code") == 100 and r["error"].get("temporary"), r)
        # Local clients are still connected and served.
        r = await sub.call("ping", {})
        expect("ping" in r, r)

        subprocess.run(shlex.split(c.redis_start), check=True, timeout=10)
        await c.wait_broker(up=True)
        expect(await c.metric(0, "switchboard_hub_broker_up") == 1, "broker_up gauge")
        r = await pub.call("publish", {"channel": "outage", "data": {"n": 3}})
        expect("publish" in r, r)
        got = await next_publication(sub)
        expect(got["data"] == {"n": 3}, got)
        expect(int(got["offset"]) == int(first["offset"]) + 1 and got["epoch"] == first["epoch"], (first, got))
    finally:
        await sub.close()
        await pub.close()


async def pubsub_cut(c):
    """Every node's pub/sub connection is killed right before each publication, so Redis sends
    it to nobody: the subscriber on another node still ends up with each publication exactly
    once, in order — its node reads what it missed from history when it reconnects (or, if
    that fails, the hub notices the gap and the client recovers)."""
    sub = await c.ws(2, "cut-sub")
    try:
        r = await sub.call("subscribe", {"channel": "cut"})
        pos = r["subscribe"]
        epoch = pos["epoch"]
        last = int(pos.get("offset", 0))
        n = 8
        for i in range(n):
            # Cut every node's pub/sub connection right before each publish: Redis runs the
            # kill first, so the publication goes out while nobody listens.
            kill = c.redis_cli("client", "kill", "type", "pubsub")
            expect(kill.returncode == 0 and int(kill.stdout.strip() or 0) >= 3, kill)
            # Retry with an idempotency key: a publish is never lost nor doubled.
            for _ in range(50):
                status, body = await c.api(
                    0, "publish", {"channel": "cut", "data": {"i": i}, "idempotency_key": f"cut-{i}"}
                )
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            expect(status == 200, body)
        await c.wait_broker(up=True)
        await asyncio.sleep(0.5)
        # One more publication once every node is back: it reveals any gap.
        status, body = await c.api(0, "publish", {"channel": "cut", "data": {"i": n}})
        expect(status == 200, body)
        seen = []
        recovered = 0
        deadline = time.monotonic() + 20
        while len(seen) < n + 1:
            p = await sub.next_push(max(0.1, deadline - time.monotonic()))
            if "publication" in p:
                pub = p["publication"]
                expect(pub["epoch"] == epoch and int(pub["offset"]) == last + 1, (last, pub))
                last += 1
                seen.append(pub["data"]["i"])
            elif "unsubscribe" in p:
                # Gap noticed (insufficient state): resubscribe and recover from history.
                recovered += 1
                r = await sub.call("subscribe", {"channel": "cut", "recover": {"offset": last, "epoch": epoch}})
                s = r["subscribe"]
                expect(s.get("recovered") is True, s)
                for pub in s.get("publications", []):
                    expect(int(pub["offset"]) == last + 1, (last, pub))
                    last += 1
                    seen.append(pub["data"]["i"])
        expect(seen == list(range(n + 1)), seen)
        print(f"INFO pubsub-cut: {n + 1} publications, {recovered} recoveries", flush=True)
    finally:
        await sub.close()


async def turn_udp_url(c, i, user):
    async with http_client(f"http://{c.nodes[i]}") as h:
        r = await h.get("/v1/ice-servers", headers={"Authorization": f"Bearer {jwt(c.secret, user)}"})
    if r.status_code != 200:
        return r.status_code, None
    turn = next(s for s in r.json()["iceServers"] if "username" in s)
    url = next(u for u in turn["urls"] if u.startswith("turn:") and u.endswith("transport=udp"))
    return 200, (url, turn["username"], turn["credential"])


async def relay_kinds(url, username, credential):
    import re

    import aioice

    m = re.match(r"turn:([^:?]+):(\d+)\?transport=udp", url)
    assert m, url
    conn = aioice.Connection(
        ice_controlling=True,
        components=1,
        turn_server=(m.group(1), int(m.group(2))),
        turn_username=username,
        turn_password=credential,
        turn_transport="udp",
        use_ipv6=False,
    )
    try:
        await asyncio.wait_for(conn.gather_candidates(), 20)
    except Exception:  # noqa: BLE001 - a refused allocation may surface as an error
        pass
    kinds = [cand.type for cand in conn.local_candidates]
    await conn.close()
    return kinds


async def turn_across_nodes(c):
    """TURN REST credentials issued by node 0 work on node 1's TURN (one shared secret); a
    revocation made on node 2 stops them on node 1 and node 0 issues no new ones."""
    status, issued = await turn_udp_url(c, 0, "carol")
    expect(status == 200, status)
    status, other = await turn_udp_url(c, 1, "probe")
    expect(status == 200, status)
    node1_url = other[0]
    expect(node1_url != issued[0], (node1_url, issued[0]))
    kinds = await relay_kinds(node1_url, issued[1], issued[2])
    expect("relay" in kinds, kinds)
    async with http_client(f"http://{c.nodes[2]}") as h:
        r = await h.post(
            "/v1/ice-servers/revoke", json={"user": "carol"}, headers={"Authorization": f"apikey {c.key}"}
        )
        expect(r.status_code == 200, r.text)
    deadline = time.monotonic() + 5
    while True:
        status, _ = await turn_udp_url(c, 0, "carol")
        if status == 403 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    expect(status == 403, f"node 0 still issues credentials to a revoked user: {status}")
    kinds = await relay_kinds(node1_url, issued[1], issued[2])
    expect("relay" not in kinds, kinds)


async def main():
    nodes = sys.argv[1].split(",")
    c = Cluster(nodes, sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    victim_addr, victim_pid = sys.argv[6], int(sys.argv[7])
    await check("cross-node-fanout", fanout(c))
    await check("recover-on-another-node", recover_elsewhere(c))
    await check("cluster-presence-join-leave", presence(c))
    await check("cross-node-signaling", signaling(c))
    await check("simultaneous-joins-one-initiator", simultaneous_joins(c))
    await check("turn-credentials-and-revocation-across-nodes", turn_across_nodes(c))
    await check("dead-node-peers-time-out", dead_node(c, victim_addr, victim_pid))
    await check("redis-stop-and-restart", redis_restart(c), limit=90)
    await check("pubsub-cut-no-loss", pubsub_cut(c), limit=90)
    print(f"DONE {failures} failed", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    asyncio.run(main())
