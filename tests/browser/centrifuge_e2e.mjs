#!/usr/bin/env node
// centrifuge-js (npm `centrifuge` 5.8.0, pinned in tests/compat/package-lock.json) in a real
// browser against switchboard's Centrifugo client protocol at /connection/websocket: Debian's
// Chromium driven by playwright-core. The page imports the SDK's own ES module builds, unchanged
// (tests/compat/node_modules/centrifuge/build/index.mjs for JSON, build/protobuf/index.mjs for
// protobuf), served with the page by a static server here on a second loopback origin
// (http://localhost:PORT, allowed by the server's default for loopback origins), so the
// WebSocket is a cross-origin one, as on a real site.
//
// The checks run in the page and use the browser's own WebSocket (the page only wraps the
// global constructor to record what it opened: URL, subprotocol, close code). Two helpers are
// exposed from Node to the page: `sbJwt(sub)` mints an HS256 connection token with the server's
// secret, `sbApi(method, body)` calls the server API (/api/METHOD, X-API-Key) — the key never
// reaches the page.
//
//   browser-json-anonymous-pubsub     no token; subscribe; publications made through /api/publish
//                                     arrive in order with offsets; a client publish comes back
//   browser-json-presence-history     presence, presence stats and history of that channel
//   browser-json-token-user-join      tokens for alice and bob: presence names both users, alice
//                                     sees bob join and leave (namespace `room` with presence and
//                                     join_leave, as the test's config gives it)
//   browser-json-refused-token        a bad token: closed with 3500, no reconnect
//   browser-json-server-disconnect    /api/disconnect of the token's user: closed with 3503, the SDK
//                                     reports it and does not reconnect
//   browser-json-rpc-not-available    client.rpc() is answered with error 108
//   browser-protobuf-pubsub-history   the protobuf build: subprotocol centrifuge-protobuf, binary
//                                     frames; a JSON publication from /api/publish arrives as its
//                                     JSON bytes, a binary client publish comes back byte-exact,
//                                     presence and history; rpc answered 108
//
// usage: node centrifuge_e2e.mjs --addr 127.0.0.1:PORT --api-key KEY --jwt-secret SECRET
//          [--chromium /usr/bin/chromium] [--deadline-ms MS]
//
// stdout: "OK NAME" / "FAIL NAME: why" per check, then "DONE N failed"; diagnostics on stderr.
// Exit code 0 only when every check passed.

import { createHmac } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const BUILD = path.join(ROOT, "tests/compat/node_modules/centrifuge/build");
const CHECK_MS = 30_000; // bound of one check

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    { addr: "", apiKey: "", jwtSecret: "", deadlineMs: 150_000 },
    { "--addr": "addr", "--api-key": "apiKey", "--jwt-secret": "jwtSecret", "--deadline-ms": ["deadlineMs", Number] },
  );
  if (!o.addr || !o.apiKey || !o.jwtSecret) throw new Error("--addr, --api-key and --jwt-secret are required");
  return o;
}

const opts = parseOrExit("centrifuge_e2e", parseArgs);
requireChromium(opts.chromium);
for (const f of ["index.mjs", "protobuf/index.mjs"]) {
  if (!fs.existsSync(path.join(BUILD, f))) {
    console.error(`${BUILD}/${f} is missing: run scripts/test-deps (npm ci in tests/compat)`);
    process.exit(3);
  }
}
const chromium = await loadChromium();
const log = (...a) => console.error("[centrifuge_e2e]", ...a);

// ------------------------------------------------------------------ Node-side helpers

