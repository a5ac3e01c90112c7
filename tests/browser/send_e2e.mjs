#!/usr/bin/env node
// The /send page in Debian's Chromium (playwright-core) against the CLI's `switchboard send` /
// `receive`, run by crates/cli/tests/it/send_browser.rs, which starts the server and the CLI.
// Modes:
//
//   receive  open /send#code=CODE (the sender's link form), wait until the page is done (or has
//            failed), then click every download link and read the downloaded files: prints
//            RESULT {ok, state, downloads: [{path, size, sha256}]} — the caller compares them
//            with what the CLI sent. With --expect-error KIND the page must fail with that
//            error kind instead (e.g. wrong_code) and show the message.
//   send     open /send, pick --file PATH (repeatable) with setInputFiles and press Send; prints
//            "CODE {code, link}" once the page shows its code, then waits until it is done
//            (the caller runs `switchboard receive CODE` meanwhile): RESULT {ok, state}.
//
// Every run fails on an uncaught page error or a CSP violation, and saves a screenshot
// (--screenshot NAME, in --out). Page console lines go to stderr.
//
// usage: node send_e2e.mjs --base http://127.0.0.1:PORT --mode receive|send [--code CODE]
//          [--file PATH]... [--expect-error KIND] [--screenshot send.png] [--out DIR]
//          [--chromium PATH] [--deadline-ms MS]

import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags, baseUrl, absolute } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    {
      base: "",
      mode: "",
      code: "",
      files: [],
      expectError: "",
      screenshot: "",
      out: path.join(ROOT, "test-output", "screenshots"),
      deadlineMs: 30_000,
    },
    {
      "--base": ["base", baseUrl],
      "--mode": "mode",
      "--code": "code",
      "--file": ["files", (v, files) => [...files, path.resolve(v)]],
      "--expect-error": "expectError",
      "--screenshot": "screenshot",
      "--out": ["out", absolute],
      "--deadline-ms": ["deadlineMs", Number],
    },
  );
  if (!o.base) throw new Error("--base http://HOST:PORT is required");
  if (o.mode === "receive" && !o.code) throw new Error("--mode receive needs --code");
  if (o.mode === "send" && o.files.length === 0) throw new Error("--mode send needs --file");
  if (o.mode !== "receive" && o.mode !== "send") throw new Error("--mode receive or send");
  return o;
}

const log = (...a) => console.error("[send_e2e]", ...a);
const chromium = await loadChromium();
const opts = parseOrExit("send_e2e", parseArgs);
requireChromium(opts.chromium);

// Host candidates as addresses on loopback (nothing here resolves mDNS names), as call_e2e.
const CHROMIUM_ARGS = [
  ...BASE_ARGS,
  "--disable-quic",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-send-chromium-"));
process.on("exit", () => fs.rmSync(profile, { recursive: true, force: true }));

const fatal = [];
const result = { ok: false, mode: opts.mode, state: null, downloads: [], error: "" };
let context = null;
let page = null;

const deadline = Date.now() + opts.deadlineMs;
const left = () => Math.max(1000, deadline - Date.now());

async function state() {
  return page.evaluate(() => window.switchboardSend?.state() ?? null);
}

/** Polls the page's hook until `pred(state)` holds; returns that state. */
async function until(pred, what) {
  for (;;) {
    const s = await state();
    if (s && pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    acceptDownloads: true,
    viewport: { width: 1000, height: 800 },
  });
  page = await context.newPage();
  page.on("console", (m) => {
    const line = `page console.${m.type()}: ${m.text()}`;
    console.error(line);
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) fatal.push(line);
  });
  page.on("pageerror", (e) => fatal.push(`page uncaught: ${e.message}`));

  if (opts.mode === "receive") {
    await page.goto(`${opts.base}/send#code=${encodeURIComponent(opts.code)}`, { timeout: left() });
    // The words left the address bar at once (they are never sent to the server anyway).
    const address = page.url();
    if (address.includes("code=")) throw new Error(`the code is still in the address: ${address}`);
    const s = await until((x) => x.phase === "done" || x.phase === "error", "the page to finish receiving");
    result.state = s;
    if (opts.expectError) {
      if (s.phase !== "error" || s.error?.kind !== opts.expectError) {
        throw new Error(`expected error ${opts.expectError}, the page ended ${JSON.stringify(s)}`);
      }
      const shown = await page.locator("#error").innerText();
      if (!shown.includes(s.error.message)) throw new Error(`the error is not shown: ${shown}`);
    } else {
      if (s.phase !== "done") throw new Error(`the page failed: ${JSON.stringify(s.error)}`);
      const links = page.locator("a.download");
      const n = await links.count();
      for (let i = 0; i < n; i++) {
        const [download] = await Promise.all([page.waitForEvent("download", { timeout: left() }), links.nth(i).click()]);
        const file = await download.path();
        const bytes = fs.readFileSync(file);
        result.downloads.push({
          path: await links.nth(i).innerText(),
          name: download.suggestedFilename(),
          size: bytes.length,
          sha256: crypto.createHash("sha256").update(bytes).digest("hex"),
        });
      }
    }
  } else {
    await page.goto(`${opts.base}/send`, { timeout: left() });
    await page.setInputFiles("#files", opts.files);
    await page.click("#send-button");
    const s = await until((x) => x.code || x.phase === "error", "the page's code");
    if (!s.code) throw new Error(`no code: ${JSON.stringify(s.error)}`);
    const shown = await page.locator("#send-code").innerText();
    if (shown !== s.code) throw new Error(`the page shows ${shown}, its hook ${s.code}`);
    console.log(`CODE ${JSON.stringify({ code: s.code, link: s.link })}`);
    const end = await until((x) => x.phase === "done" || x.phase === "error", "the page to finish sending");
    result.state = end;
    if (opts.expectError) {
      if (end.phase !== "error" || end.error?.kind !== opts.expectError) {
        throw new Error(`expected error ${opts.expectError}, the page ended ${JSON.stringify(end)}`);
      }
    } else if (end.phase !== "done") {
      throw new Error(`the page failed: ${JSON.stringify(end.error)}`);
    }
  }
  if (opts.screenshot) {
    fs.mkdirSync(opts.out, { recursive: true });
    await page.screenshot({ path: path.join(opts.out, opts.screenshot), fullPage: true });
  }
  if (fatal.length) throw new Error(`page errors: ${fatal.join("; ")}`);
  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.error = String(e?.stack ?? e);
  log(result.error);
  try {
    result.state ??= page ? await state() : null;
  } catch {
    // the page is gone
  }
} finally {
  console.log(`RESULT ${JSON.stringify(result)}`);
  await context?.close().catch(() => {});
}
process.exit(result.ok ? 0 : 1);
