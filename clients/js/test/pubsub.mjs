// Pub/sub through the SDK against a real server: connect, subscribe, publish, receive (JSON and
// binary payloads), history, presence, presence stats, join/leave, unsubscribe, a refused
// channel, disconnect. Needs `--jwt-secret` and a `chat` namespace with history, presence and
// join/leave (crates/cli/tests/it/sdk.rs starts such a server).
//
//   node test/pubsub.mjs http://127.0.0.1:8080 --jwt-secret S

import { Client, ClientCode, HubError } from "../switchboard.js";
import { args, assert, checks, eq, jwt, next, now, unique, waitFor, WebSocket } from "./lib.mjs";

const opts = args();
const { check, done } = checks(opts.deadlineMs);
const token = (sub) => jwt(opts.jwtSecret, { sub, exp: now() + 600, info: { name: sub } });
const channel = unique("chat:pubsub");

const states = [];
const alice = new Client(opts.server, { token: token("alice"), websocket: WebSocket, name: "pubsub-test" });
alice.on("state", (s) => states.push(s.newState));
const bob = new Client(opts.server, { token: token("bob"), websocket: WebSocket });
let aSub;
let bSub;
const got = [];

await check("connect", async () => {
  const connected = next(alice, "connected");
  alice.connect();
  const ctx = await connected;
  eq(ctx.transport, "websocket", "transport");
  eq(ctx.user, "alice", "user");
  assert(ctx.client.length > 0, "no client id");
  eq(states, ["connecting", "connected"], "client states");
  eq(alice.state, "connected", "state");
  bob.connect();
  await bob.ready();
});

await check("subscribe", async () => {
  aSub = alice.newSubscription(channel);
  bSub = bob.newSubscription(channel);
  const subStates = [];
  bSub.on("state", (s) => subStates.push(s.newState));
  bSub.on("publication", (p) => got.push(p));
  const subscribed = next(bSub, "subscribed");
  bSub.subscribe();
  const ctx = await subscribed;
  eq(ctx.recoverable, true, "recoverable");
  eq(ctx.wasRecovering, false, "wasRecovering");
  eq(subStates, ["subscribing", "subscribed"], "subscription states");
  let threw = false;
  try {
    bob.newSubscription(channel);
  } catch {
    threw = true;
  }
  assert(threw, "a second subscription to the same channel must throw");
  assert(bob.getSubscription(channel) === bSub, "getSubscription");
});

await check("join-leave", async () => {
  const joins = [];
  bSub.on("join", (j) => joins.push(j));
  aSub.subscribe();
  await aSub.ready();
  const j = await waitFor(() => joins.find((x) => x.info.user === "alice"), 5000, "alice's join");
  eq(j.info.connInfo, { name: "alice" }, "join connInfo");
  eq(j.channel, channel, "join channel");
});

await check("publish-receive", async () => {
  const r1 = await aSub.publish({ text: "hello", n: 1 });
  const r2 = await alice.publish(channel, ["two", 2, null]);
  eq(r2.offset, r1.offset + 1, "offsets");
  await waitFor(() => got.length >= 2, 5000, "two publications");
  eq(got.map((p) => p.data), [{ text: "hello", n: 1 }, ["two", 2, null]], "data");
  eq(got.map((p) => p.offset), [r1.offset, r2.offset], "offsets received");
  eq(got[0].info.user, "alice", "publisher");
  eq(got[0].channel, channel, "channel");
});

await check("binary-payload", async () => {
  await alice.publish(channel, new Uint8Array([0, 1, 2, 250, 255]));
  await waitFor(() => got.length >= 3, 5000, "the binary publication");
  const d = got[2].data;
  assert(d instanceof Uint8Array, `binary data arrived as ${typeof d}`);
  eq([...d], [0, 1, 2, 250, 255], "bytes");
});

await check("history", async () => {
  const h = await bob.history(channel, { limit: 10 });
  eq(h.publications.length, 3, "publications in history");
  eq(h.publications[0].data, { text: "hello", n: 1 }, "first");
  eq(h.offset, got[2].offset, "history position");
  const rev = await bob.history(channel, { limit: 1, reverse: true });
  eq(rev.publications.map((p) => p.offset), [got[2].offset], "reverse, limit 1");
  const since = await bob.history(channel, { limit: 10, since: { offset: got[0].offset, epoch: got[0].epoch } });
  eq(since.publications.map((p) => p.offset), [got[1].offset, got[2].offset], "since");
  const pos = await bSub.history();
  eq(pos.publications.length, 0, "limit 0 = position only");
  let code = 0;
  try {
    await bob.history(channel, { limit: 10, since: { offset: 1, epoch: "not-the-epoch" } });
  } catch (e) {
    code = e.code;
  }
  eq(code, 112, "since from another epoch");
});

await check("presence", async () => {
  const p = await bob.presence(channel);
  const users = Object.values(p.clients).map((c) => c.user).sort();
  eq(users, ["alice", "bob"], "presence users");
  assert(p.clients[alice.clientId]?.user === "alice", "presence is keyed by client id");
  const s = await aSub.presenceStats();
  eq(s, { numClients: 2, numUsers: 2 }, "presence stats");
});

await check("unsubscribe-and-leave", async () => {
  const left = next(bSub, "leave");
  const unsub = next(aSub, "unsubscribed");
  aSub.unsubscribe();
  const u = await unsub;
  eq(u.code, ClientCode.Called, "unsubscribed code");
  eq((await left).info.user, "alice", "leave user");
  await bob.publish(channel, "after");
  await waitFor(() => got.length >= 4, 5000, "bob's own publication");
  const s = await bob.presenceStats(channel);
  eq(s.numClients, 1, "alice left the presence");
});

await check("refused-channel", async () => {
  const sub = alice.newSubscription(unique("nope"));
  const sub2 = alice.newSubscription(`undeclared-ns:${process.pid}`);
  const errors = [];
  sub2.on("error", (e) => errors.push(e.error.code));
  const u = next(sub2, "unsubscribed");
  sub2.subscribe();
  const ctx = await u;
  eq(ctx.code, 102, "unknown namespace");
  eq(errors, [102], "error event");
  eq(sub2.state, "unsubscribed", "state");
  eq(alice.state, "connected", "the client stays connected");
  alice.removeSubscription(sub);
  let rejected = null;
  try {
    await alice.publish(`undeclared-ns:${process.pid}`, 1);
  } catch (e) {
    rejected = e;
  }
  assert(rejected instanceof HubError && rejected.code === 102, `publish: ${rejected}`);
});

await check("disconnect", async () => {
  const d = next(alice, "disconnected");
  alice.disconnect();
  const ctx = await d;
  eq(ctx.code, ClientCode.Called, "disconnected code");
  eq(alice.state, "disconnected", "state");
  eq(aSub.state, "unsubscribed", "an unsubscribed subscription stays so");
  let code = -1;
  try {
    await alice.publish(channel, 1);
  } catch (e) {
    code = e.code;
  }
  eq(code, ClientCode.NotConnected, "publish while disconnected");
  bob.disconnect();
});

done();
