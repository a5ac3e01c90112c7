#!/usr/bin/env python3
"""How WebTransport sessions end (draft-ietf-webtrans-http3, "Session Termination"), aioquic as
the client. Prints "OK NAME" or "FAIL NAME: why" lines, then "DONE N failed".

usage: webtransport_close.py HTTPS_ADDR HTTP_ADDR API_KEY [CHECK...]

Each check opens a session on `/v1/wt` (HTTPS_ADDR, UDP) and subscribes hub connections
(bidirectional streams, webtransport_check.py's framing) to a channel of its own, checks their
presence through the server API (`POST /v1/api/presence_stats` on HTTP_ADDR, plain TCP: the
session's QUIC connection may be gone by then), then ends the session from the client side:

  capsule  two streams; a CLOSE_WEBTRANSPORT_SESSION capsule (0x2843, code 4001, "bye") in a
           DATA frame, then FIN, on the CONNECT stream. Within 2 s: both streams are reset by
           the server with WT_SESSION_GONE (0x170d7b68), the server FINs its side of the CONNECT
           stream, and presence is empty.
  fin      one stream; only FIN on the CONNECT stream (a close with code 0): the same.
  reset    one stream; RESET_STREAM on the CONNECT stream: the stream is reset by the server
           and presence is empty within 2 s.

Named only: shutdown (prints "READY shutdown" with a subscribed stream open; the caller stops
the server; expects disconnect 3001 and FIN on the stream, then a CLOSE_WEBTRANSPORT_SESSION
capsule with code 3001 and FIN on the CONNECT stream).
"""
import asyncio
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402
from aioquic.h3.events import DataReceived  # noqa: E402
from aioquic.quic.events import StopSendingReceived, StreamReset  # noqa: E402

from hub_lib import pb  # noqa: E402
from webtransport_check import WtClient, expect, fail, ok, FAILED, RUN, run_checks  # noqa: E402
from webtransport_check import h3 as wt_h3  # noqa: E402

CLOSE_WEBTRANSPORT_SESSION = 0x2843
WT_SESSION_GONE = 0x170D7B68
H3_REQUEST_CANCELLED = 0x10C


def varint(n):
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", n | 0x4000)
    if n < 1 << 30:
        return struct.pack(">I", n | 0x80000000)
    return struct.pack(">Q", n | 0xC000000000000000)


def read_varint(buf, i):
    first = buf[i]
    n = 1 << (first >> 6)
    v = first & 0x3F
    for b in buf[i + 1 : i + n]:
        v = (v << 8) | b
    return v, i + n


def close_capsule(code, reason):
    value = struct.pack(">I", code) + reason.encode()
    return varint(CLOSE_WEBTRANSPORT_SESSION) + varint(len(value)) + value


def capsules(data):
    """(type, value) of every capsule in `data`."""
    out, i = [], 0
    while i < len(data):
        t, i = read_varint(data, i)
        n, i = read_varint(data, i)
        out.append((t, data[i : i + n]))
        i += n
    return out


class Client(WtClient):
    """WtClient that also records what the server does to the WebTransport streams: RESET_STREAM
    (`reset`, the error code) and STOP_SENDING (`stopped`)."""

    def quic_event_received(self, event):
        if isinstance(event, (StreamReset, StopSendingReceived)) and event.stream_id in self.wt:
            s = self.wt[event.stream_id]
            if isinstance(event, StreamReset):
                s.reset = event.error_code
                s.ended = True
            else:
                s.stopped = event.error_code
            s.data.set()
            return
        super().quic_event_received(event)


def h3(addr):
    return wt_h3(addr, Client)


async def presence_clients(http, key, channel):
    async with httpx.AsyncClient() as c:
        r = await c.post(
            f"http://{http}/v1/api/presence_stats",
            json={"channel": channel},
            headers={"authorization": f"apikey {key}"},
        )
    expect(r.status_code == 200, f"presence_stats: {r.status_code} {r.text}")
    return r.json().get("result", {}).get("numClients", 0)


