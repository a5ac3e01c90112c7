// Exact recovery across reconnects: the client sits behind a proxy (test/lib.mjs) so the test
// decides when it may reconnect; publications numbered by the test go through the server API
// while it is away. Every cut must end with the missed publications delivered exactly once, in
// order, on both subscriptions: (1) the server disconnects the user (server API, 3011 "force
// reconnect"), (2) the TCP connection is cut, (3) a cut while the API keeps publishing (live
// and recovered publications overlap: no duplicate may get through).
//
//   node test/recovery.mjs http://127.0.0.1:8080 --api-key K --jwt-secret S

import { Client } from "../switchboard.js";
import { api, args, assert, checks, eq, jwt, next, now, proxy, sleep, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);
const user = unique("rec-user");
const channels = [unique("chat:rec-a"), unique("chat:rec-b")];
const px = await proxy(opts.server);
const client = new Client(px.url, {
  token: jwt(opts.jwtSecret, { sub: user, exp: now() + 600 }),
  websocket: WebSocket,
  minReconnectDelay: 100,
  maxReconnectDelay: 800,
});
const received = Object.fromEntries(channels.map((c) => [c, []]));
const subscribedCtx = Object.fromEntries(channels.map((c) => [c, []]));
const connecting = [];
client.on("connecting", (c) => connecting.push(c));
let n = 0;

async function publishNext(count) {
  for (let i = 0; i < count; i++) {
    n++;
    for (const channel of channels) await api(opts.server, opts.apiKey, "publish", { channel, data: { n } });
  }
}

function expectAll(what) {
  const want = Array.from({ length: n }, (_, i) => i + 1);
  return waitFor(
    () => channels.every((c) => received[c].length >= n),
    10_000,
    `${what}: ${n} publications on both channels (have ${channels.map((c) => received[c].length)})`,
  ).then(() => {
    for (const c of channels) {
      eq(received[c].map((p) => p.data.n), want, `${what}: numbers received on ${c}`);
      const offsets = received[c].map((p) => p.offset);
      eq(offsets, want, `${what}: offsets on ${c}`);
    }
  });
}

await check("subscribe-and-receive", async () => {
  client.connect();
  for (const c of channels) {
    const sub = client.newSubscription(c);
    sub.on("publication", (p) => received[c].push(p));
    sub.on("subscribed", (ctx) => subscribedCtx[c].push(ctx));
    sub.subscribe();
  }
  await Promise.all(channels.map((c) => client.getSubscription(c).ready()));
  await publishNext(5);
  await expectAll("live");
});

async function away(what, cut, publishWhileAway) {
  px.state.down = true;
  const before = connecting.length;
  await cut();
  await waitFor(() => connecting.length > before, 5000, `${what}: the client noticing`);
  eq(client.state, "connecting", `${what}: state`);
  for (const c of channels) eq(client.getSubscription(c).state, "subscribing", `${what}: ${c} state`);
  await publishNext(publishWhileAway);
  await sleep(300); // some reconnect attempts fail against the dead proxy
  px.state.down = false;
  await next(client, "connected", 10_000);
  await expectAll(what);
  for (const c of channels) {
    const last = subscribedCtx[c].at(-1);
    assert(last.wasRecovering && last.recovered, `${what}: ${c} subscribed with ${JSON.stringify(last)}`);
  }
  return connecting.slice(before);
}

await check("server-disconnect-3011-recovers-exactly", async () => {
  const ctxs = await away(
    "server disconnect",
    () => api(opts.server, opts.apiKey, "disconnect", {
      user,
      disconnect: { code: 3011, reason: "force reconnect", reconnect: true },
    }),
    20,
  );
  eq([ctxs[0].code, ctxs[0].reason], [3011, "force reconnect"], "the server's code and reason");
});

await check("tcp-cut-recovers-exactly", async () => {
  const ctxs = await away("tcp cut", () => px.cut(), 25);
  eq(ctxs[0].code, 1, "transport closed");
});

await check("cut-while-publishing-no-duplicates", async () => {
  const publishing = (async () => {
    for (let i = 0; i < 30; i++) {
      await publishNext(1);
      await sleep(10);
    }
  })();
  await sleep(50);
  px.cut();
  await publishing;
  await expectAll("cut while publishing");
  await sleep(300);
  for (const c of channels) eq(received[c].length, n, `no extra publication on ${c}`);
});

await check("unsubscribe-resubscribe-recovers", async () => {
  const sub = client.getSubscription(channels[0]);
  sub.unsubscribe();
  await publishNext(3); // both channels; the first one is not subscribed
  const s = next(sub, "subscribed");
  sub.subscribe();
  const ctx = await s;
  assert(ctx.wasRecovering && ctx.recovered, JSON.stringify(ctx));
  await expectAll("resubscribe");
});

client.disconnect();
px.close();
console.error(`   ${n} publications per channel, ${connecting.length} connecting events`);
done();
