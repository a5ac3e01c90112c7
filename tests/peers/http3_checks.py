#!/usr/bin/env python3
"""HTTP/3 checks with aioquic as the client. Prints "OK NAME" or "FAIL NAME: why" lines, then
"DONE N failed".

usage: http3_checks.py HTTPS_ADDR HTTP_ADDR API_KEY [CHECK...]

HTTPS_ADDR is the https address (TCP and UDP share the port), HTTP_ADDR the plain HTTP one (the
server API is called there with httpx, so publications come from outside the h3 connection).
Checks (all by default): healthz, publish, sse, poll, big_body, migration, zero_rtt,
key_exchange, alt_svc. Named only, for servers set up for them: retry (--quic-retry), limit
([http3] max_connections = 1), idle (--http3-idle-timeout 2 --http3-keep-alive 0), keep_alive
(--http3-idle-timeout 2 --http3-keep-alive 1).
"""
import asyncio
import json
import socket
import ssl
import sys
import time

import httpx
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import HandshakeCompleted, StreamDataReceived

FAILED = []
RUN = f"{int(time.time() * 1000) % 100000000}"


def ok(name):
    print("OK", name, flush=True)


def fail(name, why):
    FAILED.append(name)
    print(f"FAIL {name}: {why}", flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


class H3Client(QuicConnectionProtocol):
    """A minimal HTTP/3 client: one queue of h3 events per request stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.queues = {}
        self.handshake = None

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
        for ev in self.h3.handle_event(event):
            if isinstance(ev, (HeadersReceived, DataReceived)):
                q = self.queues.get(ev.stream_id)
                if q is not None:
                    q.put_nowait(ev)
        if not isinstance(event, StreamDataReceived):
            # Handshake, connection ids, termination; stream data belongs to h3 alone.
            super().quic_event_received(event)

    def start(self, method, path, body=b"", headers=()):
        sid = self._quic.get_next_available_stream_id()
        self.queues[sid] = asyncio.Queue()
        hdrs = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic-switchboard-test"),
        ] + [(k.encode(), v.encode()) for k, v in headers]
        self.h3.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        return sid

    async def events(self, sid):
        """Yields ("headers", dict) then ("data", bytes) items until the stream ends."""
        q = self.queues[sid]
        while True:
            ev = await q.get()
            if isinstance(ev, HeadersReceived):
                yield "headers", {k.decode(): v.decode() for k, v in ev.headers}
            else:
                yield "data", ev.data
            if ev.stream_ended:
                return

    async def request(self, method, path, body=b"", headers=()):
        sid = self.start(method, path, body, headers)
        head, data = {}, b""
        async for kind, v in self.events(sid):
            if kind == "headers":
                head = v
            else:
                data += v
        return int(head.get(":status", 0)), head, data


def config(**kw):
    c = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost", **kw)
    c.verify_mode = ssl.CERT_NONE
    return c


def h3(addr, **kw):
    host, port = addr.rsplit(":", 1)
    return connect(host, int(port), configuration=config(), create_protocol=H3Client, **kw)


async def api(http, key, method, body):
    async with httpx.AsyncClient(base_url=f"http://{http}", trust_env=False, timeout=10) as c:
        r = await c.post(
            f"/v1/api/{method}", json=body, headers={"Authorization": f"apikey {key}"}
        )
        expect(r.status_code == 200, f"{method}: {r.status_code} {r.text}")
        return r.json()


def metric(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------- checks


async def healthz(https, http, key):
    async with h3(https) as c:
        status, head, body = await c.request("GET", "/healthz")
        expect(status == 200, f"status {status}")
        j = json.loads(body)
        expect(j["status"] == "ok", j)
        udp = [l for l in j["components"]["listeners"] if l["transport"] == "udp"]
        expect(udp and udp[0]["protocol"] in ("https", "listen"), j["components"]["listeners"])
        expect(c._quic.tls.alpn_negotiated == "h3", c._quic.tls.alpn_negotiated)


async def publish(https, http, key):
    async with h3(https) as c:
        body = json.dumps({"channel": f"h3pub-{RUN}", "data": {"text": "over h3"}}).encode()
        status, _, data = await c.request(
            "POST", "/v1/publish", body, [("content-type", "application/json")]
        )
        expect(status == 200, f"status {status}: {data!r}")
        res = json.loads(data)["result"]
        expect(res["offset"] == "1", res)
        # The publication is in history: read it back through the server API.
        hist = await api(http, key, "history", {"channel": f"h3pub-{RUN}", "limit": 10})
        pubs = hist["result"]["publications"]
        expect(pubs and pubs[0]["data"] == {"text": "over h3"}, hist)


async def sse(https, http, key):
    async with h3(https) as c:
        sid = c.start("GET", f"/v1/sse?channel=h3news-{RUN}")
        events = c.events(sid)
        kind, head = await events.__anext__()
        expect(head.get(":status") == "200", head)
        expect(head.get("content-type", "").startswith("text/event-stream"), head)
        buf, frames, published = b"", [], False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kind, data = await asyncio.wait_for(events.__anext__(), 10)
            buf += data
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                for line in ev.decode().splitlines():
                    if line.startswith("data:"):
                        frames.append(json.loads(line[5:]))
            subscribed = any("subscribe" in f.get("reply", {}) for f in frames)
            if subscribed and not published:
                await api(http, key, "publish", {"channel": f"h3news-{RUN}", "data": {"n": 42}})
                published = True
            pubs = [f["push"]["publication"] for f in frames if "publication" in f.get("push", {})]
            if pubs:
                expect(pubs[0]["data"] == {"n": 42}, pubs)
                expect(pubs[0]["channel"] == f"h3news-{RUN}", pubs)
                return
        raise AssertionError(f"no publication within 10 s: {frames}")


async def poll(https, http, key):
    async with h3(https) as c:
        status, _, data = await c.request("GET", f"/v1/poll?channel=h3poll-{RUN}&timeout=0")
        expect(status == 200, f"first poll {status} {data!r}")
        cursor = json.loads(data)["cursor"]
        started = time.monotonic()
        waiting = asyncio.ensure_future(
            c.request("GET", f"/v1/poll?channel=h3poll-{RUN}&since={cursor}&timeout=10")
        )
        await asyncio.sleep(0.5)
        expect(not waiting.done(), "long-poll answered before any publication")
        await api(http, key, "publish", {"channel": f"h3poll-{RUN}", "data": {"k": "v"}})
        status, _, data = await asyncio.wait_for(waiting, 10)
        expect(status == 200, f"long-poll {status} {data!r}")
        j = json.loads(data)
        expect([p["data"] for p in j["publications"]] == [{"k": "v"}], j)
        expect(time.monotonic() - started < 8, "long-poll did not end on the publication")


async def big_body(https, http, key):
    """A request body larger than one QUIC packet and one h3 DATA frame arrives whole."""
    async with h3(https) as c:
        text = "x" * 40000
        body = json.dumps({"channel": f"h3big-{RUN}", "data": {"text": text}}).encode()
        status, _, data = await c.request(
            "POST", "/v1/publish", body, [("content-type", "application/json")]
        )
        expect(status == 200, f"status {status}: {data[:200]!r}")
        hist = await api(http, key, "history", {"channel": f"h3big-{RUN}", "limit": 1})
        expect(hist["result"]["publications"][0]["data"]["text"] == text, "body mangled")


async def migration(https, http, key):
    """The client moves to a new UDP port (new socket, new connection ID) mid-connection."""
    async with h3(https) as c:
        status, _, _ = await c.request("GET", "/healthz")
        expect(status == 200, f"before: {status}")
        old = c._transport.get_extra_info("sockname")[1]
        _, _, text = await c.request("GET", "/metrics")
        before = metric(text.decode(), "switchboard_http3_migrations_total")
        # Rebind: a fresh socket on another port becomes the protocol's transport.
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
        loop = asyncio.get_running_loop()
        old_transport = c._transport
        await loop.create_datagram_endpoint(lambda: c, sock=sock)
        new = c._transport.get_extra_info("sockname")[1]
        expect(new != old, "socket did not change port")
        old_transport.close()
        c.change_connection_id()
        for i in range(3):
            status, _, _ = await asyncio.wait_for(c.request("GET", "/healthz"), 10)
            expect(status == 200, f"after migration, request {i}: {status}")
        _, _, text = await c.request("GET", "/metrics")
        after = metric(text.decode(), "switchboard_http3_migrations_total")
        expect(after >= before + 1, f"server saw no migration ({before} -> {after})")
        print(f"INFO migration: port {old} -> {new}, same connection", flush=True)


async def zero_rtt(https, http, key):
    """Resumption with 0-RTT: GET is served from early data, POST gets 425, then succeeds."""
    tickets = []
    host, port = https.rsplit(":", 1)
    async with connect(
        host,
        int(port),
        configuration=config(),
        create_protocol=H3Client,
        session_ticket_handler=tickets.append,
    ) as c:
        status, _, _ = await c.request("GET", "/healthz")
        expect(status == 200, f"first connection: {status}")
        await asyncio.sleep(0.2)
    expect(tickets, "no session ticket received")
    cfg = config()
    cfg.session_ticket = tickets[-1]
    async with connect(
        host, int(port), configuration=cfg, create_protocol=H3Client, wait_connected=False
    ) as c:
        body = json.dumps({"channel": f"h3early-{RUN}", "data": {"replay": "me"}}).encode()
        post = asyncio.ensure_future(
            c.request("POST", "/v1/publish", body, [("content-type", "application/json")])
        )
        get = asyncio.ensure_future(c.request("GET", "/healthz"))
        pstatus, _, pdata = await asyncio.wait_for(post, 10)
        gstatus, _, _ = await asyncio.wait_for(get, 10)
        # (aioquic's wait_connected() only notices a handshake completed while it waits.)
        for _ in range(100):
            if c.handshake is not None:
                break
            await asyncio.sleep(0.05)
        hs = c.handshake
        expect(hs is not None and hs.session_resumed, "not resumed")
        expect(hs.early_data_accepted, "server refused early data")
        expect(gstatus == 200, f"GET in 0-RTT: {gstatus}")
        expect(pstatus == 425, f"POST in 0-RTT: {pstatus} {pdata!r}")
        # After the handshake the same request is served.
        status, _, data = await c.request(
            "POST", "/v1/publish", body, [("content-type", "application/json")]
        )
        expect(status == 200, f"POST after handshake: {status} {data!r}")
        hist = await api(http, key, "history", {"channel": f"h3early-{RUN}", "limit": 10})
        expect(len(hist["result"]["publications"]) == 1, f"published twice? {hist}")


async def key_exchange(https, http, key):
    """aioquic lists secp256r1 first (with key shares for every group); the server's
    preference picks X25519 anyway."""
    async with h3(https) as c:
        _, _, before = await c.request("GET", "/metrics")
    async with h3(https) as c:
        _, _, after = await c.request("GET", "/metrics")
    s = 'switchboard_tls_key_exchange_total{listener="quic",group="X25519"}'
    b, a = metric(before.decode(), s), metric(after.decode(), s)
    expect(a == b + 1, f"{s}: {b} -> {a}\n{after.decode()}")


async def alt_svc(https, http, key):
    port = https.rsplit(":", 1)[1]
    want = f'h3=":{port}"; ma=86400'
    for http2 in (False, True):
        async with httpx.AsyncClient(
            http1=not http2, http2=http2, verify=False, trust_env=False, timeout=10
        ) as c:
            r = await c.get(f"https://{https}/healthz")
            expect(r.status_code == 200, r.status_code)
            expect(r.http_version == ("HTTP/2" if http2 else "HTTP/1.1"), r.http_version)
            expect(r.headers.get("alt-svc") == want, f"{r.http_version}: {r.headers}")
    # Plain HTTP does not advertise it.
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        r = await c.get(f"http://{http}/healthz")
        expect("alt-svc" not in r.headers, r.headers)


# ------------------------------------------- checks for servers with special [http3] settings


async def retry(https, http, key):
    """Server started with --quic-retry: every new connection is validated by a Retry."""
    async with h3(https) as c:
        _, _, before = await c.request("GET", "/metrics")
    async with h3(https) as c:
        status, _, after = await c.request("GET", "/metrics")
        expect(status == 200, status)
    s = "switchboard_http3_retries_total"
    b, a = metric(before.decode(), s), metric(after.decode(), s)
    expect(b >= 1 and a == b + 1, f"{s}: {b} -> {a}")


async def limit(https, http, key):
    """Server with [http3] max_connections = 1: a second connection is refused while the
    first is open, and accepted once it is gone."""
    async with h3(https) as first:
        status, _, _ = await first.request("GET", "/healthz")
        expect(status == 200, status)
        try:
            async with h3(https) as second:
                await asyncio.wait_for(second.request("GET", "/healthz"), 3)
            raise AssertionError("second connection was accepted")
        except (ConnectionError, asyncio.TimeoutError):
            pass
    await asyncio.sleep(0.3)
    async with h3(https) as again:
        status, _, text = await again.request("GET", "/metrics")
        expect(status == 200, status)
        refused = metric(
            text.decode(), 'switchboard_http3_connections_refused_total{reason="limit"}'
        )
        expect(refused >= 1, f"refused counter {refused}")


async def idle(https, http, key):
    """Server with idle_timeout 2 s and no keep-alive: a quiet connection is closed."""
    async with h3(https) as c:
        status, _, _ = await c.request("GET", "/healthz")
        expect(status == 200, status)
        await asyncio.wait_for(c.wait_closed(), 6)


async def keep_alive(https, http, key):
    """Server with idle_timeout 2 s and keep_alive 1 s: its PINGs keep a quiet client's
    connection open past the idle timeout."""
    async with h3(https) as c:
        await c.request("GET", "/healthz")
        await asyncio.sleep(4)
        expect(not c._closed.is_set(), "connection closed despite keep-alive")
        status, _, _ = await asyncio.wait_for(c.request("GET", "/healthz"), 5)
        expect(status == 200, status)


async def cert(https, http, key):
    """Prints the SHA-256 fingerprint of the certificate a new QUIC connection sees."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    async with h3(https) as c:
        der = c._quic.tls._peer_certificate.public_bytes(Encoding.DER)
        fp = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        print(f"CERT {fp}", flush=True)


CHECKS = [healthz, publish, sse, poll, big_body, migration, zero_rtt, key_exchange, alt_svc]
SPECIAL = [retry, limit, idle, keep_alive, cert]


async def main(argv):
    https, http, key = argv[:3]
    wanted = argv[3:] or [c.__name__ for c in CHECKS]
    for check in CHECKS + SPECIAL:
        if check.__name__ not in wanted:
            continue
        try:
            await asyncio.wait_for(check(https, http, key), 30)
            ok(check.__name__)
        except Exception as e:  # noqa: BLE001 - report and go on
            fail(check.__name__, repr(e))
    print(f"DONE {len(FAILED)} failed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
