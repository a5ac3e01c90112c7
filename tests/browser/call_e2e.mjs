#!/usr/bin/env node
// Real-browser end-to-end test of switchboard's call page (/call) and console (/).
//
// Drives Debian's Chromium (never a downloaded browser) with playwright-core through the page's
// read-only test hook window.switchboardCall (docs/web.md). Scenarios, run in the order given:
//
//   relay    two pages, relay=1: data-channel messages both ways; each page's selected candidate
//            pair is local "relay" (switchboard's TURN)
//   direct   two pages without relay: messages both ways; the selected pair is not relay; the
//            panel's candidate text in Chromium (mDNS host candidates read "mDNS host"); a taken
//            peer id is refused; Leave returns the page to its pre-join state (no chat card, no
//            peer panels, Join enabled) and joining again works
//   media    two pages with media=1 and Chromium's fake camera: remote video gets decoded frames;
//            screenshot of /call during the call
//   https    two pages over the --https listener (self-signed; wss:, fetch over TLS): messages
//   turns    two pages from --base https://localhost:PORT (the one port of --listen), relay=1 and
//            media=1, their /v1/ice-servers cut down to the turns: URLs: messages both ways,
//            remote video decoding, and each page's selected local candidate a relay over TLS
//   aiortc   one page waits in a room; prints "READY {json}" on stdout, then expects the Python
//            aiortc peer (tests/peers/aiortc_call.py, started by the caller) to join, offer and
//            exchange messages; waits until it leaves
//   console  screenshot of / (the console page, open since the start, so with some traffic)
//   mdns     one page in a second Chromium that hides host IPs behind mDNS names (Chromium's
//            default without camera permission; no STUN/TURN, so host candidates only) calls a
//            normal page: its panel reads "mDNS host, port N udp" for its own candidate. Skipped (said in the result) where that Chromium
//            gathers no host candidate at all, as in a loopback-only network namespace (no
//            default route); crates/cli/tests/it/browser.rs gives its namespace a second
//            interface (198.51.100.7/24, default route) for this run and fails on a skip
//
// Every call scenario also checks each page's peer panels: never an empty address before a
// port, and "mDNS host" whenever the hook's candidate is a host candidate without an address
// (or with a ".local" name).
//
// usage: node call_e2e.mjs --base http://127.0.0.1:PORT [--https-base https://127.0.0.1:PORT]
//          [--scenarios relay,direct,media,https,aiortc,console,mdns,turns] [--out DIR]
//          [--deadline-ms MS]
//
// stdout: "READY {...}" (aiortc scenario) and, last, "RESULT {...}" (a JSON summary); progress
// and diagnostics go to stderr. Exit code 0 only when every scenario passed.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags, baseUrl, list, absolute, tempProfile, WEBRTC_ARGS, runScenarios } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const STEP_MS = 25_000; // bound of every single wait

// ------------------------------------------------------------------ arguments

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    {
      base: "",
      httpsBase: "",
      scenarios: ["relay", "direct", "media", "https", "console"],
      out: path.join(ROOT, "test-output", "screenshots"),
      deadlineMs: 100_000,
    },
    {
      "--base": ["base", baseUrl],
      "--https-base": ["httpsBase", baseUrl],
      "--scenarios": ["scenarios", list],
      "--out": ["out", absolute],
      "--deadline-ms": ["deadlineMs", Number],
    },
  );
  if (!o.base) throw new Error("--base http://HOST:PORT is required");
  const known = ["relay", "direct", "media", "https", "aiortc", "console", "mdns", "turns"];
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
  ...WEBRTC_ARGS,
  "--autoplay-policy=no-user-gesture-required",
  "--ignore-certificate-errors",
];

const [profile, removeProfile] = tempProfile();

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