async def subscribed(client, session, channel, n):
    streams = []
    for _ in range(n):
        s = client.stream(session)
        s.reset = s.stopped = None
        r = await s.connect()
        expect(r.HasField("connect"), f"connect: {r}")
        s.send(pb.Command(id=2, subscribe=pb.SubscribeRequest(channel=channel)))
        r = await s.reply(2)
        expect(r.HasField("subscribe"), f"subscribe: {r}")
        streams.append(s)
    return streams


async def connect_stream_end(client, session, timeout=2):
    """What the server sends on the CONNECT stream until its FIN: the DATA bytes. None when no
    FIN came within `timeout`."""
    data = b""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        try:
            ev = await asyncio.wait_for(client.queues[session].get(), left)
        except asyncio.TimeoutError:
            return None
        if isinstance(ev, DataReceived):
            data += ev.data
        if ev.stream_ended:
            return data


async def gone_within(http, key, channel, seconds):
    end = time.monotonic() + seconds
    n = None
    while time.monotonic() < end:
        n = await presence_clients(http, key, channel)
        if n == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} client(s) still in presence {seconds} s after the session ended")


async def ended_session(addr, http, key, name, n, end_session, expect_fin):
    channel = f"wtclose-{name}-{RUN}"
    async with h3(addr) as client:
        status, session = await client.session()
        expect(status == 200, f"CONNECT /v1/wt: {status}")
        streams = await subscribed(client, session, channel, n)
        got = await presence_clients(http, key, channel)
        expect(got == n, f"{got} clients in presence before the close, expected {n}")
        started = time.monotonic()
        end_session(client, session)
        client.transmit()
        if expect_fin:
            data = await connect_stream_end(client, session)
            expect(data is not None, "the server did not FIN its side of the CONNECT stream")
        await gone_within(http, key, channel, 2)
        took = time.monotonic() - started
        for i, s in enumerate(streams):
            end = time.monotonic() + 2
            while s.reset is None and time.monotonic() < end:
                s.data.clear()
                try:
                    await asyncio.wait_for(s.data.wait(), end - time.monotonic())
                except asyncio.TimeoutError:
                    break
            expect(
                s.reset == WT_SESSION_GONE,
                f"stream {i}: reset {s.reset} (stop_sending {s.stopped}), expected WT_SESSION_GONE",
            )
        print(f"  {name}: hub connections gone after {took * 1000:.0f} ms", flush=True)


async def check_capsule(addr, http, key):
    def end(client, session):
        client.h3.send_data(session, close_capsule(4001, "bye"), end_stream=True)

    await ended_session(addr, http, key, "capsule", 2, end, True)


async def check_fin(addr, http, key):
    def end(client, session):
        client.h3.send_data(session, b"", end_stream=True)

    await ended_session(addr, http, key, "fin", 1, end, True)


async def check_reset(addr, http, key):
    def end(client, session):
        client._quic.reset_stream(session, H3_REQUEST_CANCELLED)

    await ended_session(addr, http, key, "reset", 1, end, False)


async def check_shutdown(addr, http, key):
    async with h3(addr) as client:
        status, session = await client.session()
        expect(status == 200, f"CONNECT /v1/wt: {status}")
        (s,) = await subscribed(client, session, f"wtclose-shutdown-{RUN}", 1)
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
        expect(s.reset is None, f"the stream was reset ({s.reset}), not finished")
        data = await connect_stream_end(client, session, timeout=10)
        expect(data is not None, "no FIN on the CONNECT stream")
        caps = capsules(data)
        close = [v for t, v in caps if t == CLOSE_WEBTRANSPORT_SESSION]
        expect(len(close) == 1, f"capsules on the CONNECT stream: {caps}")
        code = struct.unpack(">I", close[0][:4])[0]
        reason = close[0][4:].decode()
        expect(code == 3001, f"close code {code} ({reason!r})")
        print(f"  shutdown: close capsule {code} {reason!r}", flush=True)


CHECKS = {
    "capsule": check_capsule,
    "fin": check_fin,
    "reset": check_reset,
    "shutdown": check_shutdown,
}
DEFAULT = ["capsule", "fin", "reset"]


async def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    addr, http, key = sys.argv[1:4]
    names = sys.argv[4:] or DEFAULT
    await run_checks(CHECKS, names, addr, http, key)


if __name__ == "__main__":
    asyncio.run(main())
