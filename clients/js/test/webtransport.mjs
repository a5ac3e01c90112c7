// The SDK's WebTransport connection (length-prefixed protobuf, its own small codec) against the
// real server, in Node, which has no WebTransport: the `webtransport` option gets a stand-in
// whose bidirectional stream is tunnelled through a WebSocket with the `switchboard.proto`
// subprotocol (one binary frame = one protobuf `Command` / `ServerFrame`, docs/hub.md). The
// stand-in strips and adds the u32 big-endian length, and hands the SDK the server's frames cut
// into small pieces and glued together, so reassembly is exercised too. The server's prost
// decoder judges every message the SDK encodes, the SDK's decoder every message prost encodes.
//
// Checks: connect (transport "webtransport", the URL and the constructor options), pub/sub with
// a WebSocket (JSON mapping) client on the same channel both ways, JSON values and binary data;
// history, presence, presenceStats, join/leave; recovery after a server disconnect; room
// commands and signals (members, join data, a candidate with sdpMLineIndex 0, bye); the
// fallback: a session that cannot open ends on the WebSocket, and reconnects skip WebTransport.
//
//   node test/webtransport.mjs http://127.0.0.1:8080 --api-key K --jwt-secret S

import { Client } from "../switchboard.js";
import { api, args, assert, checks, eq, jwt, next, now, sleep, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);
const wsUrl = `${opts.server.replace(/^http/, "ws")}/v1/ws`;

/** Opened sessions: {url, options}. */
const sessions = [];

/** A WebTransport stand-in: one session = one `switchboard.proto` WebSocket. */
class TunnelTransport {
  constructor(url, options) {
    sessions.push({ url, options });
    this.ws = new WebSocket(wsUrl, "switchboard.proto");
    this.ws.binaryType = "nodebuffer";
    this.ready = new Promise((resolve, reject) => {
      this.ws.once("open", () =>
        this.ws.protocol === "switchboard.proto" ? resolve() : reject(new Error("no switchboard.proto")));
      this.ws.once("error", (e) => reject(e));
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.controller?.close();
        resolve({ closeCode: code === 1000 ? 0 : code, reason: String(reason ?? "") });
      });
    });
    this.controller = null;
    this.pendingOut = [];
    this.flushTimer = null;
    this.ws.on("message", (data) => this.fromServer(new Uint8Array(data)));
  }

  /** A server message, framed; pieces of 1..7 bytes, and frames of one tick glued together. */
  fromServer(body) {
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length);
    frame.set(body, 4);
    this.pendingOut.push(...frame);
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      const bytes = Uint8Array.from(this.pendingOut.splice(0));
      for (let i = 0; i < bytes.length; ) {
        const n = i === 0 ? 3 : 1 + Math.floor(Math.random() * 7);
        this.controller?.enqueue(bytes.slice(i, i + n));
        i += n;
      }
    }, 0);
  }

  async createBidirectionalStream() {
    await this.ready;
    const ws = this.ws;
    const readable = new ReadableStream({
      start: (c) => {
        this.controller = c;
      },
    });
    let buf = new Uint8Array(0);
    const writable = new WritableStream({
      write(chunk) {
        const joined = new Uint8Array(buf.length + chunk.length);
        joined.set(buf);
        joined.set(chunk, buf.length);
        buf = joined;
        while (buf.length >= 4) {
          const len = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0);
          if (buf.length < 4 + len) break;
          ws.send(buf.slice(4, 4 + len));
          buf = buf.slice(4 + len);
        }
      },
    });
    return { readable, writable };
  }

  close(info) {
    this.closeInfo = info;
    this.ws.close();
  }
}

/** A WebTransport whose session never opens (as a browser that cannot reach /v1/wt). */
let refusedSessions = 0;
class RefusedTransport {
  constructor() {
    refusedSessions++;
    this.ready = Promise.reject(new Error("WebTransportError: Opening handshake failed."));
    this.closed = Promise.reject(new Error("WebTransportError: Opening handshake failed."));
  }

