#!/usr/bin/env node
// pusher-js (npm `pusher-js` 8.6.0, pinned in tests/compat/package-lock.json) in a real browser
// against switchboard's Pusher Channels protocol at /app/KEY: Debian's Chromium driven by
// playwright-core. Pages load the library's own browser build, unchanged
// (tests/compat/node_modules/pusher-js/dist/web/pusher.js, a UMD script that sets
// window.Pusher), from a static server here on a second loopback origin
// (http://localhost:PORT, allowed by the server's default for loopback origins), so the
// WebSocket is a cross-origin one, as on a real site; pusher-js uses the browser's own
// WebSocket (the page only wraps the constructor to record the URLs it opened).
//
// The application's side runs here in Node, with Pusher's own Node server library (npm `pusher`
// 5.3.4, from tests/compat/node_modules): it triggers events through switchboard's HTTP API
// (/apps/ID/events, signed), reads /channels/NAME/users, and signs channel authorizations with
// `authorizeChannel` behind an HTTP route of the static server — the page's
// `channelAuthorization.endpoint`, reached by pusher-js's own XHR POST (socket_id,
// channel_name). `/pusher/auth?user=ID` signs with the app's secret (presence data for user ID),
// `/pusher/auth-wrong` answers 200 with a signature made with a wrong secret, so a refusal can
// only come from switchboard. The secret never reaches a page.
//
//   browser-public-channel-server-trigger  the page connects (ws://ADDR/app/KEY?protocol=7...,
//                                          socket id), subscribes to a public channel (no auth
//                                          request) and receives events the server library
//                                          triggers (JSON and plain-text data)
//   browser-private-channel-auth-endpoint  pusher-js POSTs to the endpoint with its socket id
//                                          and the channel; subscribed; a triggered event arrives
//   browser-private-channel-wrong-secret   a second page whose endpoint signs with a wrong
//                                          secret gets pusher:subscription_error, AuthError
//                                          status 401, and none of the channel's events
//   browser-presence-two-pages             ann's page, then bob's: members (count, me, ids, info)
//                                          on both, ann sees member_added bob, a client event on
//                                          the presence channel carries user_id bob, the server
//                                          library lists both users; bob's tab closed: ann sees
//                                          member_removed bob, count 1, the server lists ann
//   browser-client-events-between-pages    two pages on a private channel trigger client-*
//                                          events to each other; each arrives at the other page
//                                          once and never at its sender
//
// usage: node pusher_e2e.mjs --addr 127.0.0.1:PORT --app-id ID --key KEY --secret SECRET
//          [--chromium /usr/bin/chromium] [--deadline-ms MS]
// The app must have client_events = true.
//
// stdout: "OK NAME" / "FAIL NAME: why" per check, then "DONE N failed"; diagnostics on stderr.
// Exit code 0 only when every check passed.

import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const COMPAT = path.join(ROOT, "tests/compat");
const BUILD = path.join(COMPAT, "node_modules/pusher-js/dist/web/pusher.js");
const CHECK_MS = 30_000; // bound of one check
const WAIT_MS = 10_000; // bound of one wait inside a check

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    { addr: "", appId: "", key: "", secret: "", deadlineMs: 150_000 },
    { "--addr": "addr", "--app-id": "appId", "--key": "key", "--secret": "secret", "--deadline-ms": ["deadlineMs", Number] },
  );
  if (!o.addr || !o.appId || !o.key || !o.secret) {
    throw new Error("--addr, --app-id, --key and --secret are required");
  }
  return o;
}

const opts = parseOrExit("pusher_e2e", parseArgs);
requireChromium(opts.chromium);
for (const f of [BUILD, path.join(COMPAT, "node_modules/pusher/package.json")]) {
  if (!fs.existsSync(f)) {
    console.error(`${f} is missing: run scripts/test-deps (npm ci in tests/compat)`);
    process.exit(3);
  }
}
const PusherServer = createRequire(path.join(COMPAT, "package.json"))("pusher");
const chromium = await loadChromium();
const log = (...a) => console.error("[pusher_e2e]", ...a);

// ------------------------------------------------------------------ the application's side

const [HOST, PORT] = [opts.addr.slice(0, opts.addr.lastIndexOf(":")), opts.addr.slice(opts.addr.lastIndexOf(":") + 1)];
const APP = { appId: opts.appId, key: opts.key, secret: opts.secret, host: HOST, port: PORT, useTLS: false };
const api = new PusherServer(APP);
const forger = new PusherServer({ ...APP, secret: `${opts.secret}-but-wrong` });
const USERS = { ann: { name: "Ann" }, bob: { name: "Bob" }, cat: { name: "Cat" }, dan: { name: "Dan" } };

