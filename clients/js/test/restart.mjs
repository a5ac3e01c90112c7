// A server restart (a new process on the same port): the client retries until the new server
// answers, resubscribes from its last position, and reports what the server says: with the
// in-memory broker history and epoch are gone, so `subscribed` has `recovered: false` and one
// `recoveryfailed` event fires; with a shared broker (Redis) the missed publications arrive
// exactly. Either way publications after the restart arrive in order, exactly once.
//
// The driver restarts the server: this script prints `RESTART` when it is ready for it and
// waits for one line on stdin (sent once the new server is up).
//
//   node test/restart.mjs http://127.0.0.1:8080 --api-key K --jwt-secret S

import { createInterface } from "node:readline";
import { Client } from "../switchboard.js";
import { api, args, assert, checks, eq, jwt, next, now, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);
const channel = unique("chat:restart");
const client = new Client(opts.server, {
  token: jwt(opts.jwtSecret, { sub: unique("restart"), exp: now() + 600 }),
  websocket: WebSocket,
  minReconnectDelay: 100,
  maxReconnectDelay: 1000,
});
const got = [];
const subscribed = [];
const failures = [];
const sub = client.newSubscription(channel);
sub.on("publication", (p) => got.push(p));
sub.on("subscribed", (ctx) => subscribed.push(ctx));
sub.on("recoveryfailed", (ctx) => failures.push(ctx));
let epochBefore = "";

await check("before-restart", async () => {
  sub.subscribe();
  client.connect();
  await sub.ready();
  for (let n = 1; n <= 3; n++) await api(opts.server, opts.apiKey, "publish", { channel, data: { n } });
  await waitFor(() => got.length === 3, 5000, "3 publications");
  eq(got.map((p) => p.data.n), [1, 2, 3], "numbers");
  epochBefore = got[2].epoch;
});

const lines = createInterface({ input: process.stdin });
const restarted = new Promise((resolve) => lines.once("line", resolve));
console.log("RESTART");
await restarted;

await check("reconnects-after-restart", async () => {
  await waitFor(() => client.state === "connected" && sub.state === "subscribed" && subscribed.length === 2, 20_000, "reconnected and resubscribed");
  const ctx = subscribed[1];
  eq(ctx.wasRecovering, true, "wasRecovering");
  if (ctx.recovered) {
    console.log("RECOVERED");
    eq(failures.length, 0, "no recoveryfailed event");
  } else {
    console.log("RECOVERY-IMPOSSIBLE");
    eq(failures.length, 1, "recoveryfailed events");
    assert(failures[0].streamPosition.epoch !== epochBefore, "a new epoch after the restart");
    eq(failures[0].channel, channel, "channel");
  }
});

await check("publications-after-restart", async () => {
  const before = got.length;
  for (let n = 4; n <= 6; n++) await api(opts.server, opts.apiKey, "publish", { channel, data: { n } });
  await waitFor(() => got.length >= before + 3, 5000, "3 publications after the restart");
  eq(got.slice(before).map((p) => p.data.n), [4, 5, 6], "numbers");
  const offsets = got.slice(before).map((p) => p.offset);
  eq(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2], "consecutive offsets");
  await next(sub, "publication", 300).then(
    () => {
      throw new Error("an extra publication arrived");
    },
    () => {},
  );
});

lines.close();
client.disconnect();
done();
