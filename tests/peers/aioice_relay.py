#!/usr/bin/env python3
"""Gather ICE candidates with aioice (an independent ICE agent) against switchboard's STUN/TURN.

usage: aioice_relay.py HOST PORT USERNAME PASSWORD [udp|tcp|tls]

tls is `turns:` (TURN over TLS, no ALPN, as browsers do it; the certificate is not checked).

Prints one line per gathered candidate and exits 0 when a relay candidate was gathered whose
address belongs to the server (the relay), and a server-reflexive or host candidate exists.
"""
import asyncio
import ssl
import sys

import aioice


async def main():
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    transport = sys.argv[5] if len(sys.argv) > 5 else "udp"
    tls = None
    if transport == "tls":
        transport = "tcp"
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    conn = aioice.Connection(
        ice_controlling=True,
        components=1,
        stun_server=(host, port),
        turn_server=(host, port),
        turn_username=user,
        turn_password=password,
        turn_transport=transport,
        turn_ssl=tls or False,
        use_ipv4=True,
        use_ipv6=False,
    )
    await asyncio.wait_for(conn.gather_candidates(), 20)
    kinds = set()
    for c in conn.local_candidates:
        print(f"candidate {c.type} {c.host}:{c.port} {c.transport}")
        kinds.add(c.type)
    relay = [c for c in conn.local_candidates if c.type == "relay"]
    await conn.close()
    if not relay:
        print("no relay candidate", file=sys.stderr)
        sys.exit(1)
    if relay[0].host != host:
        print(f"relay address {relay[0].host} is not the server's {host}", file=sys.stderr)
        sys.exit(1)
    print("ok")


asyncio.run(main())
