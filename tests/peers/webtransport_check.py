#!/usr/bin/env python3
"""WebTransport over HTTP/3 checks, aioquic as the client. Prints "OK NAME" or "FAIL NAME: why"
lines, then "DONE N failed".

usage: webtransport_check.py HTTPS_ADDR API_KEY [JWT_SECRET] [CHECK...]

The session is an extended CONNECT (`:protocol: webtransport`, `:path: /v1/wt`); each
bidirectional stream opened on it is one hub connection carrying length-prefixed protobuf
frames (u32 big-endian length, then a `Command` up / a `ServerFrame` down). Checks (all by
default): subscribe (connect, subscribe, receive a publication made through the server API over
HTTP/3 on the same QUIC connection), streams (two streams are two independent hub connections),
bad_frame (a malformed frame gets disconnect 3501 and the stream ends), wrong_path (CONNECT to
another path gets 404), second_session (a second CONNECT on the connection gets 409). With
JWT_SECRET (a server started with --jwt-hmac-secret): auth (a token in the connect command sets
the user; a bad one gets error 101 and disconnect 3500). Named only: shutdown (prints "READY
shutdown" with a subscribed stream open, then expects disconnect 3001 when the caller stops the
server).
"""
import asyncio
import json
import os
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aioquic.asyncio.client import connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection  # noqa: E402
from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.events import StreamDataReceived  # noqa: E402

from hub_lib import jwt, pb  # noqa: E402

FAILED = []
RUN = f"{int(time.time() * 1000) % 100000000}"
TIMEOUT = 10


def ok(name):
    print("OK", name, flush=True)


def fail(name, why):
    FAILED.append(name)
    print(f"FAIL {name}: {why}", flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


class WtStream:
    """One bidirectional WebTransport stream: length-prefixed protobuf frames."""

    def __init__(self, client, sid):
        self.client = client
        self.sid = sid
        self.buf = b""
        self.ended = False
        self.data = asyncio.Event()

    def feed(self, data, ended):
        self.buf += data
        self.ended = self.ended or ended
        self.data.set()

    def send_raw(self, data, end=False):
        self.client._quic.send_stream_data(self.sid, data, end_stream=end)
        self.client.transmit()

    def send(self, command):
        body = command.SerializeToString()
        self.send_raw(struct.pack(">I", len(body)) + body)

    async def recv(self, timeout=TIMEOUT):
        """The next ServerFrame, or None when the stream ended."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    frame = pb.ServerFrame()
                    frame.ParseFromString(self.buf[4 : 4 + n])
                    self.buf = self.buf[4 + n :]
                    return frame
            if self.ended:
                expect(not self.buf, f"stream ended inside a frame: {self.buf!r}")
                return None
            self.data.clear()
            await asyncio.wait_for(self.data.wait(), timeout)

    async def reply(self, id_):
        """The reply with this id (pushes before it are skipped)."""
        while True:
            f = await self.recv()
            expect(f is not None, f"stream ended before reply {id_}")
            if f.HasField("reply") and f.reply.id == id_:
                return f.reply

    async def connect(self, token=""):
        self.send(pb.Command(id=1, connect=pb.ConnectRequest(token=token)))
        r = await self.reply(1)
        return r


class WtClient(QuicConnectionProtocol):
    """HTTP/3 with WebTransport enabled. Requests get a queue of h3 events; WebTransport
    streams' bytes bypass aioquic's H3 layer (it does not track the server's half of a
    client-opened WebTransport stream)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.queues = {}
        self.wt = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id in self.wt:
            self.wt[event.stream_id].feed(event.data, event.end_stream)
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, (HeadersReceived, DataReceived)):
                q = self.queues.get(ev.stream_id)
                if q is not None:
                    q.put_nowait(ev)
        if not isinstance(event, StreamDataReceived):
            super().quic_event_received(event)

    def start(self, headers, body=b"", end=True):
        sid = self._quic.get_next_available_stream_id()
        self.queues[sid] = asyncio.Queue()
        self.h3.send_headers(sid, headers, end_stream=end and not body)
        if body:
            self.h3.send_data(sid, body, end_stream=end)
        self.transmit()
        return sid

    async def head(self, sid):
        ev = await asyncio.wait_for(self.queues[sid].get(), TIMEOUT)
        expect(isinstance(ev, HeadersReceived), f"expected headers, got {ev!r}")
        return {k.decode(): v.decode() for k, v in ev.headers}

    async def request(self, method, path, body=b"", headers=()):
        hdrs = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ] + [(k.encode(), v.encode()) for k, v in headers]
        sid = self.start(hdrs, body)
        head, data = {}, b""
        while True:
            ev = await asyncio.wait_for(self.queues[sid].get(), TIMEOUT)
            if isinstance(ev, HeadersReceived):
                head = {k.decode(): v.decode() for k, v in ev.headers}
            else:
                data += ev.data
            if ev.stream_ended:
                return int(head.get(":status", 0)), data

    async def session(self, path="/v1/wt"):
        """Sends the extended CONNECT; returns (status, session id)."""
        sid = self.start(
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path.encode()),
                (b"origin", b"https://localhost"),
            ],
            end=False,
        )
        head = await self.head(sid)
        return int(head.get(":status", 0)), sid

    def stream(self, session_id):
        sid = self.h3.create_webtransport_stream(session_id)
        s = WtStream(self, sid)
        self.wt[sid] = s
        self.transmit()
        return s