  createBidirectionalStream() {
    return Promise.reject(new Error("not connected"));
  }

  close() {}
}

const token = (sub) => jwt(opts.jwtSecret, { sub, exp: now() + 600, info: { name: sub } });
const channel = unique("chat:wt");
const alice = new Client(opts.server, {
  token: token("alice"),
  transports: ["webtransport"],
  webtransport: TunnelTransport,
  webtransportOptions: { serverCertificateHashes: [] },
  websocket: WebSocket,
  minReconnectDelay: 100,
  maxReconnectDelay: 800,
});
const bob = new Client(opts.server, { token: token("bob"), websocket: WebSocket });
const got = { alice: [], bob: [] };
const joins = [];
const leaves = [];
const subscribed = [];

await check("connect-over-webtransport", async () => {
  const connected = next(alice, "connected");
  alice.connect();
  const ctx = await connected;
  eq(ctx.transport, "webtransport", "connected transport");
  eq(alice.transport, "webtransport", "client.transport");
  eq(ctx.user, "alice", "user");
  assert(ctx.client.length > 0, "a client id");
  eq(sessions.length, 1, "sessions");
  eq(sessions[0].url, `${opts.server.replace(/^http:/, "https:")}/v1/wt`, "the /v1/wt URL");
  eq(sessions[0].options, { serverCertificateHashes: [] }, "the webtransportOptions");
  bob.connect();
  await bob.ready();
  eq(bob.transport, "websocket", "bob's transport");
});

await check("subscribe-join-leave", async () => {
  const a = alice.newSubscription(channel);
  a.on("publication", (p) => got.alice.push(p));
  a.on("join", (c) => joins.push(c.info));
  a.on("leave", (c) => leaves.push(c.info));
  a.on("subscribed", (c) => subscribed.push(c));
  a.subscribe();
  await a.ready();
  eq(subscribed[0].recoverable, true, "recoverable");
  const b = bob.newSubscription(channel);
  b.on("publication", (p) => got.bob.push(p));
  b.subscribe();
  await b.ready();
  await waitFor(() => joins.some((i) => i.user === "bob"), 5000, "bob's join");
  const j = joins.find((i) => i.user === "bob");
  eq(j.client, bob.clientId, "join client id");
  eq(j.connInfo, { name: "bob" }, "join connInfo (the token's info, JSON)");
});

await check("server-api-publication-json", async () => {
  const data = { text: "héllo ✓", n: 1, nested: { list: [1, 2, 3], yes: true, none: null } };
  await api(opts.server, opts.apiKey, "publish", { channel, data });
  await waitFor(() => got.alice.length === 1, 5000, "the publication");
  const p = got.alice[0];
  eq(p.data, data, "data");
  eq([p.offset, p.channel, p.info], [1, channel, undefined], "offset, channel, no info");
  assert(p.epoch.length > 0, "an epoch");
});

await check("publish-both-ways-json-and-binary", async () => {
  const r = await alice.publish(channel, { from: "alice", n: 2 });
  eq(r.offset, 2, "alice's publish offset");
  await bob.getSubscription(channel).publish({ from: "bob", n: 3 });
  const bin = new Uint8Array([0, 1, 2, 0xff, 0xfe]);
  await alice.publish(channel, bin);
  await bob.publish(channel, new Uint8Array([9, 8, 7]));
  await alice.publish(channel, "a string");
  await alice.publish(channel, 42);
  await waitFor(() => got.alice.length === 7 && got.bob.length === 7, 5000, "all publications");
  eq(got.alice.map((p) => p.offset), [1, 2, 3, 4, 5, 6, 7], "alice's offsets");
  eq(got.bob.map((p) => p.offset), [1, 2, 3, 4, 5, 6, 7], "bob's offsets");
  for (const [who, list] of Object.entries(got)) {
    const tail = list.slice(-6);
    eq(tail[0].data, { from: "alice", n: 2 }, `${who}: alice's JSON`);
    eq(tail[0].info?.user, "alice", `${who}: alice's publication info`);
    eq(tail[1].data, { from: "bob", n: 3 }, `${who}: bob's JSON`);
    eq(tail[1].info?.user, "bob", `${who}: bob's publication info`);
    assert(tail[2].data instanceof Uint8Array, `${who}: binary stays binary`);
    eq([...tail[2].data], [...bin], `${who}: alice's bytes`);
    eq([...tail[3].data], [9, 8, 7], `${who}: bob's bytes`);
    eq([tail[4].data, tail[5].data], ["a string", 42], `${who}: string and number`);
  }
});

