#!/usr/bin/env python3
"""A file-transfer peer that nobody here wrote the WebRTC stack of (aiortc), for `switchboard
send --manual` / `receive --manual`.

usage: transfer_aiortc.py send    --offer-file F --answer-file F [--host-ip IP] [--corrupt] PATH...
       transfer_aiortc.py receive --offer-file F --answer-file F [--host-ip IP] --output DIR

Signalling is `--manual`'s, through files: `send` offers (it opens the `switchboard-send` data
channel), writes its offer as `sb1:` text to the offer file and waits for the answer file;
`receive` waits for the offer file and writes its answer. The `sb1:` packing is implemented here
from its description in docs/send.md (not from the Rust code), both ways.

On the data channel it speaks the file protocol of crates/transfer/src/wire.rs: `M` manifest
(JSON), then back `G` (go: records of file u32 and offset u64, where files resume), `C` chunks
(file u32, offset u64, SHA-256 of the chunk, data), `E` end of file (file u32, size u64, SHA-256
of the whole file), `D` done; back `A` (file u32) per kept file and `K`; `X` aborts.
Receiving, it answers the manifest with an empty `G` (it keeps no parts), checks every chunk's
hash and each file's size and hash against `E` before it keeps the file (else it sends `X` and
exits 1); sending, it waits for `G`, refuses (`X`, exit 1) a record that is not a file of known
size, not a multiple of 64 KiB, beyond the size or repeated, hashes the part of a resumed file
the receiver holds without sending it, and `--corrupt` gives the first file a wrong whole-file
hash in `E` (the receiver must refuse it).

It prints one JSON line (files with size and SHA-256, bytes, the selected pair) and exits 0, or
exits 1 with the reason on stderr. Everything is bounded (50 s).
"""
import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import os
import struct
import sys