def h3(addr, protocol=None):
    """An HTTP/3 connection to `addr` (the self-signed certificate accepted), with `protocol`
    (WtClient by default) as the aioquic protocol class."""
    host, port = addr.rsplit(":", 1)
    c = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name="localhost",
        max_datagram_frame_size=65536,
    )
    c.verify_mode = ssl.CERT_NONE
    return connect(host, int(port), configuration=c, create_protocol=protocol or WtClient)


async def run_checks(checks, names, *args):
    """Runs each named check (40 s each), prints OK/FAIL lines and the DONE summary, exits."""
    for name in names:
        try:
            await asyncio.wait_for(checks[name](*args), 40)
            ok(name)
        except Exception as e:  # noqa: BLE001
            fail(name, f"{type(e).__name__}: {e}")
    print(f"DONE {len(FAILED)} failed", flush=True)
    sys.exit(1 if FAILED else 0)


async def opened(client):
    status, session = await client.session()
    expect(status == 200, f"CONNECT /v1/wt: status {status}")
    return session


# ---------------------------------------------------------------- checks


async def check_subscribe(addr, key, secret):
    async with h3(addr) as client:
        session = await opened(client)
        s = client.stream(session)
        r = await s.connect()
        expect(r.HasField("connect") and r.connect.client_id, f"connect: {r}")
        channel = f"wtnews-{RUN}"
        s.send(pb.Command(id=2, subscribe=pb.SubscribeRequest(channel=channel)))
        r = await s.reply(2)
        expect(r.HasField("subscribe"), f"subscribe: {r}")
        # The server API over HTTP/3 on the same connection as the session.
        status, body = await client.request(
            "POST",
            "/v1/api/publish",
            json.dumps({"channel": channel, "data": {"n": 42}}).encode(),
            [("authorization", f"apikey {key}"), ("content-type", "application/json")],
        )
        expect(status == 200, f"publish: {status} {body!r}")
        while True:
            f = await s.recv()
            expect(f is not None, "stream ended before the publication")
            if f.HasField("push") and f.push.HasField("publication"):
                p = f.push.publication
                expect(p.channel == channel, f"publication on {p.channel}")
                expect(json.loads(p.data) == {"n": 42}, f"data {p.data!r}")
                break
        status, _ = await client.request("GET", "/healthz")
        expect(status == 200, f"healthz on the session's connection: {status}")