/** Every authorization request the endpoints answered: {path, user, socket_id, channel_name, status}. */
const authLog = [];

function authorize(req, res, body) {
  const url = new URL(req.url, "http://x");
  const form = new URLSearchParams(body);
  const entry = {
    path: url.pathname,
    user: url.searchParams.get("user"),
    socket_id: form.get("socket_id"),
    channel_name: form.get("channel_name"),
    status: 0,
  };
  authLog.push(entry);
  const reply = (status, value) => {
    entry.status = status;
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value));
  };
  if (req.method !== "POST" || !entry.socket_id || !entry.channel_name) {
    reply(400, { error: "POST socket_id and channel_name" });
    return;
  }
  const signer = url.pathname === "/pusher/auth-wrong" ? forger : api;
  let presence;
  if (entry.channel_name.startsWith("presence-")) {
    if (!USERS[entry.user]) {
      reply(403, { error: "unknown user" });
      return;
    }
    presence = { user_id: entry.user, user_info: USERS[entry.user] };
  }
  reply(200, signer.authorizeChannel(entry.socket_id, entry.channel_name, presence));
}

// ------------------------------------------------------------------ the page

// Helpers the checks call in each page with page.evaluate. One pusher-js client per page.
const PAGE_JS = String.raw`
const sockets = [];
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(url, protocols) {
    super(url, protocols);
    const rec = { url: String(url), closeCode: null };
    sockets.push(rec);
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
const plain = (v) => (v === undefined ? null : JSON.parse(JSON.stringify(v)));
function members(ch) {
  if (!ch.members) return null;
  const ids = [];
  const infos = {};
  ch.members.each((m) => { ids.push(m.id); infos[m.id] = m.info; });
  return { count: ch.members.count, me: plain(ch.members.me), ids: ids.sort(), infos };
}

let pusher = null;
const events = []; // {channel, event, data, meta}
const states = [];
const errors = [];

window.sbConnect = async (authEndpoint) => {
  pusher = new Pusher(KEY, {
    cluster: "local", // required by the library, unused with wsHost
    wsHost: WS_HOST,
    wsPort: WS_PORT,
    forceTLS: false,
    enabledTransports: ["ws"],
    channelAuthorization: { endpoint: authEndpoint, transport: "ajax" },
  });
  pusher.connection.bind("state_change", (s) => states.push(s.current));
  pusher.connection.bind("error", (e) => errors.push(plain(e)));
  await until("connected", () => pusher.connection.state === "connected");
  return { socketId: pusher.connection.socket_id, sockets, states };
};

// Subscribes and records every event the channel emits to the application (with its metadata:
// user_id on presence client events); resolves on pusher:subscription_succeeded or pusher:subscription_error.
window.sbSubscribe = (name) => {
  const ch = pusher.subscribe(name);
  const emit = ch.emit.bind(ch);
  ch.emit = (event, data, meta) => {
    const d = event === "pusher:subscription_succeeded" ? members(ch) : plain(data);
    events.push({ channel: name, event, data: d, meta: meta === undefined ? null : plain(meta) });
    return emit(event, data, meta);
  };
  return Promise.race([
    new Promise((resolve) => {
      ch.bind("pusher:subscription_succeeded", () => resolve({ ok: true, members: members(ch) }));
      ch.bind("pusher:subscription_error", (e) => resolve({ ok: false, error: plain(e) }));
    }),
    sleep(10000).then(() => ({ ok: false, error: "no subscription_succeeded/error in 10 s" })),
  ]);
};

window.sbTrigger = (name, event, data) => pusher.channel(name).trigger(event, data);
window.sbMembers = (name) => members(pusher.channel(name));
window.sbEvents = (name, event) =>
  events.filter((e) => e.channel === name && (event === undefined || e.event === event));
window.sbState = () => ({ state: pusher && pusher.connection.state, states, errors, sockets });
window.sbDisconnect = () => pusher && pusher.disconnect();
window.ready = typeof Pusher === "function";
`;

