// A typed usage example, checked against switchboard.d.ts by `npx tsc --noEmit -p clients/js`
// (never run). It should read like an application using the SDK.

import Client, {
  ClientCode,
  HubError,
  UnauthorizedError,
  type Publication,
  type Room,
  type Subscription,
  type SubscribedContext,
} from "../switchboard.js";

async function liveUpdates(): Promise<void> {
  const client = new Client("https://example.com", {
    getToken: async () => {
      const res = await fetch("/my-app/switchboard-token");
      if (res.status === 403) throw new UnauthorizedError();
      return res.text();
    },
    transports: ["websocket", "sse"],
    minReconnectDelay: 500,
    maxReconnectDelay: 20_000,
    name: "types-check",
  });
  client
    .on("connecting", (ctx) => console.log("connecting", ctx.code, ctx.reason))
    .on("connected", (ctx) => console.log("connected over", ctx.transport, "as", ctx.client))
    .on("disconnected", (ctx) => console.log("stopped", ctx.code, ctx.reason))
    .on("error", (ctx) => console.warn(ctx.type, ctx.error.message));

  const sub: Subscription = client.newSubscription("news:front", { since: { offset: 0, epoch: "" } });
  sub.on("publication", (p: Publication) => {
    const offset: number = p.offset;
    console.log(p.channel, offset, p.data, p.info?.user ?? "server");
  });
  sub.on("subscribed", (ctx: SubscribedContext) => {
    if (ctx.wasRecovering && !ctx.recovered) console.log("reload");
  });
  sub.on("recoveryfailed", (ctx) => console.log("missed publications on", ctx.channel, ctx.streamPosition?.epoch));
  sub.on("join", (ctx) => console.log(ctx.info?.user, "joined"));
  sub.on("unsubscribed", (ctx) => console.log(ctx.code, ctx.reason));
  sub.subscribe();
  client.connect();
  await client.ready();
  await sub.ready(5000);

  const { offset, epoch } = await client.publish("news:front", { title: "hello" }, { idempotencyKey: "k1" });
  const history = await client.history("news:front", { limit: 10, since: { offset, epoch }, reverse: false });
  history.publications.forEach((p) => console.log(p.data));
  const presence = await sub.presence();
  for (const [id, who] of Object.entries(presence.clients)) console.log(id, who.user, who.connInfo);
  const stats = await client.presenceStats("news:front");
  console.log(stats.numClients + stats.numUsers, sub.position?.offset);
  try {
    await client.publish("locked:x", new Uint8Array([1, 2, 3]));
  } catch (e) {
    if (e instanceof HubError && e.code === 103 && !e.temporary) console.log("forbidden");
    if (e instanceof HubError && e.code === ClientCode.NotConnected) console.log("offline");
  }
  client.removeSubscription(client.getSubscription("news:front"));
  client.disconnect();
}

async function call(client: Client, video: HTMLVideoElement): Promise<Room> {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const room = await client.joinRoom("call:42", { peerId: "ann", data: { name: "Ann" }, stream, relayOnly: false });
  room.on("peerjoined", ({ peer }) => console.log(peer.id, "joined, polite:", peer.polite));
  room.on("track", ({ streams }) => {
    video.srcObject = streams[0] ?? null;
  });
  room.on("message", ({ peer, data }) => console.log(peer.id, "says", data));
  room.on("peerleft", ({ peer, timedOut }) => console.log(peer.id, timedOut ? "timed out" : "left"));
  room.on("connectionstatechange", ({ peer, state }) => console.log(peer.id, state));
  const sent: number = room.send("hi all");
  for (const peer of room.peers.values()) peer.send(`hi ${peer.id}`);
  console.log(sent, room.peerId, room.polite);
  await room.leave();
  return room;
}

void liveUpdates;
void call;
