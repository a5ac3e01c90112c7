"""Idle cost: RSS per idle connection of one kind, and what is left once they all close.

Usage: idle.py KIND COUNT ADDR PID
  KIND  ws        WebSocket (switchboard.json), connected and subscribed to one channel
        sse       SSE stream (GET /v1/sse?channel=idle), headers read
        stun-tcp  STUN over TCP, connected, nothing sent
        turn      TURN allocation over UDP (long-term credentials user/pass), one client
                  socket each; ended with a Refresh of lifetime 0 before "closed"
  ADDR  HOST:PORT of the server's listener for KIND; PID the server's process id.

Connections come from 127.0.X.Y source addresses (one per 250) so no per-address cap or
port range runs out. 500 are opened first to warm the allocator and the runtime up; the cost
is (RSS with all open - RSS with the 500) / (COUNT - 500), the lowest of several readings once
idle. Prints one line: `kind=K count=N per_item_bytes=B rss_open_kib=R rss_closed_kib=C
retained_per_item_bytes=D`.
"""

import asyncio
import hashlib
import hmac
import os
import resource
import socket
import struct
import sys
import time

WARM = 500


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def low_rss(pid, settle=1.5, readings=4):
    time.sleep(settle)
    low = rss(pid)
    for _ in range(readings - 1):
        time.sleep(0.5)
        low = min(low, rss(pid))
    return low


def hold():
    """IDLE_HOLD=SECONDS keeps everything open that long before closing (for a heap profiler)."""
    if os.environ.get("IDLE_HOLD"):
        print("holding", flush=True)
        time.sleep(float(os.environ["IDLE_HOLD"]))


def source(i):
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


# --- STUN/TURN over UDP, just enough for an authenticated Allocate ---------------------------

COOKIE = 0x2112A442


def attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def stun_msg(kind, txid, attrs, key=None):
    body = b"".join(attrs)
    if key is None:
        return struct.pack("!HHI", kind, len(body), COOKIE) + txid + body
    head = struct.pack("!HHI", kind, len(body) + 24, COOKIE) + txid
    mac = hmac.new(key, head + body, hashlib.sha1).digest()
    return head + body + attr(0x0008, mac)


def stun_attrs(data):
    kind, length = struct.unpack("!HH", data[:4])
    out, pos = {}, 20
    while pos + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[pos : pos + 4])
        out[t] = data[pos + 4 : pos + 4 + n]
        pos += 4 + n + (4 - n % 4) % 4
    return kind, out


def allocate(sock, server, user, password):
    transport = attr(0x0019, bytes([17, 0, 0, 0]))
    sock.sendto(stun_msg(0x0003, os.urandom(12), [transport]), server)
    kind, a = stun_attrs(sock.recv(2048))
    if kind != 0x0113 or 0x0015 not in a:
        raise RuntimeError(f"expected a 401 with a nonce, got {kind:#06x}")
    realm, nonce = a[0x0014], a[0x0015]
    key = hashlib.md5(f"{user}:{realm.decode()}:{password}".encode()).digest()
    attrs = [attr(0x0006, user.encode()), attr(0x0014, realm), attr(0x0015, nonce), transport]
    sock.sendto(stun_msg(0x0003, os.urandom(12), attrs, key), server)
    kind, _ = stun_attrs(sock.recv(2048))
    if kind != 0x0103:
        raise RuntimeError(f"Allocate failed: {kind:#06x}")
    return attrs[:3], key


def deallocate(sock, server, auth, key):
    """Refresh with LIFETIME 0: the allocation ends now."""
    sock.sendto(stun_msg(0x0004, os.urandom(12), auth + [attr(0x000D, b"\0\0\0\0")], key), server)
    kind, _ = stun_attrs(sock.recv(2048))
    if kind != 0x0104:
        raise RuntimeError(f"Refresh failed: {kind:#06x}")


def open_turn(rng, host, port, held):
    for i in rng:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source(i), 0))
        s.settimeout(5)
        auth, key = allocate(s, (host, port), "user", "pass")
        held.append((s, auth, key))


def open_tcp(rng, host, port, held):
    for i in rng:
        s = socket.socket()
        s.bind((source(i), 0))
        s.connect((host, port))
        held.append(s)


# --- WebSocket and SSE, on asyncio ----------------------------------------------------------


async def open_ws(rng, host, port, held):
    import websockets

    async def one(i):
        ws = await websockets.connect(
            f"ws://{host}:{port}/v1/ws",
            subprotocols=["switchboard.json"],
            compression=None,
            proxy=None,
            local_addr=(source(i), 0),
            open_timeout=30,
        )
        await ws.send('{"id":1,"connect":{}}')
        r = await ws.recv()
        if '"connect"' not in r:
            raise RuntimeError(f"connect refused: {r}")
        await ws.send('{"id":2,"subscribe":{"channel":"idle"}}')
        r = await ws.recv()
        if '"subscribe"' not in r:
            raise RuntimeError(f"subscribe refused: {r}")
        held.append(ws)

    await bounded(rng, one)


async def open_sse(rng, host, port, held):
    async def one(i):
        r, w = await asyncio.open_connection(host, port, local_addr=(source(i), 0))
        w.write(b"GET /v1/sse?channel=idle HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"SSE refused: {head[:80]!r}")
        held.append((r, w))

    await bounded(rng, one)


async def bounded(rng, one, width=200):
    it = iter(rng)

    async def worker():
        for i in it:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(width)))


async def close_async(kind, held):
    if kind == "ws":
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    else:
        for _, w in held:
            w.close()


def main():
    kind, count, addr, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if count + 200 > hard:
        sys.exit(f"idle.py: {count} connections need more than the open-file limit {hard}")
    held = []
    if kind in ("ws", "sse"):
        opener = open_ws if kind == "ws" else open_sse
        loop = asyncio.new_event_loop()
        loop.run_until_complete(opener(range(WARM), host, port, held))
        before = low_rss(pid, settle=0.7, readings=2)
        loop.run_until_complete(opener(range(WARM, count), host, port, held))
        open_ = low_rss(pid)
        hold()
        loop.run_until_complete(close_async(kind, held))
    else:
        opener = open_tcp if kind == "stun-tcp" else open_turn
        opener(range(WARM), host, port, held)
        before = low_rss(pid, settle=0.7, readings=2)
        opener(range(WARM, count), host, port, held)
        open_ = low_rss(pid)
        hold()
        for h in held:
            if kind == "turn":
                deallocate(h[0], (host, port), h[1], h[2])
                h[0].close()
            else:
                h.close()
    closed = low_rss(pid, settle=3.0)
    n = count - WARM
    print(
        f"kind={kind} count={count} per_item_bytes={(open_ - before) // n} "
        f"rss_open_kib={open_ // 1024} rss_closed_kib={closed // 1024} "
        f"retained_per_item_bytes={max(0, closed - before) // n}",
        flush=True,
    )


if __name__ == "__main__":
    main()
