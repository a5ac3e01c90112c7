#!/usr/bin/env node
// Real-browser end-to-end test of switchboard's call page (/call) and console (/).
//
// Drives Debian's Chromium (never a downloaded browser) with playwright-core through the page's
// read-only test hook window.switchboardCall (docs/web.md). Scenarios, run in the order given:
//
//   relay    two pages, relay=1: data-channel messages both ways; each page's selected candidate
//            pair is local "relay" (switchboard's TURN)
//   direct   two pages without relay: messages both ways; the selected pair is not relay
//   media    two pages with media=1 and Chromium's fake camera: remote video gets decoded frames;
//            screenshot of /call during the call
//   https    two pages over the --https listener (self-signed; wss:, fetch over TLS): messages
//   aiortc   one page waits in a room; prints "READY {json}" on stdout, then expects the Python
//            aiortc peer (tests/peers/aiortc_call.py, started by the caller) to join, offer and
//            exchange messages; waits until it leaves
//   console  screenshot of / (the console page, open since the start, so with some traffic)
//
// usage: node call_e2e.mjs --base http://127.0.0.1:PORT [--https-base https://127.0.0.1:PORT]
//          [--scenarios relay,direct,media,https,aiortc,console] [--out DIR] [--deadline-ms MS]
//
// stdout: "READY {...}" (aiortc scenario) and, last, "RESULT {...}" (a JSON summary); progress
// and diagnostics go to stderr. Exit code 0 only when every scenario passed.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const STEP_MS = 25_000; // bound of every single wait

// ------------------------------------------------------------------ arguments

function parseArgs(argv) {
  const o = {
    base: "",
    httpsBase: "",
    scenarios: ["relay", "direct", "media", "https", "console"],
    out: path.join(ROOT, "test-output", "screenshots"),
    deadlineMs: 100_000,
    chromium: process.env.SB_CHROMIUM || "/usr/bin/chromium",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--base") o.base = next().replace(/\/$/, "");
    else if (a === "--https-base") o.httpsBase = next().replace(/\/$/, "");
    else if (a === "--scenarios") o.scenarios = next().split(",").map((s) => s.trim()).filter(Boolean);
    else if (a === "--out") o.out = path.resolve(next());
    else if (a === "--deadline-ms") o.deadlineMs = Number(next());
    else if (a === "--chromium") o.chromium = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.base) throw new Error("--base http://HOST:PORT is required");
  const known = ["relay", "direct", "media", "https", "aiortc", "console"];
  for (const s of o.scenarios) if (!known.includes(s)) throw new Error(`unknown scenario ${s}`);
  if (o.scenarios.includes("https") && !o.httpsBase) throw new Error("scenario https needs --https-base");
  return o;
}

const log = (...a) => console.error("[call_e2e]", ...a);

// ------------------------------------------------------------------ browser

const chromium = await loadChromium();
const opts = parseOrExit("call_e2e", parseArgs);
requireChromium(opts.chromium);

// The machine notes' flags (no background traffic on a closed network, a fresh profile), fake
// media devices, and WebRTC on loopback: host candidates as addresses (not mDNS names, which
// nothing here resolves), loopback allowed (a sandbox may have nothing else).
const CHROMIUM_ARGS = [
  ...BASE_ARGS,
  "--disable-quic",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--autoplay-policy=no-user-gesture-required",
  "--ignore-certificate-errors",
];

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-chromium-"));
const removeProfile = () => fs.rmSync(profile, { recursive: true, force: true });
process.on("exit", removeProfile);

let context = null;
const pageLogs = new Map(); // page -> [lines]
const fatal = []; // uncaught page errors and CSP violations

async function launch() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 900 },
    permissions: ["camera", "microphone"],
  });
  // A persistent context opens with one blank page; keep it, unused.
}

async function newPage(label) {
  const page = await context.newPage();
  const lines = [];
  pageLogs.set(page, lines);
  page.on("console", (m) => {
    const line = `${label} console.${m.type()}: ${m.text()}`;
    lines.push(line);
    if (lines.length > 200) lines.shift();
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) fatal.push(line);
  });
  page.on("pageerror", (e) => {
    const line = `${label} uncaught: ${e.message}`;
    lines.push(line);
    fatal.push(line);
  });
  return page;
}