try:
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
except ImportError as e:  # pragma: no cover - a clear message for a missing venv package
    print(f"transfer_aiortc: {e}: run scripts/test-deps (tests/requirements.txt)", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 50
LABEL = "switchboard-send"
CHUNK = 64 * 1024
PREFIX = "sb1:"
TYPES = ["host", "srflx", "prflx", "relay"]
TYPE_PREF = [126, 100, 110, 0]
SETUPS = ["actpass", "active", "passive"]


class PeerError(Exception):
    """Why the transfer failed (stderr, exit 1)."""


def fail(msg):
    raise PeerError(msg)


# --- sb1: packing (docs/send.md) -------------------------------------------------------------


def pack(sdp, kind):
    """An SDP with one data channel -> `sb1:` text."""
    ufrag = pwd = mid = None
    setup = None
    fingerprint = None
    sctp_port, max_size = 5000, 0
    cands = []
    for line in sdp.splitlines():
        line = line.strip()
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        value = value.strip()
        if name == "ice-ufrag" and ufrag is None:
            ufrag = value
        elif name == "ice-pwd" and pwd is None:
            pwd = value
        elif name == "mid" and mid is None:
            mid = value
        elif name == "setup" and setup is None:
            setup = SETUPS.index(value)
        elif name == "fingerprint" and fingerprint is None:
            alg, fp = value.split(None, 1)
            if alg.lower() == "sha-256":
                fingerprint = bytes.fromhex(fp.replace(":", ""))
        elif name == "sctp-port":
            sctp_port = int(value)
        elif name == "max-message-size":
            max_size = min(int(value), 0xFFFFFFFF)
        elif name == "candidate":
            f = value.split()
            if len(f) >= 8 and f[1] == "1" and f[2].lower() == "udp" and f[6] == "typ" and f[7] in TYPES:
                try:
                    ip = ipaddress.ip_address(f[4])
                except ValueError:
                    continue
                c = (TYPES.index(f[7]), ip, int(f[5]))
                if c not in cands:
                    cands.append(c)
    if None in (ufrag, pwd, mid, fingerprint) or not cands:
        fail(f"cannot pack this SDP: {sdp!r}")
    if setup is None:
        setup = 0 if kind == "O" else 1
    out = bytearray(kind.encode())
    out.append(setup)
    out += fingerprint
    out += struct.pack(">HI", sctp_port, max_size)
    for s in (ufrag, pwd, mid):
        out.append(len(s))
        out += s.encode()
    out.append(len(cands))
    for t, ip, port in cands:
        out.append(t | (0x80 if ip.version == 6 else 0))
        out += ip.packed
        out += struct.pack(">H", port)
    return PREFIX + base64.urlsafe_b64encode(bytes(out)).decode().rstrip("=")


def unpack(text, kind):
    """`sb1:` text -> an SDP (the expansion docs/send.md describes)."""
    text = "".join(text.split())
    at = text.lower().find(PREFIX)
    if at < 0:
        fail(f"no {PREFIX} in {text!r}")
    body = text[at + len(PREFIX) :]
    end = len(body)
    for i, ch in enumerate(body):
        if not (ch.isalnum() or ch in "-_"):
            end = i
            break
    body = body[:end]
    b = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if b[0:1] != kind.encode():
        fail(f"expected kind {kind!r}, got {b[0:1]!r}")
    setup = SETUPS[b[1]]
    fingerprint = b[2:34]
    sctp_port, max_size = struct.unpack(">HI", b[34:40])
    pos = 40
    strings = []
    for _ in range(3):
        n = b[pos]
        strings.append(b[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    ufrag, pwd, mid = strings
    count = b[pos]
    pos += 1
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        f"a=mid:{mid}",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        "a=fingerprint:sha-256 " + ":".join(f"{x:02X}" for x in fingerprint),
        f"a=setup:{setup}",
        f"a=sctp-port:{sctp_port}",
    ]
    if max_size:
        lines.append(f"a=max-message-size:{max_size}")
    for i in range(count):
        t = b[pos]
        pos += 1
        n = 16 if t & 0x80 else 4
        ip = ipaddress.ip_address(b[pos : pos + n])
        pos += n
        (port,) = struct.unpack(">H", b[pos : pos + 2])
        pos += 2
        t &= 0x7F
        prio = (TYPE_PREF[t] << 24) | ((65535 - i) << 8) | 255
        line = f"a=candidate:{i + 1} 1 udp {prio} {ip} {port} typ {TYPES[t]}"
        if t != 0:
            line += f" raddr {'0.0.0.0' if ip.version == 4 else '::'} rport 0"
        lines.append(line)
    if pos != len(b):
        fail("bytes left after the candidates")
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def write_atomic(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


async def wait_text(path, kind):
    """The SDP in `path` once it holds a complete `sb1:` text of this kind."""
    while True:
        try:
            with open(path) as f:
                text = f.read()
            if PREFIX in text.lower() and text.endswith("\n"):
                return unpack(text, kind)
        except FileNotFoundError:
            pass
        await asyncio.sleep(0.05)


# --- the file protocol (crates/transfer/src/wire.rs) ---------------------------------------


def safe_path(p):
    parts = p.split("/")
    if not p or p.startswith("/") or "\\" in p or "\0" in p or any(c in ("", ".", "..") for c in parts):
        fail(f"unsafe path {p!r}")
    return os.path.join(*parts)


def collect(paths):
    """(manifest entries, local paths) like `switchboard send`: directories walked, sorted."""
    entries, local = [], []

    def add(path, rel):
        st = os.stat(path)
        if os.path.isdir(path):
            entries.append({"path": rel, "dir": True, "size": None, "mode": st.st_mode & 0o7777, "mtime": int(st.st_mtime)})
            local.append(None)
            for name in sorted(os.listdir(path)):
                add(os.path.join(path, name), f"{rel}/{name}")
        else:
            entries.append({"path": rel, "dir": False, "size": st.st_size, "mode": st.st_mode & 0o7777, "mtime": int(st.st_mtime)})
            local.append(path)

    for p in paths:
        add(p, os.path.basename(os.path.abspath(p)))
    return entries, local


class Channel:
    """The data channel's messages on a queue; waits for back-pressure."""

    def __init__(self, dc):
        self.dc = dc
        self.queue = asyncio.Queue()
        self.closed = asyncio.Event()
        dc.on("message", lambda m: self.queue.put_nowait(m))
        dc.on("close", lambda: (self.closed.set(), self.queue.put_nowait(None)))

    async def recv(self):
        m = await self.queue.get()
        if m is None:
            fail("the data channel closed")
        if isinstance(m, str):
            fail(f"a text message on the data channel: {m!r}")
        return m

    async def send(self, data):
        while self.dc.bufferedAmount > 1 << 20:
            if self.closed.is_set():
                fail("the data channel closed")
            await asyncio.sleep(0.005)
        self.dc.send(data)

    async def drain(self):
        while self.dc.bufferedAmount > 0 and not self.closed.is_set():
            await asyncio.sleep(0.01)


def abort_reason(m):
    return m[1:].decode("utf-8", "replace")


async def wait_go(ch, entries):
    """The receiver's `G`: where each entry starts (checked as the Rust sender checks it)."""
    m = await ch.recv()
    if m[:1] == b"X":
        fail(f"the receiver stopped: {abort_reason(m)}")
    if m[:1] != b"G":
        fail(f"expected go, got {m[:1]!r}")
    body = m[1:]
    if len(body) % 12:
        fail(f"go: {len(body)} bytes are not whole records")
    starts = [0] * len(entries)
    seen = set()
    for at in range(0, len(body), 12):
        i, offset = struct.unpack(">IQ", body[at : at + 12])
        why = None
        if i >= len(entries) or entries[i]["dir"] or entries[i]["size"] is None:
            why = f"go: no file #{i} of known size"
        elif i in seen:
            why = f"go: {entries[i]['path']} named twice"
        elif offset % CHUNK or offset > entries[i]["size"]:
            why = f"go: {entries[i]['path']} cannot resume at {offset}"
        if why:
            await ch.send(b"X" + why.encode())
            await ch.drain()
            fail(why)
        seen.add(i)
        starts[i] = offset
    return starts


async def send_files(ch, paths, corrupt):
    entries, local = collect(paths)
    await ch.send(b"M" + json.dumps({"v": 1, "entries": entries}).encode())
    starts = await wait_go(ch, entries)
    files, total = [], 0
    for i, (e, path) in enumerate(zip(entries, local)):
        if e["dir"]:
            continue
        whole = hashlib.sha256()
        offset = 0
        with open(path, "rb") as f:
            # What the receiver holds already: hashed, not sent.
            while offset < starts[i]:
                data = f.read(min(CHUNK, starts[i] - offset))
                if not data:
                    fail(f"{e['path']} changed size while being sent")
                whole.update(data)
                offset += len(data)
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                whole.update(data)
                await ch.send(b"C" + struct.pack(">IQ", i, offset) + hashlib.sha256(data).digest() + data)
                offset += len(data)
        digest = whole.digest()
        if corrupt and not files:
            digest = bytes(32)
        await ch.send(b"E" + struct.pack(">IQ", i, offset) + digest)
        files.append({"path": e["path"], "size": offset, "sha256": whole.hexdigest()})
        total += offset - starts[i]
    await ch.send(b"D")
    acked = []
    while True:
        m = await ch.recv()
        if m[:1] == b"A":
            acked.append(struct.unpack(">I", m[1:5])[0])
        elif m[:1] == b"K":
            break
        elif m[:1] == b"X":
            return {"files": files, "bytes": total, "acked": acked, "aborted": abort_reason(m)}
        else:
            fail(f"unexpected message {m[:1]!r} from the receiver")
    return {"files": files, "bytes": total, "acked": acked}


async def receive_files(ch, out):
    m = await ch.recv()
    if m[:1] == b"X":
        fail(f"the sender stopped: {abort_reason(m)}")
    if m[:1] != b"M":
        fail(f"expected a manifest, got {m[:1]!r}")
    manifest = json.loads(m[1:])
    if manifest.get("v") != 1:
        fail(f"manifest version {manifest.get('v')!r}")
    entries = manifest["entries"]
    targets = [os.path.join(out, safe_path(e["path"])) for e in entries]
    # Go: every file from zero (nothing is kept here to resume).
    await ch.send(b"G")
    for e, t in zip(entries, targets):
        if e.get("dir"):
            os.makedirs(t, exist_ok=True)
    current = {}  # file index -> (handle, part path, offset, hash)
    files, total = [], 0

    async def abort(why):
        await ch.send(b"X" + why.encode())
        await ch.drain()
        fail(why)

    while True:
        m = await ch.recv()
        kind = m[:1]
        if kind == b"C":
            i, offset = struct.unpack(">IQ", m[1:13])
            digest, data = m[13:45], m[45:]
            if i >= len(entries) or entries[i].get("dir"):
                await abort(f"chunk for entry {i}")
            if hashlib.sha256(data).digest() != digest:
                await abort(f"chunk hash mismatch in {entries[i]['path']} at {offset}")
            if i not in current:
                part = os.path.join(os.path.dirname(targets[i]), "." + os.path.basename(targets[i]) + ".aiortc-part")
                os.makedirs(os.path.dirname(part), exist_ok=True)
                current[i] = [open(part, "wb"), part, 0, hashlib.sha256()]
            c = current[i]
            if offset != c[2]:
                await abort(f"chunk at {offset}, expected {c[2]}")
            c[0].write(data)
            c[2] += len(data)
            c[3].update(data)
        elif kind == b"E":
            i, size = struct.unpack(">IQ", m[1:13])
            digest = m[13:45]
            if i >= len(entries) or entries[i].get("dir"):
                await abort(f"end of entry {i}")
            if i not in current:  # an empty file
                part = targets[i] + ".aiortc-part"
                current[i] = [open(part, "wb"), part, 0, hashlib.sha256()]
            f, part, got, h = current.pop(i)
            f.close()
            want_size = entries[i].get("size")
            if got != size or (want_size is not None and want_size != size) or h.digest() != digest:
                os.unlink(part)
                await abort(f"integrity check failed for {entries[i]['path']}")
            os.replace(part, targets[i])
            files.append({"path": entries[i]["path"], "size": size, "sha256": h.hexdigest()})
            total += size
            await ch.send(b"A" + struct.pack(">I", i))
        elif kind == b"D":
            await ch.send(b"K")
            await ch.drain()
            return {"files": files, "bytes": total}
        elif kind == b"X":
            fail(f"the sender stopped: {abort_reason(m)}")
        else:
            fail(f"unexpected message {kind!r}")


def selected_pair(pc):
    try:
        pair = pc.sctp.transport.transport._connection._nominated.get(1)
        if pair is None:
            return None
        lc, rc = pair.local_candidate, pair.remote_candidate
        return {"local": f"{lc.type} {lc.host}:{lc.port}", "remote": f"{rc.type} {rc.host}:{rc.port}"}
    except AttributeError:
        return None


async def run(args):
    if args.host_ip:
        # aioice leaves out 127.0.0.1; the tests run on loopback.
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(args.host_ip)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    opened = asyncio.get_running_loop().create_future()
    try:
        if args.mode == "send":
            dc = pc.createDataChannel(LABEL)
            ch = Channel(dc)
            dc.on("open", lambda: opened.done() or opened.set_result(ch))
            await pc.setLocalDescription(await pc.createOffer())
            write_atomic(args.offer_file, pack(pc.localDescription.sdp, "O"))
            answer = await wait_text(args.answer_file, "A")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        else:

            @pc.on("datachannel")
            def on_datachannel(dc):
                if dc.label != LABEL:
                    return
                ch = Channel(dc)
                # Opened already when the event fires (in-band DCEP).
                if not opened.done():
                    opened.set_result(ch)

            offer = await wait_text(args.offer_file, "O")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            write_atomic(args.answer_file, pack(pc.localDescription.sdp, "A"))
        ch = await opened
        pair = selected_pair(pc)
        if args.mode == "send":
            result = await send_files(ch, args.paths, args.corrupt)
        else:
            result = await receive_files(ch, args.output)
        result["pair"] = pair
        return result
    finally:
        await pc.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["send", "receive"])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--offer-file", required=True)
    ap.add_argument("--answer-file", required=True)
    ap.add_argument("--host-ip", action="append")
    ap.add_argument("--output", default=".")
    ap.add_argument("--corrupt", action="store_true")
    args = ap.parse_intermixed_args()
    if args.mode == "send" and not args.paths:
        ap.error("send needs PATH...")
    try:
        result = asyncio.run(asyncio.wait_for(run(args), TIMEOUT))
    except PeerError as e:
        print(f"transfer_aiortc: {e}", file=sys.stderr)
        sys.exit(1)
    except asyncio.TimeoutError:
        print(f"transfer_aiortc: timed out after {TIMEOUT} s", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result), flush=True)
    if result.get("aborted"):
        print(f"transfer_aiortc: the receiver stopped: {result['aborted']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
