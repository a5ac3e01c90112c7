// What the browser scripts share: playwright-core (pinned in package-lock.json, never a
// downloaded browser), argument parsing that exits 2 with a message, Debian's Chromium checked
// before use, and the flags every run needs here.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));

// The machine notes' flags: no background traffic on a closed network, a fresh profile, no GPU.
export const BASE_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** playwright-core's `chromium`, or exit 3 with how to install it. */
export async function loadChromium() {
  try {
    const { chromium } = await import("playwright-core");
    return chromium;
  } catch (e) {
    console.error(
      `playwright-core is not installed in ${HERE}/node_modules: run scripts/test-deps (npm ci there)\n${e.message}`,
    );
    process.exit(3);
  }
}

/** `parse(argv)`, or exit 2 with `name: message`. */
export function parseOrExit(name, parse) {
  try {
    return parse(process.argv.slice(2));
  } catch (e) {
    console.error(`${name}: ${e.message}`);
    process.exit(2);
  }
}

/** Exit 3 unless the Chromium executable at `file` exists. */
export function requireChromium(file) {
  if (!fs.existsSync(file)) {
    console.error(`${file} is missing: run scripts/test-deps (apt chromium chromium-driver)`);
    process.exit(3);
  }
}

/**
 * `--flag value` arguments into a copy of `defaults`: `flags` maps each flag to the key it sets,
 * or to `[key, convert]` (`convert(value, current)` gives the new value: a number, a list, one
 * more item), or to `null` (taken and ignored). Every script also takes `--chromium` (default:
 * `SB_CHROMIUM`, else Debian's). Throws on an unknown flag or a flag without its value.
 */
export function parseFlags(argv, defaults, flags) {
  const o = { chromium: process.env.SB_CHROMIUM || "/usr/bin/chromium", ...defaults };
  const all = { "--chromium": "chromium", ...flags };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!Object.hasOwn(all, a)) throw new Error(`unknown argument ${a}`);
    if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
    const value = argv[++i];
    const spec = all[a];
    if (spec === null) continue;
    const [key, convert] = Array.isArray(spec) ? spec : [spec, (v) => v];
    o[key] = convert(value, o[key]);
  }
  return o;
}

/** For `parseFlags`: a base URL without its trailing slash. */
export const baseUrl = (v) => v.replace(/\/$/, "");
/** For `parseFlags`: a comma-separated list. */
export const list = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
/** For `parseFlags`: a path, made absolute. */
export const absolute = (v) => path.resolve(v);

/**
 * Flags for WebRTC on loopback: fake media devices and their permission, host candidates as
 * addresses (not mDNS names, which nothing here resolves), loopback allowed, no QUIC.
 */
export const WEBRTC_ARGS = [
  "--disable-quic",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

/** A fresh Chromium profile folder, removed when the process exits: `[folder, remove]`. */
export function tempProfile() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-chromium-"));
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  process.on("exit", remove);
  return [dir, remove];
}

/**
 * Runs the scenarios `names` of `scenarios` (name -> async function giving a result object) in
 * order: `result.failed` names the one running, `result.scenarios[name]` gets each result with
 * its time (`ms`); with `lines`, each also goes to stdout as `SCENARIO name JSON`.
 */
export async function runScenarios(scenarios, names, result, log, { lines = true } = {}) {
  for (const name of names) {
    const started = Date.now();
    log(`scenario ${name}`);
    result.failed = name;
    const r = await scenarios[name]();
    r.ms = Date.now() - started;
    result.scenarios[name] = r;
    if (lines) process.stdout.write(`SCENARIO ${name} ${JSON.stringify(r)}\n`);
    log(`scenario ${name} passed in ${r.ms} ms`);
  }
}
