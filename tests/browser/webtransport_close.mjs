#!/usr/bin/env node
// How a WebTransport session ends, seen from a real browser: Debian's Chromium (never a
// downloaded one), driven by playwright-core, for crates/cli/tests/it/browser.rs.
//
// A page (any page of the server without a CSP, /healthz by default) opens a WebTransport
// session to --url with `serverCertificateHashes` (--hash: the SHA-256 of the server's ECDSA
// certificate, valid for at most 14 days, as the API requires), opens one bidirectional stream
// and speaks the hub's framing on it (u32 big-endian length + protobuf, docs/http3.md; the few
// protobuf fields needed are hand-encoded below): `connect`, then `subscribe` to --channel.
// It prints "READY {json}" once both replies are in. Then, by --mode:
//
//   close  waits for a line "close" on stdin, calls `transport.close({closeCode: 4001, reason:
//          "page done"})`, prints "CLOSED {json}" (the `closed` promise's outcome) and keeps the
//          browser (and so its QUIC connection) open until stdin ends: the server must notice
//          the session's end from the CLOSE_WEBTRANSPORT_SESSION capsule, not from a lost
//          connection.
//   hold   waits (up to --wait-ms) for the `closed` promise, which only the server can settle
//          (the caller stops it), and prints "RESULT {json}": whether `closed` resolved (a clean
//          close, with closeCode and reason) or rejected (an error such as a lost connection),
//          and the frames the stream carried (the last should be the 3001 disconnect).
//
// usage: node webtransport_close.mjs --page http://127.0.0.1:HTTP/healthz
//          --url https://127.0.0.1:HTTPS/v1/wt --hash AA:BB:... --channel NAME --mode close|hold
//          [--wait-ms MS] [--chromium PATH] [--base URL] [--out DIR]
//
// --base and --out are accepted (and ignored) so the caller can share call_e2e.mjs's command
// line. Progress and diagnostics go to stderr. Exit code 0 when the session was set up and the
// mode ran to its end; the caller judges the JSON.

import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags, tempProfile } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STEP_MS = 20_000;

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    { page: "", url: "", hash: "", channel: "wt-close", mode: "close", waitMs: 15_000 },
    {
      "--page": "page",
      "--url": "url",
      "--hash": "hash",
      "--channel": "channel",
      "--mode": "mode",
      "--wait-ms": ["waitMs", Number],
      "--base": null,
      "--out": null,
    },
  );
  if (!o.page || !o.url || !o.hash) throw new Error("--page, --url and --hash are required");
  if (!["close", "hold"].includes(o.mode)) throw new Error(`unknown mode ${o.mode}`);
  return o;
}

const log = (...a) => console.error("[webtransport_close]", ...a);

const chromium = await loadChromium();
const opts = parseOrExit("webtransport_close", parseArgs);
requireChromium(opts.chromium);

// call_e2e.mjs's flags (no background traffic on a closed network, a fresh profile) without
// --disable-quic: WebTransport is QUIC. No certificate flags: serverCertificateHashes is the
// only thing that makes the self-made certificate acceptable.
const CHROMIUM_ARGS = BASE_ARGS;

const lines = (() => {
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  const waiters = [];
  let ended = false;
  rl.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
  rl.on("close", () => {
    ended = true;
    while (waiters.length) waiters.shift()(null);
  });
  // The next stdin line, or null once stdin has ended.
  return () =>
    queue.length ? Promise.resolve(queue.shift()) : ended ? Promise.resolve(null) : new Promise((r) => waiters.push(r));
})();

