#!/usr/bin/env python3
"""STUN Binding over TCP or TLS with only the Python standard library (an independent client).

usage: stun_stream.py tcp|tls HOST PORT

Checks, exiting non-zero on the first failure:
  - a Binding request gets a success response with our transaction id, whose XOR-MAPPED-ADDRESS
    equals the local address of our connection and whose FINGERPRINT verifies;
  - two requests written in one send (pipelined) get two responses;
  - a request written one byte at a time (framing across reads) gets its response;
  - over TLS: the negotiated version is TLS 1.2 or 1.3.
"""
import binascii
import os
import socket
import ssl
import struct
import sys

MAGIC = 0x2112A442


def request(tid):
    body = b""
    # FINGERPRINT over header (length including the fingerprint attribute) + body
    length = len(body) + 8
    header = struct.pack("!HHI", 0x0001, length, MAGIC) + tid
    crc = binascii.crc32(header + body) ^ 0x5354554E
    return header + body + struct.pack("!HHI", 0x8028, 4, crc & 0xFFFFFFFF)


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("connection closed early")
        data += chunk
    return data


def read_message(sock):
    header = read_exact(sock, 20)
    msg_type, length, cookie = struct.unpack("!HHI", header[:8])
    body = read_exact(sock, length)
    return msg_type, cookie, header[8:20], header + body


def attributes(msg):
    i = 20
    out = []
    while i + 4 <= len(msg):
        t, l = struct.unpack("!HH", msg[i:i + 4])
        out.append((t, msg[i + 4:i + 4 + l], i))
        i += 4 + ((l + 3) // 4) * 4
    return out


def check(sock, tid, local):
    msg_type, cookie, rtid, msg = read_message(sock)
    assert msg_type == 0x0101, f"not a Binding success response: {msg_type:#06x}"
    assert cookie == MAGIC and rtid == tid, "transaction id mismatch"
    attrs = attributes(msg)
    xma = [v for t, v, _ in attrs if t == 0x0020]
    assert xma, "no XOR-MAPPED-ADDRESS"
    family, xport = struct.unpack("!xBH", xma[0][:4])
    assert family == 1, "expected IPv4"
    port = xport ^ (MAGIC >> 16)
    ip = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", xma[0][4:8])[0] ^ MAGIC))
    assert (ip, port) == local, f"mapped {(ip, port)} != local {local}"
    fp = [(v, off) for t, v, off in attrs if t == 0x8028]
    assert fp, "no FINGERPRINT"
    value, off = fp[0]
    crc = binascii.crc32(msg[:off]) ^ 0x5354554E
    assert struct.unpack("!I", value)[0] == crc & 0xFFFFFFFF, "bad FINGERPRINT"


def main():
    transport, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    raw = socket.create_connection((host, port), timeout=10)
    sock = raw
    if transport == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed certificate of the embedded default
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert sock.version() in ("TLSv1.2", "TLSv1.3"), sock.version()
    local = sock.getsockname()[:2]

    tid = os.urandom(12)
    sock.sendall(request(tid))
    check(sock, tid, local)

    t1, t2 = os.urandom(12), os.urandom(12)
    sock.sendall(request(t1) + request(t2))
    check(sock, t1, local)
    check(sock, t2, local)

    t3 = os.urandom(12)
    for b in request(t3):
        sock.sendall(bytes([b]))
    check(sock, t3, local)
    print(f"ok {transport} {sock.version() if transport == 'tls' else ''}".strip())


if __name__ == "__main__":
    main()
