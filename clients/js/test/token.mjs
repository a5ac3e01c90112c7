// Token refresh on 109 (token expired), with HS256 tokens minted here: (1) a first token that
// has already expired is replaced through `getToken` on the same connection; (2) a token that
// expires while connected is refreshed on the reconnect after a server disconnect, and the
// subscription recovers exactly; (3) without `getToken` an expired token stops the client
// (no reconnect loop); (4) `getToken` throwing UnauthorizedError stops it too.
//
//   node test/token.mjs http://127.0.0.1:8080 --api-key K --jwt-secret S

import { Client, UnauthorizedError } from "../switchboard.js";
import { api, args, assert, checks, eq, jwt, next, now, proxy, sleep, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);
const mint = (sub, ttl) => jwt(opts.jwtSecret, { sub, exp: now() + ttl });

await check("expired-first-token-refreshed", async () => {
  const user = unique("tok1");
  let calls = 0;
  const errors = [];
  const client = new Client(opts.server, {
    token: mint(user, -10),
    getToken: async () => {
      calls++;
      return mint(user, 600);
    },
    websocket: WebSocket,
  });
  client.on("error", (e) => errors.push(e.error.code));
  const connected = next(client, "connected");
  client.connect();
  const ctx = await connected;
  eq(ctx.user, user, "user");
  eq(calls, 1, "getToken calls");
  eq(errors, [109], "error events");
  eq(ctx.expires, true, "the new token expires");
  client.disconnect();
});

await check("expiry-then-reconnect-refreshes-and-recovers", async () => {
  const user = unique("tok2");
  const channel = unique("chat:tok");
  const px = await proxy(opts.server);
  let calls = 0;
  const got = [];
  const client = new Client(px.url, {
    token: mint(user, 2),
    getToken: async () => {
      calls++;
      return mint(user, 600);
    },
    websocket: WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 500,
  });
  const sub = client.newSubscription(channel);
  sub.on("publication", (p) => got.push(p.data));
  sub.subscribe();
  client.connect();
  await sub.ready();
  await api(opts.server, opts.apiKey, "publish", { channel, data: 1 });
  await waitFor(() => got.length === 1, 5000, "first publication");
  await sleep(2500); // the token expires; the live connection stays
  eq(client.state, "connected", "still connected after expiry");
  px.state.down = true;
  await api(opts.server, opts.apiKey, "disconnect", {
    user,
    disconnect: { code: 3011, reason: "force reconnect", reconnect: true },
  });
  await waitFor(() => client.state === "connecting", 5000, "connecting");
  for (let i = 2; i <= 6; i++) await api(opts.server, opts.apiKey, "publish", { channel, data: i });
  px.state.down = false;
  await next(client, "connected", 10_000);
  await waitFor(() => got.length >= 6, 5000, "recovered publications");
  eq(got, [1, 2, 3, 4, 5, 6], "publications");
  eq(calls, 1, "getToken calls");
  client.disconnect();
  px.close();
});

await check("expired-without-getToken-stops", async () => {
  const px = await proxy(opts.server);
  const client = new Client(px.url, { token: mint(unique("tok3"), -10), websocket: WebSocket, minReconnectDelay: 50 });
  const d = next(client, "disconnected");
  client.connect();
  const ctx = await d;
  eq(ctx.code, 109, "disconnected code");
  await sleep(1000);
  eq(px.state.upgrades, 1, "WebSocket upgrades (no reconnect loop)");
  eq(client.state, "disconnected", "state");
  px.close();
});

await check("getToken-unauthorized-stops", async () => {
  let calls = 0;
  const client = new Client(opts.server, {
    getToken: async () => {
      calls++;
      throw new UnauthorizedError("logged out");
    },
    websocket: WebSocket,
    minReconnectDelay: 50,
  });
  const d = next(client, "disconnected");
  client.connect();
  const ctx = await d;
  assert(ctx.reason === "logged out", JSON.stringify(ctx));
  await sleep(500);
  eq(calls, 1, "getToken calls");
});

done();
