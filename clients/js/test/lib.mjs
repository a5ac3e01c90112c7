// Shared helpers of the SDK's Node tests: arguments, HS256 tokens, the server API, a small HTTP
// proxy that can refuse WebSocket upgrades, cut connections and play dead, and the check
// reporting (`OK name`, `FAIL name: why`, then `DONE N failed`, as crates/cli/tests/it expects).

import { createHmac } from "node:crypto";
import http from "node:http";
import net from "node:net";
import WebSocket from "ws";

export { WebSocket };

/**
 * `node test/X.mjs SERVER_URL [--api-key KEY] [--jwt-secret SECRET] [--deadline-ms MS]`.
 * @returns {{server: string, apiKey: string, jwtSecret: string, deadlineMs: number}}
 */
export function args() {
  const argv = process.argv.slice(2);
  const out = { server: "", apiKey: "", jwtSecret: "", deadlineMs: 60_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--api-key") out.apiKey = argv[++i];
    else if (a === "--jwt-secret") out.jwtSecret = argv[++i];
    else if (a === "--deadline-ms") out.deadlineMs = Number(argv[++i]);
    else if (!a.startsWith("--")) out.server = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!out.server) {
    console.error("usage: node test/X.mjs http://HOST:PORT [--api-key KEY] [--jwt-secret SECRET]");
    process.exit(2);
  }
  out.server = out.server.replace(/\/+$/, "");
  return out;
}

/** An HS256 JWT (what `--jwt-hmac-secret` verifies). */
export function jwt(secret, claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc(claims);
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

export const now = () => Math.floor(Date.now() / 1000);

/** A server API call (`POST /v1/api/METHOD`); returns the parsed response. */
export async function api(server, key, method, body) {
  const res = await fetch(`${server}/v1/api/${method}`, {
    method: "POST",
    headers: { Authorization: `apikey ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (json.error) throw new Error(`api ${method}: ${json.error.code} ${json.error.message}`);
  return json;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until true or `ms` pass (then throws naming `what`). */
export async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves with the next `event` of `emitter` (an SDK object) within `ms`. */
export function next(emitter, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no "${event}" event within ${ms} ms`));
    }, ms);
    const on = (ctx) => {
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(ctx);
    };
    emitter.on(event, on);
  });
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, expected ${e}`);
}

/** Runs named checks in order and reports them; exits 1 on any failure or at the deadline. */
export function checks(deadlineMs) {
  let failed = 0;
  const timer = setTimeout(() => {
    console.log(`FAIL deadline: the script took longer than ${deadlineMs} ms`);
    console.log(`DONE ${failed + 1} failed`);
    process.exit(1);
  }, deadlineMs);
  return {
    async check(name, fn) {
      const started = Date.now();
      try {
        await fn();
        console.log(`OK ${name}`);
        console.error(`   ${name}: ${Date.now() - started} ms`);
      } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${e?.stack ?? e}`);
      }
    },
    done() {
      clearTimeout(timer);
      console.log(`DONE ${failed} failed`);
      process.exit(failed === 0 ? 0 : 1);
    },
  };
}

/**
 * An HTTP proxy in front of `target` on a loopback port. `refuseUpgrades` answers WebSocket
 * upgrades with 403 (SSE and plain requests pass); `down` destroys every new connection;
 * `cut()` destroys every open one. Counts upgrades and requests.
 */
export async function proxy(target, opts = {}) {
  const t = new URL(target);
  const state = { refuseUpgrades: Boolean(opts.refuseUpgrades), down: false, upgrades: 0, requests: 0 };
  const sockets = new Set();
  const track = (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const server = http.createServer((req, res) => {
    state.requests++;
    const up = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    up.on("socket", track);
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  server.on("connection", (s) => {
    if (state.down) {
      s.destroy();
      return;
    }
    track(s);
  });
  server.on("upgrade", (req, socket, head) => {
    state.upgrades++;
    if (state.refuseUpgrades) {
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    const up = net.connect(Number(t.port), t.hostname, () => {
      let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        text += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      }
      up.write(`${text}\r\n`);
      if (head?.length) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    track(up);
    up.on("close", () => socket.destroy());
    socket.on("close", () => up.destroy());
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    cut() {
      for (const s of [...sockets]) s.destroy();
    },
    close() {
      for (const s of [...sockets]) s.destroy();
      server.close();
    },
  };
}

/** A channel name unique to this run. */
export function unique(prefix) {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}
