#!/usr/bin/env node
// Real-browser end-to-end test of the JavaScript SDK (clients/js) as the binary serves it
// (`/sdk/switchboard.js`): pages built on nothing but that module, in Debian's Chromium driven
// by playwright-core. Scenarios, run in the order given:
//
//   chat     two pages (tokens for alice and bob) on one channel of a namespace with history,
//            presence and join/leave: each publishes, each receives both publications in order
//            with the publisher's user; each sees the other join; history holds both; presence
//            and presenceStats name both users; one disconnects and the other sees it leave
//   direct   two pages call each other with client.joinRoom(): roles (first impolite, second
//            polite), the default data channel open both ways, a message each way; the selected
//            candidate pair (getStats) is not relay; a leave is seen as peerleft
//   relay    the same with relayOnly: /v1/ice-servers hands out TURN credentials, and each page's
//            selected pair is local "relay"
//   media    two pages join with a stream from getUserMedia (Chromium's fake camera and
//            microphone): each page gets track events from the other, and its remote video
//            decodes frames
//   aiortc   a page joins a room as peer "browser" with the data channel "chat" and prints
//            "READY {json}"; the caller then starts the Python aiortc peer
//            (tests/peers/aiortc_call.py), which joins as the newcomer and offers; messages both
//            ways ("hello from aiortc" in, "hello from browser ..." and "ack" out), then it leaves
//   aiortc-answers  the other way round: the Python aiortc peer (tests/peers/aiortc_room.py,
//            started first) waits in room --room; a page joins it as the newcomer "browser",
//            offers with the SDK's default data channel "data" and trickles its candidates;
//            aiortc answers; messages both ways as above, then aiortc leaves
//   recipes  the two recipes of docs/clients.md, verbatim (the ```html blocks under
//            "## Live updates on my page" and "## A video call on my page"), served by a static
//            server on another loopback origin (http://localhost:PORT) against a
//            `switchboard serve` with no flags on 127.0.0.1:8080 (--base must be that):
//            live updates in two tabs (say() in each, both lists grow), then the video call in
//            two tabs (each shows the other's camera: a remote <video> playing decoded frames)
//
// The pages of every scenario are served from a second origin on loopback, a static server
// here (http://localhost:PORT, allowed by the server's default for loopback origins): the SDK
// pages' only script is a module importing { Client } from BASE/sdk/switchboard.js (CORS *),
// so the WebSocket, /v1/ice-servers and the rest are cross-origin requests. (A page fulfilled by
// playwright on the server's own origin would not do: Chromium counts such a document as public
// and blocks its connections to loopback, ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS.)
//
// usage: node sdk_e2e.mjs --base http://127.0.0.1:PORT [--jwt-secret S]
//          [--scenarios chat,direct,relay,media,aiortc,aiortc-answers,recipes] [--room ROOM]
//          [--docs docs/clients.md]
//          [--deadline-ms MS] [--chromium /usr/bin/chromium]
//
// stdout: "READY {...}" (aiortc), one "SCENARIO name {json}" line per passed scenario and, last,
// "RESULT {...}" ({ok, scenarios, failed, error}); progress and diagnostics go to stderr. Exit
// code 0 only when every scenario passed.

import { createHmac } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags, baseUrl, list, absolute, runScenarios, tempProfile, WEBRTC_ARGS } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const STEP_MS = 25_000; // bound of every single wait
const SCENARIOS = ["chat", "direct", "relay", "media", "aiortc", "aiortc-answers", "recipes"];

// ------------------------------------------------------------------ arguments

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    {
      base: "",
      jwtSecret: "",
      room: "",
      scenarios: ["chat", "direct", "relay", "media"],
      docs: path.join(ROOT, "docs/clients.md"),
      deadlineMs: 120_000,
    },
    {
      "--base": ["base", baseUrl],
      "--jwt-secret": "jwtSecret",
      "--room": "room",
      "--scenarios": ["scenarios", list],
      "--docs": ["docs", absolute],
      "--deadline-ms": ["deadlineMs", Number],
    },
  );
  if (!o.base) throw new Error("--base http://HOST:PORT is required");
  for (const s of o.scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  if (o.scenarios.includes("chat") && !o.jwtSecret) throw new Error("scenario chat needs --jwt-secret");
  if (o.scenarios.includes("aiortc-answers") && !o.room) throw new Error("scenario aiortc-answers needs --room");
  return o;
}