const b64url = (b) => Buffer.from(b).toString("base64url");
function jwt(sub) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = createHmac("sha256", opts.jwtSecret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

async function api(method, body) {
  const r = await fetch(`http://${opts.addr}/api/${method}`, {
    method: "POST",
    headers: { "X-API-Key": opts.apiKey, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok || j.error) throw new Error(`api ${method}: HTTP ${r.status} ${JSON.stringify(j)}`);
  return j.result;
}

// ------------------------------------------------------------------ the page

// The checks, in the page. Each returns a short JSON summary or throws.
const CHECKS_JS = String.raw`
import { Centrifuge } from "/centrifuge.mjs";
import { Centrifuge as CentrifugeProtobuf } from "/centrifuge.protobuf.mjs";

const ENDPOINT = "ws://" + ADDR + "/connection/websocket";
// Channels of this run (a server may see several runs).
const RUN = Date.now().toString(36);
const NEWS = "browser-news-" + RUN;
const ROOM = "room:browser-" + RUN;
const BINARY = "browser-binary-" + RUN;

// Record every WebSocket the page opens (the browser's own, wrapped only to look).
const sockets = [];
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(url, protocols) {
    super(url, protocols);
    const rec = { url: String(url), protocol: null, binaryType: null, closeCode: null };
    sockets.push(rec);
    this.addEventListener("open", () => { rec.protocol = this.protocol; rec.binaryType = this.binaryType; });
    this.addEventListener("close", (e) => { rec.closeCode = e.code; });
  }
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, pred, ms = 10000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await sleep(25);
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
const json = (v) => JSON.stringify(v);
const client = (Build, opts = {}) =>
  new Build(ENDPOINT, { minReconnectDelay: 100, maxReconnectDelay: 300, ...opts });

const checks = {
  async "browser-json-anonymous-pubsub"() {
    const c = client(Centrifuge);
    const connected = [];
    c.on("connected", (ctx) => connected.push(ctx));
    const sub = c.newSubscription(NEWS);
    const got = [];
    sub.on("publication", (ctx) => got.push([ctx.offset, ctx.data]));
    sub.subscribe();
    c.connect();
    await sub.ready(5000);
    assert(connected.length === 1 && connected[0].transport === "websocket" && connected[0].client,
      "connected " + json(connected));
    const ws = sockets.at(-1);
    assert(ws.url === ENDPOINT && ws.protocol === "", "socket " + json(ws));
    await sbApi("publish", { channel: NEWS, data: { n: 1 } });
    await sbApi("publish", { channel: NEWS, data: { n: 2 } });
    await sub.publish({ n: 3 });
    await until("3 publications", () => got.length >= 3);
    await sleep(200);
    assert(json(got) === json([[1, { n: 1 }], [2, { n: 2 }], [3, { n: 3 }]]), "got " + json(got));
    c.disconnect();
    return { client: connected[0].client, got };
  },

  async "browser-json-presence-history"() {
    const c = client(Centrifuge);
    const sub = c.newSubscription(NEWS);
    sub.subscribe();
    c.connect();
    await sub.ready(5000);
    // The previous check's client has just left: presence settles on this one.
    let p = null;
    const end = Date.now() + 5000;
    while (Object.keys((p = await sub.presence()).clients).length !== 1 && Date.now() < end) await sleep(50);
    const ids = Object.keys(p.clients);
    assert(ids.length === 1, "presence " + json(p));
    const s = await sub.presenceStats();
    assert(s.numClients === 1 && s.numUsers === 1, "presence stats " + json(s));
    const h = await sub.history({ limit: 10 });
    assert(h.publications.map((x) => x.data.n).join() === "1,2,3" && h.offset === 3 && h.epoch,
      "history " + json(h));
    const last = await sub.history({ limit: 1, reverse: true });
    assert(last.publications.length === 1 && last.publications[0].data.n === 3, "reverse history " + json(last));
    const since = await sub.history({ limit: 10, since: { offset: 1, epoch: h.epoch } });
    assert(since.publications.map((x) => x.offset).join() === "2,3", "history since 1 " + json(since));
    c.disconnect();
    return { presence: ids.length, history: h.publications.length, epoch: h.epoch };
  },

  async "browser-json-token-user-join"() {
    const a = client(Centrifuge, { token: await sbJwt("alice") });
    const b = client(Centrifuge, { token: await sbJwt("bob") });
    const joins = [];
    const leaves = [];
    const subA = a.newSubscription(ROOM);
    subA.on("join", (ctx) => joins.push(ctx.info.user));
    subA.on("leave", (ctx) => leaves.push(ctx.info.user));
    subA.subscribe();
    a.connect();
    await subA.ready(5000);
    const subB = b.newSubscription(ROOM);
    subB.subscribe();
    b.connect();
    await subB.ready(5000);
    const p = await subA.presence();
    const users = Object.values(p.clients).map((x) => x.user).sort();
    assert(users.join() === "alice,bob", "presence " + json(p));
    await until("bob's join", () => joins.includes("bob"));
    b.disconnect();
    await until("bob's leave", () => leaves.includes("bob"));
    a.disconnect();
    return { users, joins, leaves };
  },

  async "browser-json-refused-token"() {
    const c = client(Centrifuge, { token: "not.a.token" });
    const codes = [];
    c.on("disconnected", (ctx) => codes.push(ctx.code));
    const opened = sockets.length;
    c.connect();
    await until("the refusal", () => codes.length > 0);
    await sleep(800);
    assert(codes.join() === "3500" && c.state === "disconnected", "codes " + json(codes) + " state " + c.state);
    assert(sockets.length === opened + 1, "WebSockets opened: " + (sockets.length - opened));
    return { codes };
  },

  async "browser-json-server-disconnect"() {
    const c = client(Centrifuge, { token: await sbJwt("carol") });
    const codes = [];
    const states = [];
    c.on("disconnected", (ctx) => codes.push(ctx.code));
    c.on("state", (ctx) => states.push(ctx.newState));
    c.connect();
    await c.ready(5000);
    const opened = sockets.length;
    await sbApi("disconnect", { user: "carol" });
    await until("the disconnect", () => codes.length > 0);
    await sleep(1000);
    assert(codes.join() === "3503", "codes " + json(codes));
    assert(c.state === "disconnected", "state " + c.state + " " + json(states));
    assert(sockets.length === opened, "the SDK opened another WebSocket: " + json(sockets.slice(opened - 1)));
    assert(sockets.at(-1).closeCode === 3503, "close " + json(sockets.at(-1)));
    return { codes, states };
  },

  async "browser-json-rpc-not-available"() {
    const c = client(Centrifuge);
    c.connect();
    await c.ready(5000);
    let err = null;
    try {
      await c.rpc("method", { a: 1 });
    } catch (e) {
      err = e;
    }
    assert(err && err.code === 108, "rpc " + json(err));
    assert(c.state === "connected", "state after rpc " + c.state);
    c.disconnect();
    return { code: err.code, message: err.message };
  },

  async "browser-protobuf-pubsub-history"() {
    const c = client(CentrifugeProtobuf);
    const sub = c.newSubscription(BINARY);
    const got = [];
    sub.on("publication", (ctx) => got.push([ctx.offset, Array.from(ctx.data)]));
    sub.subscribe();
    c.connect();
    await sub.ready(5000);
    const ws = sockets.at(-1);
    assert(ws.protocol === "centrifuge-protobuf" && ws.binaryType === "arraybuffer", "socket " + json(ws));
    await sbApi("publish", { channel: BINARY, data: { n: 1 } });
    const bytes = [0, 1, 2, 253, 254, 255];
    await sub.publish(new Uint8Array(bytes));
    await until("2 publications", () => got.length >= 2);
    await sleep(200);
    assert(got.length === 2, "got " + json(got));
    const text = new TextDecoder().decode(new Uint8Array(got[0][1]));
    assert(got[0][0] === 1 && json(JSON.parse(text)) === json({ n: 1 }), "first " + json(got[0]) + " " + text);
    assert(got[1][0] === 2 && json(got[1][1]) === json(bytes), "second " + json(got[1]));
    const p = await sub.presence();
    assert(Object.keys(p.clients).length === 1, "presence " + json(p));
    const h = await sub.history({ limit: 10 });
    assert(h.offset === 2 && h.publications.length === 2 && json(Array.from(h.publications[1].data)) === json(bytes),
      "history " + json(h));
    let err = null;
    try {
      await c.rpc("method", new Uint8Array([1]));
    } catch (e) {
      err = e;
    }
    assert(err && err.code === 108, "rpc " + json(err));
    c.disconnect();
    return { protocol: ws.protocol, first: text, second: got[1][1] };
  },
};

window.names = Object.keys(checks);
window.runCheck = async (name) => {
  try {
    return { ok: true, result: await checks[name]() };
  } catch (e) {
    return { ok: false, error: (e && (e.stack || e.message)) || json(e) };
  }
};
window.ready = true;
`;

const pageHtml = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>centrifuge-js against switchboard</title></head>
<body><script type="module" src="/checks.mjs"></script></body>
</html>`;

const TYPES = { ".html": "text/html; charset=utf-8", ".mjs": "text/javascript; charset=utf-8" };

/** A static server for `files` (name -> body) on loopback: {server, origin} (origin uses "localhost"). */
function staticServer(files) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      const name = new URL(req.url, "http://x").pathname;
      const body = files[name];
      if (body === undefined) {
        res.writeHead(name === "/favicon.ico" ? 204 : 404).end();
        return;
      }
      res.writeHead(200, { "content-type": TYPES[path.extname(name)] ?? "application/octet-stream" }).end(body);
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://localhost:${server.address().port}` }));
  });
}

