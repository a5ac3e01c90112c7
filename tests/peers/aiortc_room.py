#!/usr/bin/env python3
"""A WebRTC peer that nobody here wrote (aiortc) waits in a room and answers a browser's offer.

usage: aiortc_room.py --base http://HOST:PORT --room ROOM [--peer aiortc] [--expect browser]
                      [--label data]

The other half of aiortc_call.py (which joins after the page and offers): this one joins ROOM
over /v1/ws first, prints `JOINED {json}` on stdout, and waits for the peer EXPECT (a page on the
JavaScript SDK, `client.joinRoom()`) to join as the newcomer and send its offer, with the data
channel LABEL in it. It answers (aiortc does not trickle: the answer carries every candidate,
gathered against the STUN/TURN servers from GET /v1/ice-servers), adds the page's trickled
candidates (queued until the offer is set; an empty one is end-of-candidates), and on the data
channel the page opened sends "hello from PEER" and waits for the page's "hello from EXPECT ..."
and then its "ack". Then it leaves the room, prints one JSON line (messages, candidates, the
selected pair) and exits 0. Any failure exits 1 with the reason on stderr; everything is
bounded (60 s).
"""
import argparse
import asyncio
import json
import sys

try:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.sdp import candidate_from_sdp
    from websockets.asyncio.client import connect as ws_connect
except ImportError as e:  # pragma: no cover - a clear message for a missing venv package
    print(f"aiortc_room: {e}: run scripts/test-deps (tests/requirements.txt)", file=sys.stderr)
    sys.exit(3)

# The hub client and helpers of the offering peer (same directory).
from aiortc_call import Hub, PeerError, fail, ice_servers, selected_pair

TIMEOUT = 60


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
        if args.expect in members:
            fail(f"{args.expect} is already in room {args.room}: it must join after us")
        print(f"JOINED {json.dumps({'room': args.room, 'peer': args.peer, 'members': members})}", flush=True)

        pc = RTCPeerConnection(config)
        received = []
        labels = []
        channel_open = asyncio.Event()
        got_hello = asyncio.Event()
        got_ack = asyncio.Event()
        channel = None

        @pc.on("datachannel")
        def on_datachannel(dc):
            nonlocal channel
            labels.append(dc.label)
            if dc.label != args.label:
                return
            channel = dc

            def opened():
                if not channel_open.is_set():
                    channel_open.set()
                    dc.send(f"hello from {args.peer}")

            @dc.on("open")
            def on_open():
                opened()

            @dc.on("message")
            def on_message(message):
                if not isinstance(message, str):
                    return
                received.append(message)
                if message == "ack":
                    got_ack.set()
                elif message.startswith(f"hello from {args.expect}"):
                    got_hello.set()

            if dc.readyState == "open":
                opened()

        remote_candidates = []
        pending = []  # candidates that came before the offer
        state = {"joined": False, "offered": False, "answer_types": []}

        async def add_candidate(c):
            line = c.get("candidate", "")
            if not line:
                await pc.addIceCandidate(None)  # end-of-candidates
                remote_candidates.append("end-of-candidates")
                return
            cand = candidate_from_sdp(line.split(":", 1)[1])
            cand.sdpMid = c.get("sdpMid")
            cand.sdpMLineIndex = c.get("sdpMLineIndex")
            await pc.addIceCandidate(cand)
            remote_candidates.append(cand.type)

        async def signals():
            while True:
                push = await hub.pushes.get()
                if push is None:
                    return
                if "roomJoin" in push:
                    j = push["roomJoin"]
                    if j.get("peer", {}).get("peerId") == args.expect:
                        state["joined"] = True
                        if j.get("polite"):  # absent (false) in the JSON mapping
                            fail(f"towards the newcomer {args.expect} we must be impolite: {j}")
                    continue
                if "roomLeave" in push:
                    if push["roomLeave"].get("peerId") == args.expect:
                        fail(f"{args.expect} left the room")
                    continue
                s = push.get("signal")
                if not s or s.get("from") != args.expect:
                    continue
                if "offer" in s:
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=s["offer"]["sdp"], type="offer"))
                    await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
                    sdp = pc.localDescription.sdp
                    state["answer_types"] = sorted(
                        {line.split()[7] for line in sdp.splitlines() if line.startswith("a=candidate:")}
                    )
                    await hub.call(
                        "answer",
                        {"room": args.room, "to": args.expect, "description": {"type": "answer", "sdp": sdp}},
                    )
                    state["offered"] = True
                    for c in pending:
                        await add_candidate(c)
                    pending.clear()
                elif "answer" in s:
                    fail(f"{args.expect} answered, but we never offered: {s}")
                elif "candidate" in s:
                    if pc.remoteDescription is None:
                        pending.append(s["candidate"])
                    else:
                        await add_candidate(s["candidate"])

        task = asyncio.ensure_future(signals())
        try:
            for what, ev in (
                (f"the data channel {args.label!r} from {args.expect}", channel_open),
                ("the page's hello", got_hello),
                ("the page's ack", got_ack),
            ):
                done, _ = await asyncio.wait(
                    [asyncio.ensure_future(ev.wait()), task], timeout=40, return_when=asyncio.FIRST_COMPLETED
                )
                if task in done:
                    task.result()  # raises the reason
                    fail(f"hub connection ended while waiting for {what}")
                if not ev.is_set():
                    fail(
                        f"no {what} within 40 s (joined: {state['joined']}, offered: {state['offered']}, "
                        f"channels: {labels}, remote candidates: {remote_candidates}, "
                        f"ICE: {pc.iceConnectionState}, received: {received})"
                    )
            summary = {
                "ok": True,
                "room": args.room,
                "peer": args.peer,
                "received": received,
                "sent": [f"hello from {args.peer}"],
                "channels": labels,
                "sawJoin": state["joined"],
                "localCandidateTypes": state["answer_types"],
                "remoteCandidates": remote_candidates,
                "iceConnectionState": pc.iceConnectionState,
                "selectedPair": selected_pair(pc),
            }
            await hub.call("roomLeave", {"room": args.room})
        finally:
            task.cancel()
            await pc.close()
    print(json.dumps(summary), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="http://HOST:PORT of switchboard")
    p.add_argument("--room", required=True)
    p.add_argument("--peer", default="aiortc")
    p.add_argument("--expect", default="browser", help="the page's peer id; it joins after us")
    p.add_argument("--label", default="data", help="the page's data channel (the SDK's default: data)")
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), TIMEOUT))
    except PeerError as e:
        print(f"aiortc_room: {e}", file=sys.stderr)
        sys.exit(1)
    except asyncio.TimeoutError:
        print(f"aiortc_room: not done within {TIMEOUT} s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