async function newPage(label, ctx = context) {
  const page = await ctx.newPage();
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

async function openCall(base, params, label, ctx = context) {
  const page = await newPage(label, ctx);
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

/** A host candidate whose address the browser hides behind an mDNS name (docs/web.md). */
const isMdnsHost = (c) =>
  Boolean(c) && c.candidateType === "host" && (!c.address || /\.local\.?$/i.test(c.address));

// "host :39392", "relay []:3478": an empty address in front of a port.
const EMPTY_ADDRESS = /(^|[\s(,])(\[\])?:\d/;

/** The stats panels as shown: {peerId: {local, remote}} (the cells' text). */
function panels(page) {
  return page.$$eval("#peers article.peer", (cards) =>
    Object.fromEntries(cards.map((card) => {
      const row = (name) =>
        [...card.querySelectorAll("tr")].find((tr) => tr.querySelector("th")?.textContent === name)
          ?.querySelector("td")?.textContent ?? null;
      return [card.dataset.peer, { local: row("local"), remote: row("remote") }];
    })),
  );
}

/**
 * Each peer panel of `page` against the hook: once a pair is selected, the local and remote
 * cells name an address (never "host :PORT") and read "mDNS host" for an mDNS host candidate.
 * Waits for a stats refresh that shows the pair. Returns {peerId: {local, remote}}.
 */
async function checkPanels(page, label) {
  let last = null;
  const end = Date.now() + STEP_MS;
  for (;;) {
    const h = await hook(page);
    const shown = await panels(page);
    last = { hook: h.peers, shown };
    const problems = [];
    let pending = false;
    for (const [id, p] of Object.entries(h.peers)) {
      const cells = shown[id];
      if (!cells) {
        pending = true;
        continue;
      }
      if (!p.selectedPair) continue;
      for (const side of ["local", "remote"]) {
        const c = p.selectedPair[side];
        const text = cells[side] ?? "";
        if (c && text === "–") pending = true; // the panel is a refresh behind the hook
        if (EMPTY_ADDRESS.test(text)) problems.push(`${id} ${side}: "${text}" has an empty address`);
        if (isMdnsHost(c) && text !== "–" && !text.startsWith("mDNS host")) {
          problems.push(`${id} ${side}: ${JSON.stringify(c)} is an mDNS host candidate, panel says "${text}"`);
        }
      }
    }
    assert(problems.length === 0, `${label} stats panel: ${problems.join("; ")}`);
    if (!pending) return shown;
    if (Date.now() > end) throw new Error(`${label}: stats panels never caught up: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * The page's own candidate formatting (the module the page runs, imported again: the same
 * instance), fed with candidates as Chromium's getStats() reports them.
 */
async function checkCandidateText(page) {
  const cases = [
    // Chromium's own mDNS-hidden host candidate: address "" (the hook makes it null).
    [{ candidateType: "host", address: null, port: 39392, protocol: "udp" }, "mDNS host, port 39392 udp"],
    [{ candidateType: "host", address: "", port: 39392, protocol: "udp" }, "mDNS host, port 39392 udp"],
    // A remote peer's mDNS name.
    [{ candidateType: "host", address: "2f1c9a7e-1b2c-4d5e-8f90-0a1b2c3d4e5f.local", port: 5000, protocol: "udp" }, "mDNS host, port 5000 udp"],
    [{ candidateType: "host", address: "127.0.0.1", port: 39392, protocol: "udp" }, "host 127.0.0.1:39392 udp"],
    [{ candidateType: "srflx", address: "::1", port: 40000, protocol: "udp" }, "srflx [::1]:40000 udp"],
    [{ candidateType: "relay", address: "127.0.0.1", port: 49152, protocol: "udp", relayProtocol: "tcp" }, "relay 127.0.0.1:49152 udp (TURN over tcp)"],
    [{ candidateType: "prflx", address: null, port: 41000, protocol: "udp" }, null],
    [null, "–"],
  ];
  const got = await page.evaluate(async (inputs) => {
    const m = await import("/assets/call.js");
    return inputs.map((c) => m.candidateText(c));
  }, cases.map(([c]) => c));
  cases.forEach(([c, want], i) => {
    assert(!EMPTY_ADDRESS.test(got[i]), `candidateText(${JSON.stringify(c)}) = "${got[i]}": empty address`);
    if (want !== null) assert(got[i] === want, `candidateText(${JSON.stringify(c)}) = "${got[i]}", expected "${want}"`);
  });
  return got;
}

/** What a page shows outside the hook: the join form, the call and chat cards, the panels. */
function pageView(page) {
  return page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    return {
      formHidden: q("#join-form").hidden,
      joinDisabled: q("#join-button").disabled,
      callHidden: q("#call").hidden,
      chatHidden: q("#chat").hidden,
      chatVisible: q("#chat").checkVisibility(),
      logLines: q("#log").children.length,
      panels: document.querySelectorAll("#peers article.peer").length,
    };
  });
}

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
  const panelA = await checkPanels(a, aId);
  const panelB = await checkPanels(b, bId);
  return { room, a, b, aId, bId, textA, textB, panels: { a: panelA[bId], b: panelB[aId] } };
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
  const out = { room: r.room, a: pairSummary(sa, r.bId), b: pairSummary(sb, r.aId), panels: r.panels };
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
      out.candidateText = await checkCandidateText(r.a);
      // The Leave button: bye + roomLeave; the other page drops the peer.
      await r.b.click("#leave-button");
      await waitFor(r.a, `${r.aId} to see ${r.bId} leave`, (h, o) => !(o in h.peers), r.bId);
      await waitFor(r.b, `${r.bId} to be out of the room`, (h) => !h.joined && Object.keys(h.peers).length === 0);
      // Back to the state before Join: the form with Join enabled; no call card, no chat card,
      // no peer panel (a stats refresh later still none).
      await r.b.waitForTimeout(1200);
      const after = await pageView(r.b);
      assert(
        !after.formHidden && !after.joinDisabled && after.callHidden && after.chatHidden &&
          !after.chatVisible && after.panels === 0,
        `${r.bId} after Leave is not back to the join form: ${JSON.stringify(after)}`,
      );
      out.left = true;
      out.afterLeave = after; // crates/cli/tests/it/browser.rs checks this and out.rejoined
      // Joining again (the form, as a user would) works: a fresh chat, a new call with a.
      await r.b.click("#join-button");
      await waitFor(r.b, `${r.bId} to join ${r.room} again`, (h) => h.joined || h.errors.length > 0);
      const open = (h, other) => h.peers[other]?.dataChannelState === "open";
      await waitFor(r.b, `${r.bId}: data channel to ${r.aId} open again`, open, r.aId);
      await waitFor(r.a, `${r.aId}: data channel to ${r.bId} open again`, open, r.bId);
      const again = `again from ${r.bId} ${rand()}`;
      await r.b.evaluate((t) => window.switchboardCall.send(t), again);
      await waitFor(r.a, `${r.aId} to receive "${again}"`, (h, t) => h.messages.some((m) => m.text === t), again);
      const rejoined = await pageView(r.b);
      assert(
        rejoined.formHidden && rejoined.joinDisabled && !rejoined.callHidden && rejoined.chatVisible &&
          rejoined.panels === 1,
        `${r.bId} after joining again: ${JSON.stringify(rejoined)}`,
      );
      const hb = await hook(r.b);
      assert(
        hb.messages.length === 1 && hb.messages[0].text === again,
        `${r.bId}: the chat of the new call should hold only its own message: ${JSON.stringify(hb.messages)}`,
      );
      await checkPanels(r.b, `${r.bId} (joined again)`);
      out.rejoined = rejoined;
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

  async turns() {
    // TURN over TLS alone (docs/one-port.md): run with --base https://localhost:PORT, the one
    // port of `--listen`. The pages join relay only, with camera and microphone, and the ICE
    // servers they fetch are cut down to the turns: URLs, so the only candidates Chromium has
    // are relays it allocated over TLS on that port (media and data both go through them).
    const served = [];
    const onlyTurns = async (route) => {
      const res = await route.fetch();
      const body = await res.json();
      const iceServers = (body.iceServers ?? [])
        .map((s) => ({ ...s, urls: [].concat(s.urls ?? []).filter((u) => /^turns:/.test(u)) }))
        .filter((s) => s.urls.length > 0);
      served.push(...iceServers.flatMap((s) => s.urls));
      await route.fulfill({ status: res.status(), json: { ...body, iceServers } });
    };
    await context.route("**/v1/ice-servers", onlyTurns);
    try {
      return await twoPageScenario("turns", opts.base, { relay: "1", media: "1" }, async (r, out) => {
        assert(r.a.url().startsWith("https:"), `page is not on HTTPS: ${r.a.url()}`);
        assert(served.length > 0, "the pages were handed no turns: URL");
        out.iceServers = [...new Set(served)];
        const frames = (h, other) => {
          const v = h.peers[other]?.video;
          return Boolean(v && v.framesDecoded > 0 && v.videoWidth > 0);
        };
        await waitFor(r.a, `${r.aId}: remote video from ${r.bId} decoding frames`, frames, r.bId);
        await waitFor(r.b, `${r.bId}: remote video from ${r.aId} decoding frames`, frames, r.aId);
        const sa = await hook(r.a);
        const sb = await hook(r.b);
        out.a = pairSummary(sa, r.bId);
        out.b = pairSummary(sb, r.aId);
        for (const side of [out.a, out.b]) {
          const local = side.selectedPair?.local;
          assert(
            local?.candidateType === "relay" && local?.relayProtocol === "tls",
            `${side.peer}: the selected local candidate should be a relay over TLS: ${JSON.stringify(local)}`,
          );
        }
      });
    } finally {
      await context.unroute("**/v1/ice-servers", onlyTurns);
    }
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
    const shown = await checkPanels(page, me);
    const before = await hook(page);
    await page.evaluate(() => window.switchboardCall.send("ack"));
    // The Python peer leaves the room once it has read the ack.
    await waitFor(page, `${other} to leave after the ack`, (h, o) => !(o in h.peers), other);
    noErrors(await hook(page), me);
    await closePages(page);
    return { room, sent: [hello, "ack"], ...pairSummary(before, other), panel: shown[other] };
  },

  async mdns() {
    // A second Chromium with Chromium's defaults for WebRTC: mDNS names for host candidates
    // (no --disable-features=WebRtcHideLocalIpsWithMdns) in a context without camera
    // permission (which would expose the addresses), and no loopback candidates (with them,
    // the hidden page's checks to 127.0.0.1 go out from its any-address socket and the pair's
    // local candidate is a peer-reflexive one, its address hidden too).
    const browser = await chromium.launch({
      executablePath: opts.chromium,
      headless: true,
      args: [...BASE_ARGS, "--disable-quic"],
    });
    const pages = [];
    try {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      // No STUN/TURN for this page, so that its only candidates are the mDNS host ones (with a
      // STUN server, Chromium may well pick its server-reflexive candidate instead).
      await ctx.route("**/v1/ice-servers", (route) => route.fulfill({ json: { iceServers: [] } }));
      const room = `e2e-mdns-${rand()}`;
      const hidden = await openCall(opts.base, { room, peer: "mdns-hidden" }, "mdns-hidden", ctx);
      pages.push(hidden);
      // Does this Chromium gather an mDNS host candidate here at all?
      const gathered = await hidden.evaluate(async () => {
        const pc = new RTCPeerConnection();
        pc.createDataChannel("probe");
        const lines = [];
        pc.onicecandidate = (e) => { if (e.candidate?.candidate) lines.push(e.candidate.candidate); };
        const done = new Promise((r) => {
          pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); };
        });
        await pc.setLocalDescription();
        await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
        pc.close();
        return lines;
      });
      const mdnsHosts = gathered.filter((l) => / typ host/.test(l) && /\.local /.test(l));
      if (mdnsHosts.length === 0) {
        const skipped = `this Chromium gathers no mDNS host candidate here (${gathered.length} candidates; a loopback-only network has no default route)`;
        log(`scenario mdns skipped: ${skipped}`);
        return { skipped, gathered };
      }
      // The other page in the same Chromium, with camera permission: real host addresses, and
      // (no loopback here) the same interfaces as the hidden page, so the pair is host to host.
      const plainCtx = await browser.newContext({ permissions: ["camera", "microphone"] });
      const plain = await openCall(opts.base, { room, peer: "mdns-plain" }, "mdns-plain", plainCtx);
      pages.push(plain);
      const open = (h, other) => h.peers[other]?.dataChannelState === "open";
      await waitFor(hidden, "mdns-hidden: data channel open", open, "mdns-plain");
      await waitFor(plain, "mdns-plain: data channel open", open, "mdns-hidden");
      const local = (h, o) => Boolean(h.peers[o]?.selectedPair?.local);
      const h = await waitFor(hidden, "mdns-hidden: a selected pair", local, "mdns-plain");
      await waitFor(plain, "mdns-plain: a selected pair", local, "mdns-hidden");
      const shown = await checkPanels(hidden, "mdns-hidden");
      await checkPanels(plain, "mdns-plain");
      const c = h.peers["mdns-plain"].selectedPair.local;
      assert(
        isMdnsHost(c),
        `mdns-hidden's local candidate should be an mDNS host candidate: ${JSON.stringify(c)}`,
      );
      assert(
        shown["mdns-plain"].local === `mDNS host, port ${c.port} ${c.protocol}`,
        `mdns-hidden's panel shows "${shown["mdns-plain"].local}" for ${JSON.stringify(c)}`,
      );
      for (const [p, label] of [[hidden, "mdns-hidden"], [plain, "mdns-plain"]]) noErrors(await hook(p), label);
      return { room, gathered: mdnsHosts, local: c, panel: shown["mdns-plain"] };
    } finally {
      await closePages(...pages);
      await browser.close().catch(() => {});
    }
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
  await runScenarios(scenarios, opts.scenarios, result, log, { lines: false });
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