await check("history-presence-stats", async () => {
  const h = await alice.history(channel, { limit: 10 });
  eq(h.publications.map((p) => p.offset), [1, 2, 3, 4, 5, 6, 7], "history offsets");
  eq(h.publications[1].data, { from: "alice", n: 2 }, "history data");
  eq([...h.publications[4].data], [9, 8, 7], "history binary data");
  eq(h.offset, 7, "history position");
  eq(h.epoch, got.alice[0].epoch, "history epoch");
  const since = await alice.history(channel, { limit: 2, since: { offset: 5, epoch: h.epoch } });
  eq(since.publications.map((p) => p.data), ["a string", 42], "history since");
  const rev = await alice.history(channel, { limit: 2, reverse: true });
  eq(rev.publications.map((p) => p.offset), [7, 6], "history reverse");
  const pr = await alice.presence(channel);
  const users = Object.values(pr.clients).map((c) => c.user).sort();
  eq(users, ["alice", "bob"], "presence users");
  eq(pr.clients[alice.clientId]?.connInfo, { name: "alice" }, "presence connInfo");
  eq(pr.clients[alice.clientId]?.client, alice.clientId, "presence client id");
  eq(await alice.presenceStats(channel), { numClients: 2, numUsers: 2 }, "presence stats");
});

await check("errors-carry-the-servers-code", async () => {
  try {
    await alice.history("locked:nope", { limit: 1 });
    throw new Error("history of a locked namespace succeeded");
  } catch (e) {
    assert(e.code >= 100 && e.code < 200, `a server code, got ${e.code} ${e.message}`);
    assert(e.message.length > 0, "a message");
  }
});

await check("server-disconnect-recovers-over-webtransport", async () => {
  const before = sessions.length;
  const connecting = next(alice, "connecting");
  await api(opts.server, opts.apiKey, "disconnect", {
    user: "alice",
    disconnect: { code: 3011, reason: "force reconnect", reconnect: true },
  });
  const ctx = await connecting;
  eq([ctx.code, ctx.reason], [3011, "force reconnect"], "the server's code and reason");
  for (let n = 8; n <= 10; n++) await api(opts.server, opts.apiKey, "publish", { channel, data: { n } });
  await next(alice, "connected");
  eq(alice.transport, "webtransport", "reconnected transport");
  eq(sessions.length, before + 1, "a new session");
  await waitFor(() => got.alice.length === 10, 5000, "the recovered publications");
  eq(got.alice.slice(7).map((p) => [p.offset, p.data.n]), [[8, 8], [9, 9], [10, 10]], "recovered");
  const last = subscribed.at(-1);
  assert(last.wasRecovering && last.recovered, `recovered: ${JSON.stringify(last)}`);
  await sleep(200);
  eq(got.alice.length, 10, "no duplicate");
});

await check("leave-seen", async () => {
  bob.getSubscription(channel).unsubscribe();
  await waitFor(() => leaves.some((i) => i.user === "bob"), 5000, "bob's leave");
});