const log = (...a) => console.error("[sdk_e2e]", ...a);

// ------------------------------------------------------------------ the test page

// The page every SDK scenario runs: the SDK module from the server, and a small app on it whose
// state the test reads (`window.app.snapshot()`). Nothing else is loaded.
const pageHtml = (base) => `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>switchboard SDK e2e</title></head>
<body>
<video id="local" autoplay muted playsinline width="160"></video>
<div id="remote"></div>
<script type="module">
import { Client } from "${base}/sdk/switchboard.js";

const app = {
  client: null,
  sub: null,
  room: null,
  events: [],
  errors: [],
  publications: [],
  joins: [],
  leaves: [],
  messages: [],
  peers: {},

  note(kind, detail) {
    this.events.push({ kind, ...detail, at: Date.now() });
    if (this.events.length > 300) this.events.shift();
  },

  async connect(token) {
    this.client = new Client("${base}", token ? { token } : {});
    this.client.on("state", (c) => this.note("state", c));
    this.client.on("error", (c) => this.errors.push("client: " + (c.error?.message ?? c.type)));
    this.client.connect();
    await this.client.ready();
    return { clientId: this.client.clientId, user: this.client.user, transport: this.client.transport };
  },

  async subscribe(channel) {
    const sub = this.client.newSubscription(channel);
    this.sub = sub;
    sub.on("publication", (p) =>
      this.publications.push({ data: p.data, offset: p.offset, user: p.info?.user ?? null }));
    sub.on("join", (c) => this.joins.push(c.info?.user ?? null));
    sub.on("leave", (c) => this.leaves.push(c.info?.user ?? null));
    sub.on("error", (c) => this.errors.push("subscription: " + (c.error?.message ?? c.type)));
    sub.subscribe();
    await sub.ready();
    return { state: sub.state, position: sub.position };
  },

  async publish(data) {
    return this.sub.publish(data);
  },

  async history() {
    const h = await this.sub.history({ limit: 10 });
    return h.publications.map((p) => ({ data: p.data, offset: p.offset }));
  },

  async presence() {
    const p = await this.sub.presence();
    const s = await this.sub.presenceStats();
    return { users: Object.values(p.clients).map((c) => c.user).sort(), stats: s };
  },

  disconnect() {
    this.client.disconnect();
  },

  peer(id) {
    return (this.peers[id] ??= { joined: false, left: false, open: false, tracks: [], states: [] });
  },

  async join(name, opts = {}) {
    let stream;
    if (opts.media) {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      document.querySelector("#local").srcObject = stream;
    }
    const room = await this.client.joinRoom(name, {
      peerId: opts.peerId,
      relayOnly: Boolean(opts.relayOnly),
      dataChannel: opts.dataChannel,
      stream,
    });
    this.room = room;
    room.on("peerjoined", ({ peer }) => { this.peer(peer.id).joined = true; });
    room.on("peerleft", ({ peer, timedOut }) => Object.assign(this.peer(peer.id), { left: true, timedOut }));
    room.on("channelopen", ({ peer }) => { this.peer(peer.id).open = true; });
    room.on("message", ({ peer, data }) => this.messages.push({ from: peer.id, data }));
    room.on("connectionstatechange", ({ peer, state }) => this.peer(peer.id).states.push(state));
    room.on("error", (c) => this.errors.push("room: " + (c.error?.message ?? String(c.error))));
    room.on("track", ({ peer, track, streams }) => {
      this.peer(peer.id).tracks.push(track.kind);
      let video = document.getElementById("remote-" + peer.id);
      if (!video) {
        video = Object.assign(document.createElement("video"), {
          id: "remote-" + peer.id, autoplay: true, playsInline: true, muted: true, width: 160,
        });
        document.querySelector("#remote").append(video);
      }
      video.srcObject = streams[0] ?? new MediaStream([track]);
    });
    return { peerId: room.peerId, polite: room.polite, members: [...room.peers.keys()] };
  },

  send(text) {
    return this.room.send(text);
  },

  async selectedPair(id) {
    const pc = this.room?.peers.get(id)?.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      stats.forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
      });
    }
    if (!pair) return null;
    const cand = (cid) => {
      const c = stats.get(cid);
      return c ? {
        candidateType: c.candidateType, address: c.address ?? null, port: c.port,
        protocol: c.protocol, relayProtocol: c.relayProtocol ?? null,
      } : null;
    };
    return { state: pair.state, local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId) };
  },

  video(id) {
    const v = document.getElementById("remote-" + id);
    if (!v) return null;
    const q = v.getVideoPlaybackQuality?.();
    return {
      videoWidth: v.videoWidth, videoHeight: v.videoHeight, paused: v.paused,
      currentTime: v.currentTime, framesDecoded: q ? q.totalVideoFrames : null,
    };
  },

  async leave() {
    await this.room.leave();
  },

  snapshot() {
    return {
      state: this.client?.state ?? null,
      room: this.room ? { name: this.room.name, peerId: this.room.peerId, polite: this.room.polite } : null,
      publications: this.publications,
      joins: this.joins,
      leaves: this.leaves,
      messages: this.messages.map((m) => ({ from: m.from, data: typeof m.data === "string" ? m.data : "(binary)" })),
      peers: this.peers,
      errors: this.errors,
      events: this.events.slice(-20),
    };
  },
};
window.app = app;
</script>
</body>
</html>
`;

