// centrifuge-js (npm `centrifuge`, pinned in package-lock.json) in Node against switchboard's
// /connection/websocket. Prints "OK NAME" / "FAIL NAME: why" lines and "DONE N failed".
//
// usage: node centrifuge_js.mjs HTTP_ADDR API_KEY JWT_SECRET
import { createHmac } from 'node:crypto';
import net from 'node:net';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [addr, apiKey, secret] = process.argv.slice(2);
const endpoint = (a) => `ws://${a}/connection/websocket`;
let failed = 0;

const b64url = (b) => Buffer.from(b).toString('base64url');
function jwt(sub, claims = {}) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...claims }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function api(method, body) {
  const r = await fetch(`http://${addr}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  if (j.error) throw new Error(`api ${method}: ${JSON.stringify(j.error)}`);
  return j.result;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms = 10000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(25);
  }
}

function client(url, opts = {}) {
  return new Centrifuge(url, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 300, ...opts });
}

async function check(name, fn) {
  try {
    await fn();
    console.log(`OK ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e?.stack ?? JSON.stringify(e)}`);
  }
}

// A TCP proxy whose connections can all be cut.
function proxy(target) {
  const [host, port] = target.split(':');
  const sockets = [];
  const server = net.createServer((c) => {
    const up = net.connect(Number(port), host);
    sockets.push(c, up);
    c.pipe(up).on('error', () => {});
    up.pipe(c).on('error', () => {});
    c.on('error', () => {});
    up.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    addr: `127.0.0.1:${server.address().port}`,
    cut: () => { for (const s of sockets.splice(0)) s.destroy(); },
    close: () => server.close(),
  })));
}

await check('js-anonymous-pubsub-presence-history', async () => {
  const c = client(endpoint(addr));
  const sub = c.newSubscription('js-news');
  const got = [];
  sub.on('publication', (ctx) => got.push([ctx.offset, ctx.data]));
  sub.subscribe();
  c.connect();
  await sub.ready(5000);
  await api('publish', { channel: 'js-news', data: { n: 1 } });
  const r = await fetch(`http://${addr}/v1/api/publish`, {
    method: 'POST',
    headers: { Authorization: `apikey ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'js-news', data: { n: 2 } }),
  });
  if (!r.ok) throw new Error(`v1 publish: ${r.status}`);
  await sub.publish({ n: 3 });
  await until(() => got.length >= 3);
  if (JSON.stringify(got) !== JSON.stringify([[1, { n: 1 }], [2, { n: 2 }], [3, { n: 3 }]])) throw new Error(JSON.stringify(got));
  const p = await sub.presence();
  if (Object.keys(p.clients).length !== 1) throw new Error(JSON.stringify(p));
  const s = await sub.presenceStats();
  if (s.numClients !== 1) throw new Error(JSON.stringify(s));
  const h = await sub.history({ limit: 10 });
  if (h.publications.map((x) => x.data.n).join() !== '1,2,3' || h.offset !== 3) throw new Error(JSON.stringify(h));
  c.disconnect();
});

await check('js-token-user-join-leave', async () => {
  const a = client(endpoint(addr), { token: jwt('alice') });
  const b = client(endpoint(addr), { token: jwt('bob') });
  const joins = [];
  const subA = a.newSubscription('js-room');
  subA.on('join', (ctx) => joins.push(ctx.info.user));
  subA.subscribe();
  a.connect();
  await subA.ready(5000);
  const subB = b.newSubscription('js-room');
  subB.subscribe();
  b.connect();
  await subB.ready(5000);
  const p = await subA.presence();
  const users = Object.values(p.clients).map((x) => x.user).sort();
  if (users.join() !== 'alice,bob') throw new Error(JSON.stringify(p));
  a.disconnect();
  b.disconnect();
});

await check('js-refused-token-no-reconnect', async () => {
  const c = client(endpoint(addr), { token: 'not.a.token' });
  const events = [];
  c.on('disconnected', (ctx) => events.push(ctx.code));
  c.on('connecting', () => events.push('connecting'));
  c.connect();
  await until(() => events.some((e) => typeof e === 'number'));
  await sleep(800);
  if (c.state !== 'disconnected') throw new Error(`state ${c.state}: ${events}`);
  if (!events.includes(3500)) throw new Error(`codes ${events}`);
  c.disconnect();
});

await check('js-recovery-after-cut', async () => {
  const px = await proxy(addr);
  const c = client(endpoint(px.addr));
  const sub = c.newSubscription('js-recover');
  const got = [];
  const subscribed = [];
  sub.on('publication', (ctx) => got.push(ctx.data.n));
  sub.on('subscribed', (ctx) => subscribed.push(ctx));
  sub.subscribe();
  c.connect();
  await sub.ready(5000);
  for (let n = 1; n <= 3; n++) await api('publish', { channel: 'js-recover', data: { n } });
  await until(() => got.length === 3);
  px.cut();
  for (let n = 4; n <= 9; n++) await api('publish', { channel: 'js-recover', data: { n } });
  await until(() => got.length >= 9);
  await sleep(300);
  if (got.join() !== '1,2,3,4,5,6,7,8,9') throw new Error(got.join());
  if (!subscribed.slice(1).some((s) => s.wasRecovering && s.recovered)) throw new Error(JSON.stringify(subscribed));
  c.disconnect();
  px.close();
});

await check('js-server-disconnect', async () => {
  const c = client(endpoint(addr), { token: jwt('carol') });
  const codes = [];
  c.on('disconnected', (ctx) => codes.push(ctx.code));
  c.connect();
  await c.ready(5000);
  await api('disconnect', { user: 'carol' });
  await until(() => codes.length > 0);
  await sleep(500);
  if (codes[0] !== 3503 || c.state !== 'disconnected') throw new Error(`${codes} ${c.state}`);
});

await check('js-unsupported-rpc-and-subscription-token', async () => {
  const c = client(endpoint(addr));
  c.connect();
  await c.ready(5000);
  try {
    await c.rpc('m', {});
    throw new Error('rpc succeeded');
  } catch (e) {
    if (e.code !== 108) throw e;
  }
  const sub = c.newSubscription('js-private', { token: 'sub-token' });
  const errors = [];
  sub.on('unsubscribed', (ctx) => errors.push(ctx.code));
  sub.on('error', (ctx) => errors.push(ctx.error.code));
  sub.subscribe();
  await until(() => errors.length > 0);
  if (!errors.includes(108)) throw new Error(`${errors}`);
  c.disconnect();
});

console.log(`DONE ${failed} failed`);
process.exit(failed ? 1 : 0);
