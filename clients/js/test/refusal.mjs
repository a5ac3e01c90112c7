// Permanent refusals stop the client, temporary trouble does not: (1) a token with a bad
// signature gets 101 and disconnect 3500 once, with no second attempt; (2) a server disconnect
// without reconnect (3503) ends it; (3) a server that cannot be reached is retried with backoff
// until it can; (4) a forbidden channel (103) ends only that subscription.
//
//   node test/refusal.mjs http://127.0.0.1:8080 --api-key K --jwt-secret S

import { Client } from "../switchboard.js";
import { api, args, assert, checks, eq, jwt, next, now, proxy, sleep, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);

await check("bad-token-101-no-loop", async () => {
  const px = await proxy(opts.server);
  const client = new Client(px.url, {
    token: jwt(`${opts.jwtSecret}-wrong`, { sub: "mallory", exp: now() + 600 }),
    websocket: WebSocket,
    minReconnectDelay: 20,
    maxReconnectDelay: 50,
  });
  const errors = [];
  const states = [];
  client.on("error", (e) => errors.push(e.error.code));
  client.on("state", (s) => states.push(s.newState));
  const d = next(client, "disconnected");
  client.connect();
  const ctx = await d;
  eq([ctx.code, ctx.reason], [3500, "invalid token"], "disconnect code and reason");
  eq(errors, [101], "error events");
  await sleep(1500);
  eq(px.state.upgrades, 1, "WebSocket upgrades");
  eq(px.state.requests, 0, "no SSE attempt either");
  eq(states, ["connecting", "disconnected"], "states");
  px.close();
});

await check("server-disconnect-3503-no-reconnect", async () => {
  const user = unique("kick");
  const px = await proxy(opts.server);
  const client = new Client(px.url, {
    token: jwt(opts.jwtSecret, { sub: user, exp: now() + 600 }),
    websocket: WebSocket,
    minReconnectDelay: 20,
  });
  client.connect();
  await client.ready();
  const d = next(client, "disconnected");
  await api(opts.server, opts.apiKey, "disconnect", { user });
  const ctx = await d;
  eq([ctx.code, ctx.reason], [3503, "force disconnect"], "disconnect code and reason");
  await sleep(1000);
  eq(px.state.upgrades, 1, "WebSocket upgrades");
  px.close();
});

await check("unreachable-server-retried-with-backoff", async () => {
  const px = await proxy(opts.server);
  px.state.down = true;
  const client = new Client(px.url, { websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 400 });
  const attempts = [];
  client.on("connecting", () => attempts.push(Date.now()));
  client.connect();
  await sleep(2000);
  assert(attempts.length >= 4, `only ${attempts.length} attempts in 2 s`);
  eq(client.state, "connecting", "still connecting");
  px.state.down = false;
  await client.ready(5000);
  const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
  assert(gaps.every((g) => g <= 1000), `gaps beyond maxReconnectDelay: ${gaps}`);
  client.disconnect();
  px.close();
});

await check("forbidden-channel-103-only-that-subscription", async () => {
  const client = new Client(opts.server, {
    token: jwt(opts.jwtSecret, { sub: unique("limited"), exp: now() + 600, channels: ["chat:allowed-*"] }),
    websocket: WebSocket,
  });
  client.connect();
  const ok = client.newSubscription(unique("chat:allowed"));
  const no = client.newSubscription(unique("chat:other"));
  const locked = client.newSubscription(unique("locked:x"));
  const uNo = next(no, "unsubscribed");
  const uLocked = next(locked, "unsubscribed");
  ok.subscribe();
  no.subscribe();
  locked.subscribe();
  await ok.ready();
  eq((await uNo).code, 103, "outside the token's channels");
  eq((await uLocked).code, 103, "namespace without permissions");
  eq(client.state, "connected", "client state");
  await waitFor(() => ok.state === "subscribed", 1000, "the allowed one");
  client.disconnect();
});

done();