await check("room-commands-and-signals", async () => {
  // Room commands below the Room class (which needs RTCPeerConnection): the codec's part.
  const room = unique("room");
  const pushes = [];
  const onPush = alice._onPush.bind(alice);
  alice._onPush = (push, conn) => {
    pushes.push(push);
    onPush(push, conn);
  };
  const a = await alice._call("roomJoin", { room, peerId: "pa", data: { role: "host" } });
  eq([a.roomJoin.members ?? [], Boolean(a.roomJoin.polite)], [[], false], "first join");
  const b = await bob._call("roomJoin", { room, peerId: "pb", data: { role: "guest" } });
  const m = b.roomJoin.members;
  eq([m.length, m[0].peerId, m[0].data, m[0].info.user, b.roomJoin.polite], [1, "pa", { role: "host" }, "alice", true], "bob's join result");
  await waitFor(() => pushes.some((p) => p.roomJoin), 5000, "alice's roomJoin push");
  const rj = pushes.find((p) => p.roomJoin).roomJoin;
  eq([rj.room, rj.peer.peerId, rj.peer.data, rj.peer.info.user], [room, "pb", { role: "guest" }, "bob"], "roomJoin push");
  assert(Number(rj.peer.joinedAt) > 1_600_000_000_000, `joinedAt ${rj.peer.joinedAt}`);
  const cand = "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host";
  await bob._call("candidate", { room, to: "pa", candidate: { candidate: cand, sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "abcd" } });
  await waitFor(() => pushes.some((p) => p.signal?.candidate), 5000, "the candidate signal");
  const c = pushes.find((p) => p.signal?.candidate).signal;
  eq([c.room, c.from, c.candidate.sdpMid, c.candidate.sdpMLineIndex, c.candidate.usernameFragment], [room, "pb", "0", 0, "abcd"], "candidate signal");
  assert(c.candidate.candidate.includes("192.0.2.1 54321 typ host"), c.candidate.candidate);
  const sent = await alice._call("bye", { room, to: "pb", reason: "" });
  eq(sent.bye?.delivered, 1, "bye delivered");
  await bob._call("bye", { room, to: "pa", reason: "see you" });
  await waitFor(() => pushes.some((p) => p.signal && "bye" in p.signal), 5000, "the bye signal");
  eq(pushes.find((p) => p.signal && "bye" in p.signal).signal.bye, "see you", "bye reason");
  await bob._call("roomLeave", { room });
  await waitFor(() => pushes.some((p) => p.roomLeave), 5000, "alice's roomLeave push");
  eq(pushes.find((p) => p.roomLeave).roomLeave, { room, peerId: "pb" }, "roomLeave push");
  await alice._call("roomLeave", { room });
  alice._onPush = onPush;
});

await check("fallback-to-websocket-and-stay", async () => {
  const carol = new Client(opts.server, {
    token: token("carol"),
    transports: ["webtransport"],
    webtransport: RefusedTransport,
    websocket: WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 200,
  });
  carol.connect();
  await carol.ready();
  eq([carol.transport, refusedSessions], ["websocket", 1], "fell back once");
  const connected = next(carol, "connected");
  await api(opts.server, opts.apiKey, "disconnect", {
    user: "carol",
    disconnect: { code: 3011, reason: "force reconnect", reconnect: true },
  });
  await connected;
  eq([carol.transport, refusedSessions], ["websocket", 1], "the reconnect went straight to the WebSocket");
  carol.disconnect();
  carol.connect();
  await carol.ready();
  eq([carol.transport, refusedSessions], ["websocket", 2], "connect() tries WebTransport again");
  carol.disconnect();
  // No WebTransport at all (Node): the opt-in falls through to the WebSocket.
  const dave = new Client(opts.server, { token: token("dave"), transports: ["webtransport"], websocket: WebSocket });
  dave.connect();
  await dave.ready();
  eq(dave.transport, "websocket", "no WebTransport here");
  dave.disconnect();
});

await check("disconnect-closes-the-session", async () => {
  const s = sessions.length;
  alice.disconnect();
  eq(alice.state, "disconnected", "state");
  await waitFor(async () => ((await api(opts.server, opts.apiKey, "presence_stats", { channel })).result.numClients ?? 0) === 0,
    5000, "alice out of presence");
  eq(sessions.length, s, "no new session");
});

bob.disconnect();
done();