const pageHtml = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>pusher-js against switchboard</title></head>
<body><script src="/pusher.js"></script><script src="/page.js"></script></body>
</html>`;

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };

/** The static server, with the authorization routes, on loopback: {server, origin}. */
function staticServer(files) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      const name = new URL(req.url, "http://x").pathname;
      if (name.startsWith("/pusher/auth")) {
        let body = "";
        req.setEncoding("utf8");
        req.on("data", (c) => (body += c));
        req.on("end", () => {
          try {
            authorize(req, res, body);
          } catch (e) {
            log(`auth ${req.url}: ${e.stack}`);
            res.writeHead(500).end();
          }
        });
        return;
      }
      const file = files[name];
      if (file === undefined) {
        res.writeHead(name === "/favicon.ico" ? 204 : 404).end();
        return;
      }
      res.writeHead(200, { "content-type": TYPES[path.extname(name)] ?? "application/octet-stream" }).end(file);
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://localhost:${server.address().port}` }));
  });
}

// ------------------------------------------------------------------ Node-side helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const json = (v) => JSON.stringify(v);
// JSON with object keys sorted: a client event's data is relayed as a JSON value, and key order
// is not part of JSON's meaning (switchboard re-serializes it with keys sorted).
const canon = (v) =>
  JSON.stringify(v, (_, x) =>
    x && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]]))
      : x,
  );
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
async function until(what, pred, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

let context = null;
let origin = "";
const openPages = [];
const uncaught = []; // errors thrown in any page, closed ones included

/** A new tab on the test page, with pusher-js connected through `authEndpoint`. */
async function openPage(label, authEndpoint) {
  const page = await context.newPage();
  const pageLog = [];
  page.on("console", (m) => pageLog.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => {
    pageLog.push(`uncaught: ${e.message}`);
    uncaught.push(`${label}: ${e.message}`);
  });
  const p = { label, page, pageLog };
  openPages.push(p);
  const url = `${origin}/pusher.html`;
  const r = await page.goto(url, { waitUntil: "load", timeout: CHECK_MS });
  if (!r || !r.ok()) throw new Error(`GET ${url}: HTTP ${r?.status()}`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: WAIT_MS }).catch((e) => {
    throw new Error(`${label}: the page did not load pusher.js: ${e.message}\n${pageLog.join("\n")}`);
  });
  p.conn = await page.evaluate((ep) => window.sbConnect(ep), authEndpoint);
  return p;
}

async function closePage(p) {
  const i = openPages.indexOf(p);
  if (i >= 0) openPages.splice(i, 1);
  await p.page.close().catch(() => {});
}

const subscribe = (p, name) => p.page.evaluate((n) => window.sbSubscribe(n), name);
const eventsOf = (p, name, event) => p.page.evaluate(([n, e]) => window.sbEvents(n, e ?? undefined), [name, event ?? null]);
const trigger = (p, name, event, data) => p.page.evaluate(([n, e, d]) => window.sbTrigger(n, e, d), [name, event, data]);
const membersOf = (p, name) => p.page.evaluate((n) => window.sbMembers(n), name);

async function serverTrigger(channel, event, data, params) {
  const r = await api.trigger(channel, event, data, params);
  assert(r.status === 200, `trigger ${channel} ${event}: HTTP ${r.status}`);
}
async function serverUsers(channel) {
  const r = await api.get({ path: `/channels/${channel}/users` });
  assert(r.status === 200, `users of ${channel}: HTTP ${r.status}`);
  return (await r.json()).users.map((u) => u.id).sort();
}

// ------------------------------------------------------------------ the checks

// Channels of this run (a server may see several runs).
const RUN = Date.now().toString(36);
const NEWS = `news-${RUN}`;
const ORDERS = `private-orders-${RUN}`;
const LOBBY = `presence-lobby-${RUN}`;
const CHAT = `private-chat-${RUN}`;
const WS_PREFIX = `ws://${opts.addr}/app/${opts.key}?protocol=7&client=js&version=8.6.0`;

