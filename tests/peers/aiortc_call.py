#!/usr/bin/env python3
"""A WebRTC peer that nobody here wrote (aiortc) meets a browser /call page in a room.

usage: aiortc_call.py --base http://HOST:PORT --room ROOM [--peer aiortc] [--expect browser]

Joins ROOM over /v1/ws (websockets, subprotocol switchboard.json) after the page, as the
newcomer: polite, it creates the connection and the "chat" data channel and sends the offer.
aiortc does not trickle: its offer carries every candidate (gathered against the STUN/TURN
servers from GET /v1/ice-servers, so TURN REST credentials are exercised too). The page answers
and trickles its candidates, which are added with aiortc's `candidate_from_sdp`; its empty
end-of-candidates becomes `addIceCandidate(None)`.

On the data channel it sends "hello from PEER" and waits for the page's greeting and then its
"ack"; then it leaves the room and prints one JSON line (messages, candidate types, the
selected pair) and exits 0. Any failure exits 1 with the reason on stderr; everything is
bounded (60 s).
"""
import argparse
import asyncio
import json
import sys
import urllib.request

try:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
    from aiortc.sdp import candidate_from_sdp
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed
except ImportError as e:  # pragma: no cover - a clear message for a missing venv package
    print(f"aiortc_call: {e}: run scripts/test-deps (tests/requirements.txt)", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 60


class PeerError(Exception):
    """Why the call failed (printed on stderr, exit code 1)."""


def fail(msg):
    raise PeerError(msg)


def ice_servers(base):
    """GET /v1/ice-servers (anonymous from loopback) -> [RTCIceServer]."""
    with urllib.request.urlopen(f"{base}/v1/ice-servers", timeout=10) as r:
        body = json.load(r)
    servers = []
    for s in body.get("iceServers", []):
        urls = s["urls"] if isinstance(s["urls"], list) else [s["urls"]]
        # aiortc takes one STUN and one TURN server; keep UDP TURN first (turns: needs a
        # trusted certificate, which a self-signed test server does not have).
        urls = [u for u in urls if not u.startswith("turns:")]
        if urls:
            servers.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    return servers


class Hub:
    """The hub's JSON WebSocket protocol: commands with ids, replies, pushes."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.replies = {}
        self.pushes = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for msg in self.ws:
                frame = json.loads(msg)
                if "reply" in frame:
                    fut = self.replies.pop(frame["reply"].get("id", 0), None)
                    if fut and not fut.done():
                        fut.set_result(frame["reply"])
                elif "push" in frame:
                    await self.pushes.put(frame["push"])
        except ConnectionClosed:
            pass
        finally:
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("hub connection closed"))
            await self.pushes.put(None)

    async def call(self, method, body):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, method: body}))
        reply = await asyncio.wait_for(fut, 10)
        if "error" in reply:
            fail(f"{method} refused: {reply['error']}")
        return reply


def selected_pair(pc):
    """The nominated ICE pair of the data channel's transport (aioice internals, best effort)."""
    try:
        conn = pc.sctp.transport.transport._connection
        pair = conn._nominated.get(1)
        if pair is None:
            return None
        lc, rc = pair.local_candidate, pair.remote_candidate
        return {
            "local": {"candidateType": lc.type, "address": lc.host, "port": lc.port},
            "remote": {"candidateType": rc.type, "address": rc.host, "port": rc.port},
        }
    except AttributeError:
        return None


async def run(args):
    config = RTCConfiguration(iceServers=ice_servers(args.base))
    ws_url = "ws" + args.base[len("http"):] + "/v1/ws"
    async with ws_connect(ws_url, subprotocols=["switchboard.json"], proxy=None, compression=None) as ws:
        if ws.subprotocol != "switchboard.json":
            fail(f"server chose subprotocol {ws.subprotocol!r}")
        hub = Hub(ws)
        await hub.call("connect", {"name": "aiortc"})
        r = (await hub.call("roomJoin", {"room": args.room, "peerId": args.peer, "data": {"agent": "aiortc"}}))[
            "roomJoin"
        ]
        members = [m["peerId"] for m in r.get("members", [])]
        if args.expect not in members:
            fail(f"{args.expect} is not in room {args.room}: members {members}")
        if r.get("polite") is not True:
            fail(f"the newcomer must be polite: {r}")

        pc = RTCPeerConnection(config)
        dc = pc.createDataChannel("chat")
        received = []
        got_hello = asyncio.Event()
        got_ack = asyncio.Event()
        opened = asyncio.Event()

        @dc.on("open")
        def on_open():
            opened.set()
            dc.send(f"hello from {args.peer}")

        @dc.on("message")
        def on_message(message):
            if not isinstance(message, str):
                return
            received.append(message)
            if message == "ack":
                got_ack.set()
            elif message.startswith(f"hello from {args.expect}"):
                got_hello.set()

        await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
        offer_sdp = pc.localDescription.sdp
        local_types = sorted({line.split()[7] for line in offer_sdp.splitlines() if line.startswith("a=candidate:")})
        await hub.call(
            "offer",
            {"room": args.room, "to": args.expect, "description": {"type": "offer", "sdp": offer_sdp}},
        )

        remote_candidates = []
        answered = False

        async def signals():
            nonlocal answered
            while True:
                push = await hub.pushes.get()
                if push is None:
                    return
                s = push.get("signal")
                if not s:
                    if "roomLeave" in push and push["roomLeave"].get("peerId") == args.expect:
                        fail(f"{args.expect} left the room")
                    continue
                if s.get("from") != args.expect:
                    continue
                if "answer" in s:
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=s["answer"]["sdp"], type="answer"))
                    answered = True
                elif "offer" in s:
                    # The page is impolite towards us; it would only offer to renegotiate.
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=s["offer"]["sdp"], type="offer"))
                    await pc.setLocalDescription(await pc.createAnswer())
                    await hub.call(
                        "answer",
                        {
                            "room": args.room,
                            "to": args.expect,
                            "description": {"type": "answer", "sdp": pc.localDescription.sdp},
                        },
                    )
                elif "candidate" in s:
                    c = s["candidate"]
                    line = c.get("candidate", "")
                    if not line:
                        await pc.addIceCandidate(None)  # end-of-candidates
                        remote_candidates.append("end-of-candidates")
                        continue
                    cand = candidate_from_sdp(line.split(":", 1)[1])
                    cand.sdpMid = c.get("sdpMid")
                    cand.sdpMLineIndex = c.get("sdpMLineIndex")
                    await pc.addIceCandidate(cand)
                    remote_candidates.append(cand.type)

        task = asyncio.ensure_future(signals())
        try:
            for what, ev in (("data channel open", opened), ("the page's hello", got_hello), ("the page's ack", got_ack)):
                done, _ = await asyncio.wait(
                    [asyncio.ensure_future(ev.wait()), task], timeout=40, return_when=asyncio.FIRST_COMPLETED
                )
                if task in done:
                    task.result()  # raises the reason
                    fail(f"hub connection ended while waiting for {what}")
                if not ev.is_set():
                    fail(
                        f"no {what} within 40 s (answered: {answered}, remote candidates: {remote_candidates}, "
                        f"ICE: {pc.iceConnectionState}, received: {received})"
                    )
            pair = selected_pair(pc)
            summary = {
                "ok": True,
                "room": args.room,
                "peer": args.peer,
                "received": received,
                "sent": [f"hello from {args.peer}"],
                "localCandidateTypes": local_types,
                "remoteCandidates": remote_candidates,
                "iceConnectionState": pc.iceConnectionState,
                "selectedPair": pair,
            }
            await hub.call("roomLeave", {"room": args.room})
        finally:
            task.cancel()
            await pc.close()
    print(json.dumps(summary))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="http://HOST:PORT of switchboard")
    p.add_argument("--room", required=True)
    p.add_argument("--peer", default="aiortc")
    p.add_argument("--expect", default="browser", help="the page's peer id, already in the room")
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), TIMEOUT))
    except PeerError as e:
        print(f"aiortc_call: {e}", file=sys.stderr)
        sys.exit(1)
    except asyncio.TimeoutError:
        print(f"aiortc_call: not done within {TIMEOUT} s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