// ------------------------------------------------------------------ browser

const chromium = await loadChromium();
const opts = parseOrExit("sdk_e2e", parseArgs);
requireChromium(opts.chromium);

// As call_e2e.mjs: the machine notes' flags, fake media devices, WebRTC on loopback with host
// candidates as addresses. No --autoplay-policy flag: the recipes must play with Chromium's own.
const CHROMIUM_ARGS = [
  ...BASE_ARGS,
  ...WEBRTC_ARGS,
];

const [profile, removeProfile] = tempProfile();

let context = null;
const pageLogs = new Map(); // page -> [lines]
const fatal = []; // uncaught page errors

async function launch() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1024, height: 700 },
    permissions: ["camera", "microphone"],
  });
}

async function newPage(label) {
  const page = await context.newPage();
  const lines = [];
  pageLogs.set(page, lines);
  page.on("console", (m) => {
    lines.push(`${label} console.${m.type()}: ${m.text()}`);
    if (lines.length > 200) lines.shift();
  });
  page.on("pageerror", (e) => {
    const line = `${label} uncaught: ${e.message}`;
    lines.push(line);
    fatal.push(line);
  });
  return page;
}

/** The static server's origin (http://localhost:PORT), set at the start. */
let pagesOrigin = "";

/** A page of the test app (from the static server), the SDK loaded. */
async function openApp(label) {
  const page = await newPage(label);
  const url = `${pagesOrigin}/sdk-e2e/page.html`;
  const r = await page.goto(url, { waitUntil: "load", timeout: STEP_MS });
  assert(r && r.ok(), `GET ${url}: HTTP ${r?.status()}`);
  await page.waitForFunction(() => Boolean(window.app), null, { timeout: STEP_MS });
  return page;
}

function snapshot(page) {
  return page.evaluate(() => window.app.snapshot());
}

/**
 * Waits until fn(snapshot, arg) is true (polled every 150 ms). Fails with `what`, the last
 * snapshot and the page's recent log.
 */
