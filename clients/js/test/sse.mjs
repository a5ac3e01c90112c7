// SSE fallback: behind a proxy that refuses every WebSocket upgrade (403), the client falls
// back to `GET /v1/sse` for receiving and `POST /v1/publish` for publishing. Checked: the
// transport, receiving API and client publications, adding and removing a subscription (the
// stream is reopened over the new set without losing or repeating anything), exact recovery
// after a cut, history refused as not available over SSE, and `transports: ["sse"]`.
//
//   node test/sse.mjs http://127.0.0.1:8080 --api-key K --jwt-secret S

import { Client, ClientCode } from "../switchboard.js";
import { api, args, assert, checks, eq, jwt, next, now, proxy, sleep, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);
const px = await proxy(opts.server, { refuseUpgrades: true });
const user = unique("sse-user");
const client = new Client(px.url, {
  token: jwt(opts.jwtSecret, { sub: user, exp: now() + 600 }),
  websocket: WebSocket,
  minReconnectDelay: 100,
  maxReconnectDelay: 500,
});
const a = unique("chat:sse-a");
const b = unique("chat:sse-b");
const got = { [a]: [], [b]: [] };
let nA = 0;
let nB = 0;
const pub = async (channel) => {
  const n = channel === a ? ++nA : ++nB;
  await api(opts.server, opts.apiKey, "publish", { channel, data: { n } });
};
const numbers = (c) => got[c].map((p) => p.data.n);
const upTo = (n) => Array.from({ length: n }, (_, i) => i + 1);
const subA = client.newSubscription(a);
subA.on("publication", (p) => got[a].push(p));

await check("falls-back-to-sse", async () => {
  subA.subscribe();
  const connected = next(client, "connected");
  client.connect();
  const ctx = await connected;
  eq(ctx.transport, "sse", "transport");
  eq(ctx.user, user, "user");
  assert(px.state.upgrades >= 1, "a WebSocket upgrade was tried first");
  await subA.ready();
});

await check("receives-over-sse", async () => {
  for (let i = 0; i < 3; i++) await pub(a);
  await waitFor(() => got[a].length >= 3, 5000, "3 publications");
  eq(numbers(a), [1, 2, 3], "numbers");
});

await check("publishes-over-http", async () => {
  const r = await client.publish(a, { n: ++nA, from: "client" });
  eq(r.offset, 4, "offset");
  await waitFor(() => got[a].length >= 4, 5000, "own publication");
  eq(got[a][3].data.from, "client", "data");
  eq(got[a][3].info?.user, user, "publisher");
});

await check("history-not-available-over-sse", async () => {
  let code = -1;
  try {
    await client.history(a, { limit: 5 });
  } catch (e) {
    code = e.code;
  }
  eq(code, ClientCode.NotAvailable, "history");
});

await check("add-subscription-reopens-stream-without-loss", async () => {
  const subB = client.newSubscription(b);
  subB.on("publication", (p) => got[b].push(p));
  const publishing = (async () => {
    for (let i = 0; i < 10; i++) {
      await pub(a);
      await sleep(5);
    }
  })();
  subB.subscribe();
  await subB.ready();
  await publishing;
  for (let i = 0; i < 3; i++) await pub(b);
  await waitFor(() => got[a].length >= nA && got[b].length >= nB, 5000, "both channels");
  eq(numbers(a), upTo(nA), "channel a");
  eq(numbers(b), upTo(nB), "channel b");
  eq(subA.state, "subscribed", "a stayed subscribed");
});

await check("cut-recovers-exactly", async () => {
  px.state.down = true;
  const before = nA;
  px.cut();
  await waitFor(() => client.state === "connecting", 5000, "connecting");
  for (let i = 0; i < 5; i++) {
    await pub(a);
    await pub(b);
  }
  px.state.down = false;
  await next(client, "connected", 10_000);
  eq(client.transport, "sse", "transport after the reconnect");
  await waitFor(() => got[a].length >= nA && got[b].length >= nB, 5000, "recovered publications");
  assert(nA === before + 5, "5 more on a");
  eq(numbers(a), upTo(nA), "channel a");
  eq(numbers(b), upTo(nB), "channel b");
});

await check("remove-subscription", async () => {
  const subB = client.getSubscription(b);
  client.removeSubscription(subB);
  await sleep(200);
  await pub(b);
  await pub(a);
  await waitFor(() => got[a].length >= nA, 5000, "a");
  await sleep(200);
  eq(got[b].length, nB - 1, "nothing more on b");
  eq(numbers(a), upTo(nA), "channel a");
});

await check("sse-only-transport", async () => {
  const upgrades = px.state.upgrades;
  const c2 = new Client(px.url, { transports: ["sse"], token: jwt(opts.jwtSecret, { sub: user, exp: now() + 600 }) });
  const connected = next(c2, "connected");
  c2.connect();
  eq((await connected).transport, "sse", "transport");
  const s = c2.newSubscription(a);
  const p = next(s, "publication");
  s.subscribe();
  await s.ready();
  await pub(a);
  eq((await p).data.n, nA, "publication");
  eq(px.state.upgrades, upgrades, "no WebSocket attempt");
  c2.disconnect();
});

client.disconnect();
px.close();
done();