let ann = null; // the page of the first two checks
const checks = {
  async "browser-public-channel-server-trigger"() {
    ann = await openPage("ann", "/pusher/auth?user=ann");
    const { socketId, sockets } = ann.conn;
    assert(/^\d+\.\d+$/.test(socketId), `socket id ${socketId}`);
    assert(sockets.length === 1 && sockets[0].url.startsWith(WS_PREFIX), `sockets ${json(sockets)}`);
    const sub = await subscribe(ann, NEWS);
    assert(sub.ok && sub.members === null, `subscribe ${json(sub)}`);
    assert(authLog.length === 0, `a public channel asked for authorization: ${json(authLog)}`);
    await serverTrigger(NEWS, "my-event", { hello: "world", n: 1 });
    await serverTrigger(NEWS, "my-event", "plain text");
    const got = await until("2 events", async () => {
      const e = await eventsOf(ann, NEWS, "my-event");
      return e.length >= 2 && e;
    });
    await sleep(200);
    const all = await eventsOf(ann, NEWS, "my-event");
    assert(json(all.map((e) => e.data)) === json([{ hello: "world", n: 1 }, "plain text"]), `events ${json(all)}`);
    return { socketId, url: sockets[0].url, got: got.map((e) => e.data) };
  },

  async "browser-private-channel-auth-endpoint"() {
    const sub = await subscribe(ann, ORDERS);
    assert(sub.ok, `subscribe ${json(sub)}`);
    const asked = authLog.filter((a) => a.channel_name === ORDERS);
    assert(
      asked.length === 1 && asked[0].path === "/pusher/auth" && asked[0].socket_id === ann.conn.socketId &&
        asked[0].status === 200,
      `authorization requests ${json(authLog)}`,
    );
    await serverTrigger(ORDERS, "order-placed", { id: 7 });
    await until("the private event", async () => (await eventsOf(ann, ORDERS, "order-placed")).length === 1);
    return { asked: asked[0] };
  },

  async "browser-private-channel-wrong-secret"() {
    const eve = await openPage("eve", "/pusher/auth-wrong");
    const sub = await subscribe(eve, ORDERS);
    assert(!sub.ok && sub.error && sub.error.status === 401 && sub.error.type === "AuthError", `subscribe ${json(sub)}`);
    // The endpoint answered 200 with a (wrongly) signed authorization: the 401 is switchboard's.
    const asked = authLog.filter((a) => a.path === "/pusher/auth-wrong");
    assert(
      asked.length === 1 && asked[0].status === 200 && asked[0].socket_id === eve.conn.socketId &&
        asked[0].channel_name === ORDERS,
      `authorization requests ${json(authLog)}`,
    );
    await serverTrigger(ORDERS, "order-placed", { id: 8 });
    await until("ann's second event", async () => (await eventsOf(ann, ORDERS, "order-placed")).length === 2);
    await sleep(300);
    const leaked = await eventsOf(eve, ORDERS, "order-placed");
    assert(leaked.length === 0, `the refused page got ${json(leaked)}`);
    const state = await eve.page.evaluate(() => window.sbState().state);
    assert(state === "connected", `the refused page's connection is ${state}`);
    await closePage(eve);
    await closePage(ann);
    return { error: sub.error };
  },

  async "browser-presence-two-pages"() {
    const a = await openPage("ann", "/pusher/auth?user=ann");
    const subA = await subscribe(a, LOBBY);
    assert(
      subA.ok && subA.members.count === 1 && subA.members.me.id === "ann" &&
        json(subA.members.me.info) === json(USERS.ann) && json(subA.members.ids) === json(["ann"]),
      `ann subscribes ${json(subA)}`,
    );
    const b = await openPage("bob", "/pusher/auth?user=bob");
    const subB = await subscribe(b, LOBBY);
    assert(
      subB.ok && subB.members.count === 2 && subB.members.me.id === "bob" &&
        json(subB.members.ids) === json(["ann", "bob"]) && json(subB.members.infos.ann) === json(USERS.ann),
      `bob subscribes ${json(subB)}`,
    );
    const added = await until("member_added bob", async () => {
      const e = await eventsOf(a, LOBBY, "pusher:member_added");
      return e.length >= 1 && e;
    });
    assert(json(added.map((e) => e.data)) === json([{ id: "bob", info: USERS.bob }]), `member_added ${json(added)}`);
    const mA = await membersOf(a, LOBBY);
    assert(mA.count === 2 && json(mA.ids) === json(["ann", "bob"]), `ann's members ${json(mA)}`);
    assert(json(await serverUsers(LOBBY)) === json(["ann", "bob"]), "users");
    // A client event on the presence channel carries the sender's user_id.
    assert((await trigger(b, LOBBY, "client-wave", { from: "bob" })) === true, "bob's trigger refused");
    const wave = await until("client-wave", async () => {
      const e = await eventsOf(a, LOBBY, "client-wave");
      return e.length >= 1 && e[0];
    });
    assert(canon(wave.data) === canon({ from: "bob" }) && wave.meta?.user_id === "bob", `client-wave ${json(wave)}`);
    // bob closes his tab.
    await closePage(b);
    const removed = await until("member_removed bob", async () => {
      const e = await eventsOf(a, LOBBY, "pusher:member_removed");
      return e.length >= 1 && e;
    });
    assert(json(removed.map((e) => e.data.id)) === json(["bob"]), `member_removed ${json(removed)}`);
    const after = await membersOf(a, LOBBY);
    assert(after.count === 1 && json(after.ids) === json(["ann"]), `ann's members after ${json(after)}`);
    await until("the server's users to be ann", async () => json(await serverUsers(LOBBY)) === json(["ann"]));
    await sleep(200);
    const again = await eventsOf(a, LOBBY, "pusher:member_added");
    assert(again.length === 1, `member_added ${json(again)}`);
    await closePage(a);
    return { ann: subA.members, bob: subB.members, added: added.length, removed: removed.length, wave };
  },

  async "browser-client-events-between-pages"() {
    const c = await openPage("cat", "/pusher/auth?user=cat");
    const d = await openPage("dan", "/pusher/auth?user=dan");
    const [subC, subD] = await Promise.all([subscribe(c, CHAT), subscribe(d, CHAT)]);
    assert(subC.ok && subD.ok, `subscribe ${json([subC, subD])}`);
    assert((await trigger(c, CHAT, "client-typing", { who: "cat", n: 1 })) === true, "cat's trigger refused");
    await until("dan gets client-typing", async () => (await eventsOf(d, CHAT, "client-typing")).length >= 1);
    assert((await trigger(d, CHAT, "client-reply", { who: "dan", n: 2 })) === true, "dan's trigger refused");
    await until("cat gets client-reply", async () => (await eventsOf(c, CHAT, "client-reply")).length >= 1);
    await sleep(300);
    const gotC = (await eventsOf(c, CHAT)).filter((e) => e.event.startsWith("client-"));
    const gotD = (await eventsOf(d, CHAT)).filter((e) => e.event.startsWith("client-"));
    assert(
      canon(gotC.map((e) => [e.event, e.data])) === canon([["client-reply", { who: "dan", n: 2 }]]),
      `cat got ${json(gotC)}`,
    );
    assert(
      canon(gotD.map((e) => [e.event, e.data])) === canon([["client-typing", { who: "cat", n: 1 }]]),
      `dan got ${json(gotD)}`,
    );
    const errs = await Promise.all([c, d].map((p) => p.page.evaluate(() => window.sbState().errors)));
    assert(errs.every((e) => e.length === 0), `connection errors ${json(errs)}`);
    await closePage(c);
    await closePage(d);
    return { cat: gotC.length, dan: gotD.length };
  },
};

