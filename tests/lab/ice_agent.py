#!/usr/bin/env python3
"""One host of the NAT lab's traversal matrix: aioice ICE agents, one per pair this host is in.

usage: ice_agent.py --site NAME --server IP --turn-user USER:PASS
                    [--hub ws://IP:PORT/v1/ws --channel-prefix P] --pair ID:controlling|controlled ...

For every pair: gather host, server-reflexive (STUN) and relayed (TURN over UDP) candidates from
switchboard, exchange the description (ufrag, pwd, candidates) with the other host of the pair,
run ICE, send one datagram each way over the selected pair, and print one JSON line

    {"type": "result", "pair": ID, "role": ..., "local_type": ..., "remote_type": ...,
     "local": "ip:port", "remote": "ip:port", "data": true, "seconds": ...}

(or {"type": "result", "pair": ID, "error": "..."}).

Signaling: with --hub, through switchboard's hub (WebSocket /v1/ws, subprotocol
switchboard.json): both hosts subscribe to channel P.ID, read its history, and publish their
description there. Without --hub, through the test harness: the agent prints
{"type": "offer", "pair": ID, "desc": {...}} and reads {"type": "remote", "pair": ID,
"desc": {...}} lines on stdin.

Nomination: aioice's controlling agent nominates aggressively (the first pair to succeed wins),
which makes the outcome a race between a punched hole and the relay. Browsers wait for better
pairs before settling on a relay; this agent does the same with RFC 8445 regular nomination:
checks run without USE-CANDIDATE, and after SETTLE seconds (or once every check has finished)
the highest-priority pair that succeeded is nominated.
"""
import argparse
import asyncio
import json
import sys
import time

import aioice
from aioice import stun
from aioice.candidate import Candidate
from aioice.ice import CandidatePair

SETTLE = 2.0
TIMEOUT = 40.0


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class PatientConnection(aioice.Connection):
    """aioice Connection whose controlling side uses regular, priority-ordered nomination."""

    settle = SETTLE

    async def connect(self):
        self._started = time.monotonic()
        nominator = asyncio.create_task(self._nominate_best())
        try:
            await super().connect()
        finally:
            nominator.cancel()

    async def check_start(self, pair):
        if not self.ice_controlling:
            return await super().check_start(pair)
        self.check_state(pair, CandidatePair.State.IN_PROGRESS)
        request = self.build_request(pair, nominate=False)
        try:
            _, addr = await pair.protocol.request(
                request, pair.remote_addr, integrity_key=self.remote_password.encode("utf8")
            )
        except stun.TransactionError:
            self.check_state(pair, CandidatePair.State.FAILED)
            self.check_complete(pair)
            return
        if addr != pair.remote_addr:
            self.check_state(pair, CandidatePair.State.FAILED)
        else:
            self.check_state(pair, CandidatePair.State.SUCCEEDED)
        self.check_complete(pair)

    def _check_list_maybe_fail(self):
        # The controlling side decides in _nominate_best; a list with a succeeded pair has not
        # failed just because nothing is nominated yet.
        if self.ice_controlling and any(
            p.state == CandidatePair.State.SUCCEEDED for p in self._check_list
        ):
            return
        super()._check_list_maybe_fail()

    async def _nominate_best(self):
        if not self.ice_controlling:
            return
        done_states = (CandidatePair.State.SUCCEEDED, CandidatePair.State.FAILED)
        while not self._check_list_done:
            await asyncio.sleep(0.05)
            settled = time.monotonic() - self._started >= self.settle
            finished = all(p.state in done_states for p in self._check_list)
            if not (settled or finished):
                continue
            self.sort_check_list()
            best = next(
                (p for p in self._check_list if p.state == CandidatePair.State.SUCCEEDED), None
            )
            if best is None:
                continue
            request = self.build_request(best, nominate=True)
            try:
                await best.protocol.request(
                    request, best.remote_addr, integrity_key=self.remote_password.encode("utf8")
                )
            except stun.TransactionError:
                self.check_state(best, CandidatePair.State.FAILED)
                continue
            best.nominated = True
            self.check_complete(best)
            return