async def check_streams(addr, key, secret):
    async with h3(addr) as client:
        session = await opened(client)
        a, b = client.stream(session), client.stream(session)
        ra, rb = await a.connect(), await b.connect()
        expect(ra.HasField("connect") and rb.HasField("connect"), f"{ra} {rb}")
        expect(ra.connect.client_id != rb.connect.client_id, "one client id for two streams")
        # A ends (FIN); B still answers.
        a.send_raw(b"", end=True)
        b.send(pb.Command(id=2, presence=pb.PresenceRequest(channel=f"wtp-{RUN}")))
        r = await b.reply(2)
        expect(r.id == 2, f"presence: {r}")


async def check_bad_frame(addr, key, secret):
    async with h3(addr) as client:
        session = await opened(client)
        s = client.stream(session)
        r = await s.connect()
        expect(r.HasField("connect"), f"connect: {r}")
        s.send_raw(struct.pack(">I", 3) + b"\xff\xff\xff")
        last = None
        while True:
            f = await s.recv()
            if f is None:
                break
            last = f
        expect(
            last is not None
            and last.HasField("push")
            and last.push.HasField("disconnect")
            and last.push.disconnect.code == 3501,
            f"last frame {last}",
        )


async def check_wrong_path(addr, key, secret):
    async with h3(addr) as client:
        status, _ = await client.session("/v1/nope")
        expect(status == 404, f"CONNECT /v1/nope: {status}")
        # The connection still serves a session at the right path.
        await opened(client)


async def check_second_session(addr, key, secret):
    async with h3(addr) as client:
        session = await opened(client)
        status, _ = await client.session()
        expect(status == 409, f"second CONNECT: {status}")
        s = client.stream(session)
        r = await s.connect()
        expect(r.HasField("connect"), f"connect after the refused CONNECT: {r}")


async def check_auth(addr, key, secret):
    expect(secret, "needs JWT_SECRET")
    async with h3(addr) as client:
        session = await opened(client)
        s = client.stream(session)
        r = await s.connect(jwt(secret, "wt-alice"))
        expect(r.HasField("connect") and r.connect.user == "wt-alice", f"connect: {r}")
        bad = client.stream(session)
        r = await bad.connect(jwt("not-the-secret", "mallory"))
        expect(r.HasField("error") and r.error.code == 101, f"bad token: {r}")
        f = await bad.recv()
        expect(
            f is not None and f.HasField("push") and f.push.disconnect.code == 3500,
            f"after a bad token: {f}",
        )


async def check_shutdown(addr, key, secret):
    """Prints READY with a subscribed stream open, then expects disconnect 3001 (the caller
    stops the server)."""
    async with h3(addr) as client:
        session = await opened(client)
        s = client.stream(session)
        r = await s.connect()
        expect(r.HasField("connect"), f"connect: {r}")
        s.send(pb.Command(id=2, subscribe=pb.SubscribeRequest(channel=f"wtstop-{RUN}")))
        await s.reply(2)
        print("READY shutdown", flush=True)
        last = None
        while True:
            f = await s.recv(timeout=25)
            if f is None:
                break
            last = f
        expect(
            last is not None and last.push.disconnect.code == 3001,
            f"last frame before the stream ended: {last}",
        )


CHECKS = {
    "subscribe": check_subscribe,
    "streams": check_streams,
    "bad_frame": check_bad_frame,
    "wrong_path": check_wrong_path,
    "second_session": check_second_session,
    "auth": check_auth,
    "shutdown": check_shutdown,
}
DEFAULT = ["subscribe", "streams", "bad_frame", "wrong_path", "second_session"]


async def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    addr, key = sys.argv[1], sys.argv[2]
    rest = sys.argv[3:]
    secret = None
    if rest and rest[0] not in CHECKS:
        secret, rest = rest[0], rest[1:]
    names = rest or DEFAULT + (["auth"] if secret else [])
    await run_checks(CHECKS, names, addr, key, secret)


if __name__ == "__main__":
    asyncio.run(main())