// ------------------------------------------------------------------ main

let failed = 0;
let total = 0;
const deadline = setTimeout(() => {
  console.log(`FAIL deadline: ${opts.deadlineMs} ms passed`);
  console.log(`DONE ${failed + 1} failed`);
  process.exit(4);
}, opts.deadlineMs);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-chromium-"));
let pages = null;
try {
  pages = await staticServer({
    "/pusher.html": pageHtml,
    "/page.js": `const KEY = ${json(opts.key)}, WS_HOST = ${json(HOST)}, WS_PORT = ${Number(PORT)};\n${PAGE_JS}`,
    "/pusher.js": fs.readFileSync(BUILD),
  });
  origin = pages.origin;
  log(`pages served from ${origin}, server ${opts.addr}, app ${opts.appId}/${opts.key}`);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: BASE_ARGS,
  });
  for (const [name, check] of Object.entries(checks)) {
    total++;
    const started = Date.now();
    let timer;
    const out = await Promise.race([
      check().then((result) => ({ ok: true, result }), (e) => ({ ok: false, error: (e && (e.stack || e.message)) || json(e) })),
      new Promise((res) => (timer = setTimeout(() => res({ ok: false, error: `not done in ${CHECK_MS} ms` }), CHECK_MS))),
    ]);
    clearTimeout(timer);
    if (out.ok) {
      console.log(`OK ${name}`);
      log(`${name} (${Date.now() - started} ms): ${json(out.result)}`);
    } else {
      failed++;
      console.log(`FAIL ${name}: ${String(out.error).replace(/\n/g, " | ")}`);
      for (const p of openPages) log(`${p.label}'s page log:\n${p.pageLog.slice(-30).join("\n")}`);
      log(`authorization requests: ${json(authLog)}`);
      // A failed check leaves no pages behind for the next one.
      for (const p of [...openPages]) await closePage(p);
    }
  }
  if (uncaught.length) {
    failed++;
    console.log(`FAIL page-errors: ${uncaught.join(" | ")}`);
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