// ------------------------------------------------------------------ main

let failed = 0;
let total = 0;
const deadline = setTimeout(() => {
  console.log(`FAIL deadline: ${opts.deadlineMs} ms passed`);
  console.log(`DONE ${failed + 1} failed`);
  process.exit(4);
}, opts.deadlineMs);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-chromium-"));
let context = null;
let pages = null;
try {
  pages = await staticServer({
    "/centrifuge.html": pageHtml,
    "/checks.mjs": `const ADDR = ${JSON.stringify(opts.addr)};\n${CHECKS_JS}`,
    "/centrifuge.mjs": fs.readFileSync(path.join(BUILD, "index.mjs")),
    "/centrifuge.protobuf.mjs": fs.readFileSync(path.join(BUILD, "protobuf/index.mjs")),
  });
  log(`page served from ${pages.origin}, server ${opts.addr}`);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: BASE_ARGS,
  });
  const page = await context.newPage();
  const pageLog = [];
  page.on("console", (m) => pageLog.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => pageLog.push(`uncaught: ${e.message}`));
  await page.exposeFunction("sbJwt", (sub) => jwt(sub));
  await page.exposeFunction("sbApi", (method, body) => api(method, body));
  const url = `${pages.origin}/centrifuge.html`;
  const r = await page.goto(url, { waitUntil: "load", timeout: CHECK_MS });
  if (!r || !r.ok()) throw new Error(`GET ${url}: HTTP ${r?.status()}`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: CHECK_MS }).catch((e) => {
    throw new Error(`the page did not load its modules: ${e.message}\n${pageLog.join("\n")}`);
  });
  const names = await page.evaluate(() => window.names);
  for (const name of names) {
    total++;
    const started = Date.now();
    const out = await Promise.race([
      page.evaluate((n) => window.runCheck(n), name),
      new Promise((res) => setTimeout(() => res({ ok: false, error: `not done in ${CHECK_MS} ms` }), CHECK_MS)),
    ]);
    if (out.ok) {
      console.log(`OK ${name}`);
      log(`${name} (${Date.now() - started} ms): ${JSON.stringify(out.result)}`);
    } else {
      failed++;
      console.log(`FAIL ${name}: ${String(out.error).replace(/\n/g, " | ")}`);
      log(`page log:\n${pageLog.slice(-30).join("\n")}`);
    }
  }
  if (pageLog.some((l) => l.startsWith("uncaught"))) {
    failed++;
    console.log(`FAIL page-errors: ${pageLog.filter((l) => l.startsWith("uncaught")).join(" | ")}`);
  }
} catch (e) {
  failed++;
  console.log(`FAIL setup: ${e.message.replace(/\n/g, " | ")}`);
} finally {
  if (context) await context.close().catch(() => {});
  pages?.server.close();
  fs.rmSync(profile, { recursive: true, force: true });
  clearTimeout(deadline);
}
log(`${total} checks run`);
console.log(`DONE ${failed} failed`);
process.exit(failed ? 1 : 0);
