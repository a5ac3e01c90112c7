#!/usr/bin/env python3
"""Certificate hot reload seen from a TLS client (Python standard library).

usage: tls_reload.py HOST PORT GO_FILE
       tls_reload.py HOST PORT          (just print "fingerprint <sha256>")

1. Opens connection A, prints "before <sha256 fingerprint>".
2. Waits until GO_FILE exists (the test swaps the certificate files meanwhile), then retries new
   connections for up to 10 s until the fingerprint changes; prints "after <fingerprint>".
3. Sends a STUN Binding request on the old connection A and checks the answer: the reload did not
   drop live connections. Prints "old connection ok".
"""
import hashlib
import os
import socket
import ssl
import struct
import sys
import time


def connect(host, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="localhost")
    der = s.getpeercert(binary_form=True)
    fp = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    return s, fp


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) == 3:
        s, fp = connect(host, port)
        s.close()
        print("fingerprint", fp)
        return
    go = sys.argv[3]
    a, before = connect(host, port)
    print("before", before, flush=True)
    deadline = time.time() + 30
    while not os.path.exists(go):
        if time.time() > deadline:
            sys.exit("GO file never appeared")
        time.sleep(0.05)
    after = before
    deadline = time.time() + 10
    while after == before and time.time() < deadline:
        b, after = connect(host, port)
        b.close()
        if after == before:
            time.sleep(0.2)
    print("after", after, flush=True)
    tid = os.urandom(12)
    a.sendall(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid)
    head = a.recv(20)
    assert len(head) == 20 and struct.unpack("!H", head[:2])[0] == 0x0101 and head[8:20] == tid, head
    print("old connection ok")


main()