async function waitFor(page, what, fn, arg, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  let state = null;
  let lastError = null;
  for (;;) {
    try {
      state = await snapshot(page);
      if (fn(state, arg)) return state;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(
    `timed out after ${timeout / 1000} s waiting for ${what}\n` +
      `page state: ${JSON.stringify(state, null, 1)}\n${recentLog(page)}` +
      (lastError ? `\n(last error: ${lastError.message.split("\n")[0]})` : ""),
  );
}

/** Polls `probe()` (async) until `ok(value)`; returns the value or fails with `what`. */
async function until(what, probe, ok, timeout = STEP_MS, page = null) {
  const end = Date.now() + timeout;
  let value;
  let lastError = null;
  for (;;) {
    try {
      value = await probe();
      if (ok(value)) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `timed out after ${timeout / 1000} s waiting for ${what}; last: ${JSON.stringify(value)}` +
      (lastError ? ` (last error: ${lastError.message.split("\n")[0]})` : "") +
      (page ? `\n${recentLog(page)}` : ""),
  );
}

function recentLog(page) {
  return `  recent page log:\n  ${(pageLogs.get(page) ?? []).slice(-15).join("\n  ")}`;
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function noErrors(state, label) {
  assert(state.errors.length === 0, `${label} reported errors: ${JSON.stringify(state.errors)}`);
}

async function closePages(...pages) {
  for (const p of pages) await p.close().catch(() => {});
}

const rand = () => Math.random().toString(36).slice(2, 8);

/** An HS256 JWT (what --jwt-hmac-secret verifies). */
function jwt(secret, claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc(claims);
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// ------------------------------------------------------------------ scenarios

/** Two pages in one room through joinRoom; data channel both ways; returns their summaries. */
async function call(name, roomOpts) {
  const room = `sdk-${name}-${rand()}`;
  const aId = `${name}-a`;
  const bId = `${name}-b`;
  const a = await openApp(aId);
  const b = await openApp(bId);
  try {
    await a.evaluate(() => window.app.connect());
    await b.evaluate(() => window.app.connect());
    const ja = await a.evaluate(([r, o]) => window.app.join(r, o), [room, { ...roomOpts, peerId: aId }]);
    const jb = await b.evaluate(([r, o]) => window.app.join(r, o), [room, { ...roomOpts, peerId: bId }]);
    assert(ja.polite === false, `${aId} joined an empty room and must be impolite: ${JSON.stringify(ja)}`);
    assert(jb.polite === true, `${bId} joined second and must be polite: ${JSON.stringify(jb)}`);
    const open = (s, other) => Boolean(s.peers[other]?.open);
    await waitFor(a, `${aId}: data channel to ${bId} open`, open, bId);
    await waitFor(b, `${bId}: data channel to ${aId} open`, open, aId);
    const textA = `hello from ${aId} ${rand()}`;
    const textB = `hello from ${bId} ${rand()}`;
    assert((await a.evaluate((t) => window.app.send(t), textA)) === 1, `${aId}: room.send reached no peer`);
    assert((await b.evaluate((t) => window.app.send(t), textB)) === 1, `${bId}: room.send reached no peer`);
    const got = (s, m) => s.messages.some((x) => x.from === m.from && x.data === m.data);
    await waitFor(b, `${bId} to receive "${textA}"`, got, { from: aId, data: textA });
    await waitFor(a, `${aId} to receive "${textB}"`, got, { from: bId, data: textB });
    const pairOf = (page, other) =>
      until(`${other}'s page: a selected candidate pair`, () =>
        page.evaluate((o) => window.app.selectedPair(o), other), (p) => Boolean(p?.local && p?.remote), STEP_MS, page);
    const pairA = await pairOf(a, bId);
    const pairB = await pairOf(b, aId);
    let sa = await snapshot(a);
    let sb = await snapshot(b);
    noErrors(sa, aId);
    noErrors(sb, bId);
    const summary = (s, other, pair) => ({
      peer: s.room.peerId,
      polite: s.room.polite,
      sawJoin: s.peers[other]?.joined ?? false,
      states: s.peers[other]?.states ?? [],
      received: s.messages.filter((m) => m.from === other).map((m) => m.data),
      selectedPair: pair,
    });
    const out = { room, a: summary(sa, bId, pairA), b: summary(sb, aId, pairB), pages: { a, b, aId, bId } };
    assert(out.a.received.length === 1 && out.a.received[0] === textB, `${aId} received ${JSON.stringify(out.a.received)}`);
    assert(out.b.received.length === 1 && out.b.received[0] === textA, `${bId} received ${JSON.stringify(out.b.received)}`);
    assert(out.a.sawJoin && out.b.sawJoin, `peerjoined not seen on both sides: ${JSON.stringify([out.a, out.b])}`);
    return out;
  } catch (e) {
    await closePages(a, b);
    throw e;
  }
}

/** b leaves; a sees peerleft; both pages closed. */
async function leaveAndClose(r) {
  const { a, b, aId, bId } = r.pages;
  delete r.pages;
  try {
    await b.evaluate(() => window.app.leave());
    const s = await waitFor(a, `${aId} to see ${bId} leave`, (st, o) => st.peers[o]?.left === true, bId);
    r.a.sawLeave = true;
    noErrors(s, aId);
  } finally {
    await closePages(a, b);
  }
  return r;
}

const candidateType = (side) => side.selectedPair?.local?.candidateType;

const scenarios = {
  async chat() {
    const channel = `chat:sdk-${rand()}`;
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const a = await openApp("alice");
    const b = await openApp("bob");
    try {
      const ca = await a.evaluate((t) => window.app.connect(t), jwt(opts.jwtSecret, { sub: "alice", exp }));
      const cb = await b.evaluate((t) => window.app.connect(t), jwt(opts.jwtSecret, { sub: "bob", exp }));
      assert(ca.user === "alice" && cb.user === "bob", `connected as ${JSON.stringify([ca, cb])}`);
      assert(ca.transport === "websocket" && cb.transport === "websocket", `transports ${JSON.stringify([ca, cb])}`);
      await a.evaluate((c) => window.app.subscribe(c), channel);
      await b.evaluate((c) => window.app.subscribe(c), channel);
      // alice was subscribed first: she sees bob join.
      await waitFor(a, "alice to see bob join", (s) => s.joins.includes("bob"));
      const pa = await a.evaluate(() => window.app.publish({ text: "hi from alice" }));
      const pb = await b.evaluate(() => window.app.publish({ text: "hi from bob" }));
      const both = (s) => s.publications.length >= 2;
      const sa = await waitFor(a, "alice to receive both publications", both);
      const sb = await waitFor(b, "bob to receive both publications", both);
      const seen = (s) => s.publications.map((p) => `${p.user}: ${p.data.text} @${p.offset}`);
      const want = [`alice: hi from alice @${pa.offset}`, `bob: hi from bob @${pb.offset}`];
      for (const [s, who] of [[sa, "alice"], [sb, "bob"]]) {
        assert(
          JSON.stringify(seen(s)) === JSON.stringify(want),
          `${who} received ${JSON.stringify(seen(s))}, expected ${JSON.stringify(want)}`,
        );
      }
      assert(pb.offset === pa.offset + 1, `offsets ${pa.offset}, ${pb.offset}`);
      const history = await b.evaluate(() => window.app.history());
      assert(
        JSON.stringify(history.map((p) => p.data.text)) === JSON.stringify(["hi from alice", "hi from bob"]),
        `history: ${JSON.stringify(history)}`,
      );
      const presence = await a.evaluate(() => window.app.presence());
      assert(
        JSON.stringify(presence.users) === JSON.stringify(["alice", "bob"]) &&
          presence.stats.numClients === 2 && presence.stats.numUsers === 2,
        `presence: ${JSON.stringify(presence)}`,
      );
      await b.evaluate(() => window.app.disconnect());
      const after = await waitFor(a, "alice to see bob leave", (s) => s.leaves.includes("bob"));
      noErrors(after, "alice");
      noErrors(await snapshot(b), "bob");
      return {
        channel,
        users: [ca.user, cb.user],
        received: { alice: seen(sa), bob: seen(sb) },
        history: history.map((p) => `${p.offset} ${p.data.text}`),
        presence,
        joins: after.joins,
        leaves: after.leaves,
      };
    } finally {
      await closePages(a, b);
    }
  },

  async direct() {
    const r = await call("direct", {});
    for (const side of [r.a, r.b]) {
      const t = candidateType(side);
      assert(
        ["host", "srflx", "prflx"].includes(t),
        `${side.peer}: without relayOnly the selected local candidate should be host/srflx/prflx: ${JSON.stringify(side.selectedPair)}`,
      );
    }
    return leaveAndClose(r);
  },

  async relay() {
    const ice = await (await fetch(`${opts.base}/v1/ice-servers`)).json();
    const turn = (ice.iceServers ?? []).filter((s) => [].concat(s.urls).some((u) => /^turns?:/.test(u)));
    assert(
      turn.length > 0 && turn.every((s) => s.username && s.credential),
      `/v1/ice-servers hands out no TURN credentials: ${JSON.stringify(ice)}`,
    );
    const r = await call("relay", { relayOnly: true });
    for (const side of [r.a, r.b]) {
      assert(
        candidateType(side) === "relay",
        `${side.peer}: relayOnly but the selected local candidate is ${JSON.stringify(side.selectedPair?.local)}`,
      );
    }
    r.turnUrls = turn.flatMap((s) => [].concat(s.urls));
    return leaveAndClose(r);
  },

  async media() {
    const r = await call("media", { media: true });
    const { a, b, aId, bId } = r.pages;
    const playing = (v) => Boolean(v && v.videoWidth > 0 && v.framesDecoded > 0 && !v.paused);
    const va = await until(`${aId}: ${bId}'s video decoding`, () => a.evaluate((o) => window.app.video(o), bId), playing, STEP_MS, a);
    const vb = await until(`${bId}: ${aId}'s video decoding`, () => b.evaluate((o) => window.app.video(o), aId), playing, STEP_MS, b);
    const sa = await snapshot(a);
    const sb = await snapshot(b);
    r.a.tracks = sa.peers[bId].tracks.sort();
    r.b.tracks = sb.peers[aId].tracks.sort();
    for (const side of [r.a, r.b]) {
      assert(JSON.stringify(side.tracks) === '["audio","video"]', `${side.peer}: track events ${JSON.stringify(side.tracks)}`);
    }
    r.a.video = va;
    r.b.video = vb;
    return leaveAndClose(r);
  },

  async aiortc() {
    const room = `sdk-aiortc-${rand()}`;
    const me = "browser";
    const other = "aiortc";
    const page = await openApp(me);
    try {
      await page.evaluate(() => window.app.connect());
      const j = await page.evaluate(([r, o]) => window.app.join(r, o), [room, { peerId: me, dataChannel: "chat" }]);
      assert(j.polite === false, `alone in the room, the page must be impolite: ${JSON.stringify(j)}`);
      process.stdout.write(`READY ${JSON.stringify({ room, peer: me, expect: other })}\n`);
      const slow = 45_000; // includes starting Python and importing aiortc
      await waitFor(page, `${other} to join and open the data channel`, (s, o) => s.peers[o]?.open, other, slow);
      await waitFor(page, `"hello from ${other}"`, (s, o) => s.messages.some((m) => m.from === o && m.data === `hello from ${o}`), other);
      const hello = `hello from ${me} ${rand()}`;
      assert((await page.evaluate((t) => window.app.send(t), hello)) === 1, "room.send reached no peer");
      const pair = await until(`a selected pair with ${other}`, () =>
        page.evaluate((o) => window.app.selectedPair(o), other), (p) => Boolean(p?.local), STEP_MS, page);
      assert((await page.evaluate(() => window.app.send("ack"))) === 1, "room.send(ack) reached no peer");
      // The Python peer leaves the room once it has read the ack.
      const s = await waitFor(page, `${other} to leave after the ack`, (st, o) => st.peers[o]?.left === true, other);
      noErrors(s, me);
      return {
        room,
        sent: [hello, "ack"],
        received: s.messages.filter((m) => m.from === other).map((m) => m.data),
        selectedPair: pair,
      };
    } finally {
      await closePages(page);
    }
  },

  async "aiortc-answers"() {
    const room = opts.room;
    const me = "browser";
    const other = "aiortc";
    const page = await openApp(me);
    try {
      await page.evaluate(() => window.app.connect());
      const j = await page.evaluate(([r, o]) => window.app.join(r, o), [room, { peerId: me }]);
      assert(
        j.polite === true && j.members.includes(other),
        `the page joins after ${other}, so polite, with ${other} among the members: ${JSON.stringify(j)}`,
      );
      await waitFor(page, `the data channel to ${other} open`, (s, o) => s.peers[o]?.open, other, 40_000);
      const hello = `hello from ${me} ${rand()}`;
      assert((await page.evaluate((t) => window.app.send(t), hello)) === 1, "room.send reached no peer");
      await waitFor(page, `"hello from ${other}"`, (s, o) => s.messages.some((m) => m.from === o && m.data === `hello from ${o}`), other);
      const pair = await until(`a selected pair with ${other}`, () =>
        page.evaluate((o) => window.app.selectedPair(o), other), (p) => Boolean(p?.local), STEP_MS, page);
      assert((await page.evaluate(() => window.app.send("ack"))) === 1, "room.send(ack) reached no peer");
      const s = await waitFor(page, `${other} to leave after the ack`, (st, o) => st.peers[o]?.left === true, other);
      noErrors(s, me);
      return {
        room,
        polite: j.polite,
        sent: [hello, "ack"],
        received: s.messages.filter((m) => m.from === other).map((m) => m.data),
        selectedPair: pair,
      };
    } finally {
      await closePages(page);
    }
  },

  async recipes() {
    const origin = pagesOrigin;
    const pages = [];
    try {
      const out = { origin, base: opts.base };
      // 1. Live updates: two tabs; say() in each; both lists show both, in order.
      const subscriptions = async () => (await (await fetch(`${opts.base}/healthz`)).json()).components.hub.subscriptions;
      const before = await subscriptions();
      const tabs = [];
      for (const label of ["live-1", "live-2"]) {
        const p = await newPage(label);
        pages.push(p);
        const r = await p.goto(`${origin}/live.html`, { waitUntil: "load", timeout: STEP_MS });
        assert(r && r.ok(), `GET ${origin}/live.html: HTTP ${r?.status()}`);
        await p.waitForFunction(() => typeof window.say === "function", null, { timeout: STEP_MS });
        tabs.push(p);
      }
      // The recipe has no hook: the server's /healthz tells when both tabs are subscribed.
      await until("both tabs subscribed (/healthz)", subscriptions, (n) => n >= before + 2);
      const items = (p) => p.$$eval("#news li", (lis) => lis.map((li) => li.textContent));
      await tabs[0].evaluate(() => window.say("hi"));
      await until("both lists to show the first say()", () => Promise.all(tabs.map(items)),
        (lists) => lists.every((l) => l.length === 1), STEP_MS, tabs[1]);
      await tabs[1].evaluate(() => window.say("hello back"));
      const lists = await until("both lists to show both", () => Promise.all(tabs.map(items)),
        (l) => l.every((x) => x.length === 2), STEP_MS, tabs[0]);
      const want = ['{"text":"hi"}', '{"text":"hello back"}'];
      for (const l of lists) assert(JSON.stringify(l) === JSON.stringify(want), `lists ${JSON.stringify(lists)}`);
      out.live = { lists };
      await closePages(...tabs);

      // 2. A video call: two tabs; each shows the other's camera in a <video> of its own.
      const calls = [];
      for (const label of ["video-1", "video-2"]) {
        const p = await newPage(label);
        pages.push(p);
        const r = await p.goto(`${origin}/video.html`, { waitUntil: "load", timeout: STEP_MS });
        assert(r && r.ok(), `GET ${origin}/video.html: HTTP ${r?.status()}`);
        calls.push(p);
      }
      // Read through CDP without a user gesture: playwright's evaluate counts as one (it would
      // activate the page and lift the autoplay policy the recipe must live with).
      const remoteVideos = (p) =>
        quietEval(p, () => ({
          activated: navigator.userActivation.hasBeenActive,
          local: [...document.querySelectorAll("video")].filter((v) => v.muted && v.srcObject).length,
          remote: [...document.querySelectorAll("video")].filter((v) => v.srcObject && !v.muted).map((v) => ({
            id: v.id, videoWidth: v.videoWidth, paused: v.paused, currentTime: v.currentTime,
            framesDecoded: v.getVideoPlaybackQuality().totalVideoFrames,
            tracks: v.srcObject.getTracks().map((t) => t.kind).sort(),
          })),
        }));
      out.video = [];
      for (const [i, p] of calls.entries()) {
        const seen = await until(`video tab ${i + 1}: the other's video playing`, () => remoteVideos(p),
          ({ remote: vs }) => vs.length === 1 && vs[0].videoWidth > 0 && vs[0].framesDecoded > 0 && !vs[0].paused && vs[0].currentTime > 0,
          STEP_MS, p);
        out.video.push({ remote: seen.remote[0], local: seen.local, activated: seen.activated });
      }
      for (const v of out.video) {
        assert(v.local === 1, `a tab without its own camera shown: ${JSON.stringify(out.video)}`);
        assert(v.activated === false, `a video tab got a user gesture, autoplay not tested: ${JSON.stringify(out.video)}`);
      }
      await closePages(...calls);
      assert(fatal.length === 0, `page errors: ${fatal.join("; ")}`);
      return out;
    } finally {
      await closePages(...pages);
    }
  },
};

/** Evaluates `fn()` in the page through CDP with no user gesture; its JSON value. */
async function quietEval(page, fn) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const r = await cdp.send("Runtime.evaluate", {
      expression: `(${fn.toString()})()`,
      returnByValue: true,
      awaitPromise: true,
      userGesture: false,
    });
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
    return r.result.value;
  } finally {
    await cdp.detach().catch(() => {});
  }
}

/** The ```html block that follows the heading `## title` in the markdown file `file`. */
function recipe(file, title) {
  const md = fs.readFileSync(file, "utf8");
  const at = md.indexOf(`\n## ${title}\n`);
  assert(at >= 0, `${file}: no "## ${title}" heading`);
  const rest = md.slice(at + title.length + 5);
  const m = /^```html\n([\s\S]*?)\n```$/m.exec(rest.split(/\n## /)[0]);
  assert(m, `${file}: no \`\`\`html block under "## ${title}"`);
  return m[1];
}

/** A static server for `files` on a loopback port: {server, origin} (origin uses "localhost"). */
function staticServer(files) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      const name = new URL(req.url, "http://x").pathname;
      if (name === "/favicon.ico") {
        res.writeHead(204).end();
        return;
      }
      const body = files[name];
      if (body === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(body);
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      resolve({ server, origin: `http://localhost:${server.address().port}` });
    });
  });
}

// ------------------------------------------------------------------ main

const result = { ok: false, scenarios: {}, failed: null };

const deadline = setTimeout(() => {
  console.error(`sdk_e2e: deadline of ${opts.deadlineMs} ms passed`);
  result.failed = result.failed ?? "deadline";
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(4);
}, opts.deadlineMs);

let code = 0;
let pages = null;
try {
  const files = { "/sdk-e2e/page.html": pageHtml(opts.base) };
  if (opts.scenarios.includes("recipes")) {
    files["/live.html"] = recipe(opts.docs, "Live updates on my page");
    files["/video.html"] = recipe(opts.docs, "A video call on my page");
  }
  pages = await staticServer(files);
  pagesOrigin = pages.origin;
  log(`pages served from ${pagesOrigin}`);
  await launch();
  await runScenarios(scenarios, opts.scenarios, result, log);
  assert(fatal.length === 0, `uncaught page errors:\n${fatal.join("\n")}`);
  result.failed = null;
  result.ok = true;
} catch (e) {
  code = 1;
  result.error = e.message;
  console.error(`sdk_e2e: scenario ${result.failed} failed: ${e.message}`);
  if (fatal.length) console.error(`page errors:\n${fatal.join("\n")}`);
} finally {
  if (context) await context.close().catch(() => {});
  pages?.server.close();
  removeProfile();
  clearTimeout(deadline);
}
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
process.exit(code);