// Runs in the page: opens the session and the stream, connects and subscribes. Leaves
// window.__wt = { wt, state } for the later steps.
async function openSession({ url, hash, channel, stepMs }) {
  const varint = (n) => {
    const out = [];
    while (n > 0x7f) {
      out.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    out.push(n);
    return out;
  };
  const field = (num, bytes) => [...varint((num << 3) | 2), ...varint(bytes.length), ...bytes];
  const command = (id, method, body) => [...varint(1 << 3), ...varint(id), ...field(method, body)];
  const framed = (body) => {
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, body.length);
    out.set(body, 4);
    return out;
  };
  // Fields of one message: number -> [values] (varints as numbers, length-delimited as bytes).
  const fields = (bytes) => {
    const out = {};
    let i = 0;
    const rd = () => {
      let v = 0;
      let shift = 0;
      for (;;) {
        const b = bytes[i++];
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (b < 0x80) return v;
      }
    };
    while (i < bytes.length) {
      const key = rd();
      const num = Math.floor(key / 8);
      const type = key & 7;
      let v;
      if (type === 0) v = rd();
      else if (type === 2) {
        const n = rd();
        v = bytes.subarray(i, i + n);
        i += n;
      } else if (type === 1) {
        v = bytes.subarray(i, i + 8);
        i += 8;
      } else if (type === 5) {
        v = bytes.subarray(i, i + 4);
        i += 4;
      } else throw new Error(`wire type ${type}`);
      (out[num] ??= []).push(v);
    }
    return out;
  };
  const text = (b) => (b ? new TextDecoder().decode(b) : "");
  // A ServerFrame, summarised.
  const summary = (bytes) => {
    const f = fields(bytes);
    if (f[1]) {
      const r = fields(f[1][0]);
      const s = { reply: r[1]?.[0] ?? 0 };
      if (r[2]) s.error = fields(r[2][0])[1]?.[0] ?? 0;
      if (r[3]) s.clientId = text(fields(r[3][0])[1]?.[0]);
      if (r[4]) s.subscribed = true;
      return s;
    }
    if (f[2]) {
      const p = fields(f[2][0]);
      if (p[4]) {
        const d = fields(p[4][0]);
        return { disconnect: d[1]?.[0] ?? 0, reason: text(d[2]?.[0]) };
      }
      return { push: Object.keys(p).map(Number) };
    }
    return { unknown: true };
  };

  const hex = hash.replace(/:/g, "");
  const value = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
  const state = { frames: [], closed: null, ended: false, readError: null };
  const wt = new WebTransport(url, { serverCertificateHashes: [{ algorithm: "sha-256", value }] });
  window.__wt = { wt, state };
  wt.closed.then(
    (info) => (state.closed = { resolved: true, closeCode: info.closeCode, reason: info.reason }),
    (e) => (state.closed = { resolved: false, error: `${e.name}: ${e.message}`, source: e.source ?? null }),
  );
  await wt.ready;
  const { readable, writable } = await wt.createBidirectionalStream();
  const writer = writable.getWriter();
  const enc = new TextEncoder();
  await writer.write(framed(command(1, 2, [])));
  await writer.write(framed(command(2, 3, field(1, [...enc.encode(channel)]))));
  writer.releaseLock();
  const reader = readable.getReader();
  (async () => {
    let buf = new Uint8Array(0);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          state.ended = true;
          return;
        }
        const joined = new Uint8Array(buf.length + value.length);
        joined.set(buf);
        joined.set(value, buf.length);
        buf = joined;
        while (buf.length >= 4) {
          const n = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
          if (buf.length < 4 + n) break;
          state.frames.push(summary(buf.subarray(4, 4 + n)));
          buf = buf.slice(4 + n);
        }
      }
    } catch (e) {
      state.readError = `${e.name}: ${e.message}`;
    }
  })();
  const end = Date.now() + stepMs;
  while (state.frames.filter((f) => "reply" in f).length < 2) {
    if (Date.now() > end || state.closed || state.ended) {
      throw new Error(`no connect and subscribe replies: ${JSON.stringify(state)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const connect = state.frames.find((f) => f.reply === 1) ?? {};
  const subscribe = state.frames.find((f) => f.reply === 2) ?? {};
  return { clientId: connect.clientId ?? "", subscribed: !!subscribe.subscribed, frames: state.frames };
}

// Runs in the page: waits up to `ms` for the `closed` promise to settle.
async function waitClosed({ ms }) {
  const { state } = window.__wt;
  const end = Date.now() + ms;
  while (!state.closed && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  // Give the stream reader a moment to record what arrived with the close.
  await new Promise((r) => setTimeout(r, 100));
  return state;
}

// Runs in the page: closes the session and waits for `closed`.
async function closeSession({ ms }) {
  const { wt, state } = window.__wt;
  const t0 = performance.now();
  wt.close({ closeCode: 4001, reason: "page done" });
  const end = Date.now() + ms;
  while (!state.closed && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return { ...state, ms: Math.round(performance.now() - t0) };
}

const [profile] = tempProfile();
let context = null;
let code = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const page = await context.newPage();
  page.on("console", (m) => log(`page console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log(`page uncaught: ${e.message}`));
  log(`open ${opts.page}`);
  await page.goto(opts.page, { waitUntil: "load", timeout: STEP_MS });
  const ready = await page.evaluate(openSession, {
    url: opts.url,
    hash: opts.hash,
    channel: opts.channel,
    stepMs: STEP_MS,
  });
  process.stdout.write(`READY ${JSON.stringify(ready)}\n`);
  if (opts.mode === "close") {
    for (;;) {
      const line = await lines();
      if (line === null) throw new Error("stdin ended before \"close\"");
      if (line.trim() === "close") break;
    }
    const closed = await page.evaluate(closeSession, { ms: STEP_MS });
    process.stdout.write(`CLOSED ${JSON.stringify(closed)}\n`);
    // The browser stays, and with it the QUIC connection, until the caller is done.
    while ((await lines()) !== null);
  } else {
    const state = await page.evaluate(waitClosed, { ms: opts.waitMs });
    process.stdout.write(`RESULT ${JSON.stringify(state)}\n`);
  }
} catch (e) {
  log(`failed: ${e.stack || e.message}`);
  code = 1;
} finally {
  if (context) await context.close().catch(() => {});
}
process.exit(code);