class HubSignal:
    """Signaling over switchboard's hub: WebSocket /v1/ws with the switchboard.json subprotocol."""

    def __init__(self, url, prefix):
        self.url, self.prefix = url, prefix
        self.ws = None
        self.next_id = 0
        self.replies = {}
        self.waiters = {}  # (channel, role) -> future
        self.seen = {}

    async def open(self):
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url, subprotocols=["switchboard.json"], proxy=None, compression=None
        )
        self.reader = asyncio.create_task(self._read())
        reply = await self.call("connect", {})
        if "error" in reply:
            raise RuntimeError(f"hub connect refused: {reply}")

    async def _read(self):
        async for msg in self.ws:
            frame = json.loads(msg)
            if "reply" in frame:
                fut = self.replies.pop(frame["reply"].get("id", 0), None)
                if fut and not fut.done():
                    fut.set_result(frame["reply"])
            elif "publication" in frame.get("push", {}):
                pub = frame["push"]["publication"]
                self._offer(pub.get("channel", ""), pub.get("data"))

    def _offer(self, channel, data):
        if not isinstance(data, dict) or "role" not in data:
            return
        key = (channel, data["role"])
        self.seen[key] = data
        fut = self.waiters.get(key)
        if fut and not fut.done():
            fut.set_result(data)

    async def call(self, method, body):
        self.next_id += 1
        cid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.replies[cid] = fut
        await self.ws.send(json.dumps({"id": cid, method: body}))
        return await asyncio.wait_for(fut, 10)

    async def exchange(self, pair, role, desc):
        channel = f"{self.prefix}.{pair}"
        other = "controlled" if role == "controlling" else "controlling"
        fut = asyncio.get_running_loop().create_future()
        self.waiters[(channel, other)] = fut
        reply = await self.call("subscribe", {"channel": channel})
        if "error" in reply:
            raise RuntimeError(f"subscribe {channel}: {reply}")
        # Whatever the other host published before this subscription is in the history.
        reply = await self.call("history", {"channel": channel, "limit": 10})
        for pub in reply.get("history", {}).get("publications", []):
            self._offer(channel, pub.get("data"))
        if (channel, other) in self.seen and not fut.done():
            fut.set_result(self.seen[(channel, other)])
        reply = await self.call("publish", {"channel": channel, "data": dict(desc, role=role)})
        if "error" in reply:
            raise RuntimeError(f"publish {channel}: {reply}")
        return await asyncio.wait_for(fut, TIMEOUT)


class StdioSignal:
    """Signaling through the test harness: offers on stdout, remote descriptions on stdin."""

    def __init__(self):
        self.futures = {}

    async def open(self):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.reader = asyncio.create_task(self._read(reader))

    async def _read(self, reader):
        while line := await reader.readline():
            msg = json.loads(line)
            if msg.get("type") == "remote":
                self._future(msg["pair"]).set_result(msg["desc"])

    def _future(self, pair):
        if pair not in self.futures:
            self.futures[pair] = asyncio.get_running_loop().create_future()
        return self.futures[pair]

    async def exchange(self, pair, role, desc):
        fut = self._future(pair)
        emit({"type": "offer", "pair": pair, "desc": dict(desc, role=role)})
        return await asyncio.wait_for(fut, TIMEOUT)


async def run_pair(args, signal, pair, role):
    started = time.monotonic()
    user, password = args.turn_user.split(":", 1)
    conn = PatientConnection(
        ice_controlling=(role == "controlling"),
        components=1,
        stun_server=(args.server, 3478),
        turn_server=(args.server, 3478),
        turn_username=user,
        turn_password=password,
        use_ipv4=True,
        use_ipv6=False,
    )
    try:
        await asyncio.wait_for(conn.gather_candidates(), 15)
        types = sorted({c.type for c in conn.local_candidates})
        if "relay" not in types or "srflx" not in types:
            raise RuntimeError(f"gathered only {types}")
        desc = {
            "ufrag": conn.local_username,
            "pwd": conn.local_password,
            "candidates": [c.to_sdp() for c in conn.local_candidates],
        }
        remote = await signal.exchange(pair, role, desc)
        conn.remote_username = remote["ufrag"]
        conn.remote_password = remote["pwd"]
        for sdp in remote["candidates"]:
            await conn.add_remote_candidate(Candidate.from_sdp(sdp))
        await conn.add_remote_candidate(None)
        await asyncio.wait_for(conn.connect(), TIMEOUT)
        selected = conn._nominated[1]
        # One datagram each way over the selected pair.
        if role == "controlling":
            await conn.send(f"ping {pair}".encode())
            data = await asyncio.wait_for(conn.recv(), 10)
            ok = data == f"pong {pair}".encode()
        else:
            data = await asyncio.wait_for(conn.recv(), 10)
            ok = data == f"ping {pair}".encode()
            await conn.send(f"pong {pair}".encode())
            await asyncio.sleep(1.0)  # let the pong arrive before closing
        lc, rc = selected.local_candidate, selected.remote_candidate
        emit(
            {
                "type": "result",
                "site": args.site,
                "pair": pair,
                "role": role,
                "local_type": lc.type,
                "remote_type": rc.type,
                "local": f"{lc.host}:{lc.port}",
                "remote": f"{rc.host}:{rc.port}",
                "local_candidates": types,
                "data": ok,
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    except Exception as exc:  # noqa: BLE001 - reported to the harness
        emit({"type": "result", "site": args.site, "pair": pair, "role": role,
              "error": f"{type(exc).__name__}: {exc}"})
    finally:
        await conn.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--site", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--turn-user", required=True)
    p.add_argument("--hub")
    p.add_argument("--channel-prefix", default="natlab")
    p.add_argument("--pair", action="append", default=[])
    args = p.parse_args()
    if args.hub:
        signal = HubSignal(args.hub, args.channel_prefix)
    else:
        signal = StdioSignal()
    await signal.open()
    emit({"type": "ready", "site": args.site})
    jobs = []
    for spec in args.pair:
        pair, role = spec.split(":")
        jobs.append(run_pair(args, signal, pair, role))
    await asyncio.gather(*jobs)
    emit({"type": "done", "site": args.site})


if __name__ == "__main__":
    asyncio.run(main())