/** Reads the page's test hook (a plain-JSON copy). */
function hook(page) {
  return page.evaluate(() => {
    const h = window.switchboardCall;
    if (!h) return null;
    return {
      joined: h.joined,
      room: h.room,
      peerId: h.peerId,
      polite: h.polite,
      status: h.status,
      peers: h.peers,
      messages: h.messages,
      errors: h.errors,
    };
  });
}

/**
 * Waits until fn(state, arg) is true, state being the page's hook read every 150 ms (evaluated
 * here, in node: the page's CSP rightly forbids eval, which page-side polling would need).
 * Fails with `what`, the last state and the page's recent log.
 */
async function waitFor(page, what, fn, arg, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  let state = null;
  let lastError = null;
  for (;;) {
    try {
      state = await hook(page);
      if (state && fn(state, arg)) return state;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 150));
  }
  const logs = (pageLogs.get(page) ?? []).slice(-15).join("\n  ");
  throw new Error(
    `timed out after ${timeout / 1000} s waiting for ${what}\n` +
      `page state: ${JSON.stringify(state, null, 1)}\n  recent page log:\n  ${logs}` +
      (lastError ? `\n(last error: ${lastError.message.split("\n")[0]})` : ""),
  );
}

async function openCall(base, params, label) {
  const page = await newPage(label);
  const q = new URLSearchParams({ join: "1", ...params });
  const url = `${base}/call?${q}`;
  log(`open ${url}`);
  const r = await page.goto(url, { waitUntil: "load", timeout: STEP_MS });
  if (!r || !r.ok()) throw new Error(`GET ${url}: HTTP ${r?.status()}`);
  const csp = r.headers()["content-security-policy"] ?? "";
  if (!csp.includes("script-src 'self'")) throw new Error(`/call has no strict CSP: "${csp}"`);
  await waitFor(page, `${label} to join room ${params.room}`, (h) => h.joined || h.errors.length > 0);
  const s = await hook(page);
  if (!s.joined) throw new Error(`${label} could not join: ${JSON.stringify(s.errors)}`);
  return page;
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function noErrors(state, label) {
  assert(state.errors.length === 0, `${label} page reported errors: ${JSON.stringify(state.errors)}`);
}

const rand = () => Math.random().toString(36).slice(2, 8);

// ------------------------------------------------------------------ scenarios

/** Two pages in one room: data channel both ways; returns their states. */
async function pair(name, base, extra) {
  const room = `e2e-${name}-${rand()}`;
  const aId = `${name}-a`;
  const bId = `${name}-b`;
  const a = await openCall(base, { room, peer: aId, ...extra }, aId);
  const b = await openCall(base, { room, peer: bId, ...extra }, bId);
  const sa = await hook(a);
  const sb = await hook(b);
  assert(sa.polite === false, `${aId} joined first and must be impolite: ${JSON.stringify(sa)}`);
  assert(sb.polite === true, `${bId} joined second and must be polite: ${JSON.stringify(sb)}`);
  const open = (h, other) => h.peers[other]?.dataChannelState === "open";
  await waitFor(a, `${aId}: data channel to ${bId} open`, open, bId);
  await waitFor(b, `${bId}: data channel to ${aId} open`, open, aId);
  const textA = `hello from ${aId} ${rand()}`;
  const textB = `hello from ${bId} ${rand()}`;
  await a.evaluate((t) => window.switchboardCall.send(t), textA);
  await b.evaluate((t) => window.switchboardCall.send(t), textB);
  const got = (h, m) => h.messages.some((x) => x.from === m.from && x.text === m.text);
  await waitFor(b, `${bId} to receive "${textA}"`, got, { from: aId, text: textA });
  await waitFor(a, `${aId} to receive "${textB}"`, got, { from: bId, text: textB });
  const paired = (h, other) => {
    const p = h.peers[other];
    return p && p.connectionState === "connected" && p.selectedPair && p.selectedPair.local && p.selectedPair.remote;
  };
  await waitFor(a, `${aId}: connected with a selected candidate pair`, paired, bId);
  await waitFor(b, `${bId}: connected with a selected candidate pair`, paired, aId);
  return { room, a, b, aId, bId, textA, textB };
}

function pairSummary(state, other) {
  const p = state.peers[other];
  return {
    peer: state.peerId,
    polite: state.polite,
    connectionState: p?.connectionState,
    dataChannelState: p?.dataChannelState,
    selectedPair: p?.selectedPair ?? null,
    received: state.messages.filter((m) => m.from === other).map((m) => m.text),
    video: p?.video ?? null,
  };
}

async function closePages(...pages) {
  for (const p of pages) await p.close().catch(() => {});
}

async function twoPageScenario(name, base, extra, check) {
  const r = await pair(name, base, extra);
  const sa = await hook(r.a);
  const sb = await hook(r.b);
  noErrors(sa, r.aId);
  noErrors(sb, r.bId);
  const out = { room: r.room, a: pairSummary(sa, r.bId), b: pairSummary(sb, r.aId) };
  assert(out.b.received.includes(r.textA), `${r.bId} did not receive "${r.textA}"`);
  assert(out.a.received.includes(r.textB), `${r.aId} did not receive "${r.textB}"`);
  if (check) await check(r, out);
  noErrors(await hook(r.a), r.aId);
  noErrors(await hook(r.b), r.bId);
  await closePages(r.a, r.b);
  return out;
}

const candidateType = (s) => s.selectedPair?.local?.candidateType;

const scenarios = {
  async relay() {
    return twoPageScenario("relay", opts.base, { relay: "1" }, async (_r, out) => {
      for (const side of [out.a, out.b]) {
        assert(
          candidateType(side) === "relay",
          `${side.peer}: relay=1 but the selected local candidate is ${JSON.stringify(side.selectedPair?.local)}`,
        );
      }
    });
  },

  async direct() {
    return twoPageScenario("direct", opts.base, {}, async (r, out) => {
      for (const side of [out.a, out.b]) {
        const t = candidateType(side);
        assert(
          ["host", "srflx", "prflx"].includes(t),
          `${side.peer}: without relay the selected local candidate should be host/srflx/prflx, is ${JSON.stringify(side.selectedPair?.local)}`,
        );
      }
      // A third page claiming a taken peer id is refused by the hub (105), shown on the page.
      const dup = await newPage("duplicate");
      await dup.goto(`${opts.base}/call?${new URLSearchParams({ join: "1", room: r.room, peer: r.aId })}`);
      const refused = await waitFor(dup, "the duplicate peer id to be refused", (h) => h.errors.length > 0);
      assert(!refused.joined && refused.errors[0].code === 105, `duplicate peer id: ${JSON.stringify(refused)}`);
      out.duplicate = refused.errors[0];
      await closePages(dup);
      // The Leave button: bye + roomLeave; the other page drops the peer.
      await r.b.click("#leave-button");
      await waitFor(r.a, `${r.aId} to see ${r.bId} leave`, (h, o) => !(o in h.peers), r.bId);
      out.left = true;
    });
  },

  async media() {
    return twoPageScenario("media", opts.base, { media: "1" }, async (r, out) => {
      const frames = (h, other) => {
        const v = h.peers[other]?.video;
        return Boolean(v && v.framesDecoded > 0 && v.videoWidth > 0);
      };
      await waitFor(r.a, `${r.aId}: remote video from ${r.bId} decoding frames`, frames, r.bId);
      await waitFor(r.b, `${r.bId}: remote video from ${r.aId} decoding frames`, frames, r.aId);
      const sa = await hook(r.a);
      const sb = await hook(r.b);
      out.a.video = sa.peers[r.bId].video;
      out.b.video = sb.peers[r.aId].video;
      // Let a few more frames and a stats refresh land, then capture the call.
      await r.a.waitForTimeout(1500);
      out.screenshot = await screenshot(r.a, "call.png");
    });
  },

  async https() {
    return twoPageScenario("https", opts.httpsBase, {}, async (r, out) => {
      assert(r.a.url().startsWith("https:"), `page is not on HTTPS: ${r.a.url()}`);
      out.origin = new URL(r.a.url()).origin;
    });
  },

  async aiortc() {
    const room = `e2e-aiortc-${rand()}`;
    const me = "browser";
    const other = "aiortc";
    const page = await openCall(opts.base, { room, peer: me }, me);
    process.stdout.write(`READY ${JSON.stringify({ room, peer: me, expect: other })}\n`);
    const slow = 45_000; // includes starting Python and importing aiortc
    await waitFor(page, `${other} to join and open the data channel`, (h, o) => h.peers[o]?.dataChannelState === "open", other, slow);
    const hello = `hello from ${me} ${rand()}`;
    await page.evaluate((t) => window.switchboardCall.send(t), hello);
    await waitFor(page, `a message from ${other}`, (h, o) => h.messages.some((m) => m.from === o), other);
    await waitFor(
      page,
      `a selected candidate pair with ${other}`,
      (h, o) => Boolean(h.peers[o]?.selectedPair?.local),
      other,
    );
    const before = await hook(page);
    await page.evaluate(() => window.switchboardCall.send("ack"));
    // The Python peer leaves the room once it has read the ack.
    await waitFor(page, `${other} to leave after the ack`, (h, o) => !(o in h.peers), other);
    noErrors(await hook(page), me);
    await closePages(page);
    return { room, sent: [hello, "ack"], ...pairSummary(before, other) };
  },

  async console() {
    const page = consolePage;
    await page.waitForFunction(() => window.switchboardConsole && window.switchboardConsole.polls >= 3, null, {
      timeout: STEP_MS,
    });
    const view = await page.evaluate(() => ({
      polls: window.switchboardConsole.polls,
      lastError: window.switchboardConsole.lastError,
      values: window.switchboardConsole.values,
      listeners: window.switchboardConsole.listeners,
    }));
    assert(view.lastError === null, `console: ${view.lastError}`);
    assert(view.listeners.length > 0, "console shows no listeners");
    const charts = await page.$$eval("[data-chart]", (n) => n.length);
    assert(charts >= 7, `console draws ${charts} charts, expected 7`);
    return { ...view, charts, screenshot: await screenshot(page, "console.png") };
  },
};

async function screenshot(page, name) {
  fs.mkdirSync(opts.out, { recursive: true });
  const file = path.join(opts.out, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
  return file;
}

// ------------------------------------------------------------------ main

let consolePage = null;
const result = { ok: false, scenarios: {}, failed: null, screenshots: [] };

const deadline = setTimeout(() => {
  console.error(`call_e2e: deadline of ${opts.deadlineMs} ms passed`);
  result.failed = result.failed ?? "deadline";
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(4);
}, opts.deadlineMs);

let code = 0;
try {
  await launch();
  if (opts.scenarios.includes("console")) {
    // Open first so its charts cover the calls.
    consolePage = await newPage("console");
    const r = await consolePage.goto(`${opts.base}/`, { waitUntil: "load", timeout: STEP_MS });
    assert(r && r.ok(), `GET /: HTTP ${r?.status()}`);
  }
  for (const name of opts.scenarios) {
    const started = Date.now();
    log(`scenario ${name}`);
    result.failed = name;
    result.scenarios[name] = await scenarios[name]();
    result.scenarios[name].ms = Date.now() - started;
    log(`scenario ${name} passed in ${Date.now() - started} ms`);
  }
  assert(fatal.length === 0, `page errors or CSP violations:\n${fatal.join("\n")}`);
  result.failed = null;
  result.ok = true;
} catch (e) {
  code = 1;
  result.error = e.message;
  console.error(`call_e2e: scenario ${result.failed} failed: ${e.message}`);
  if (fatal.length) console.error(`page errors:\n${fatal.join("\n")}`);
} finally {
  for (const s of Object.values(result.scenarios)) {
    if (s?.screenshot) result.screenshots.push(s.screenshot);
  }
  if (context) await context.close().catch(() => {});
  removeProfile();
  clearTimeout(deadline);
}
for (const s of result.screenshots) console.error(`screenshot: ${s}`);
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
process.exit(code);
