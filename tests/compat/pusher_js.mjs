// pusher-js (the client) and pusher (Pusher's Node server library), both pinned in
// package-lock.json, against switchboard's Pusher Channels protocol. Prints "OK NAME" /
// "FAIL NAME: why" lines and "DONE N failed".
//
// usage: node pusher_js.mjs HTTP_ADDR
// The server runs with two apps: 100/app-key/app-secret (client events on) and
// 200/other-key/other-secret (client events off).
import { createHash, createHmac } from 'node:crypto';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const addr = process.argv[2];
const [host, port] = addr.split(':');
let failed = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms = 8000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}
async function check(name, fn) {
  try { await fn(); console.log(`OK ${name}`); } catch (e) { failed++; console.log(`FAIL ${name}: ${e?.stack ?? JSON.stringify(e)}`); }
}

const APP = { appId: '100', key: 'app-key', secret: 'app-secret' };
const OTHER = { appId: '200', key: 'other-key', secret: 'other-secret' };
const server = (app) => new PusherServer({ ...app, host, port, useTLS: false });
const api = server(APP);

function client(app, user = { user_id: 'u1', user_info: { name: 'One' } }, authServer = server(app)) {
  const c = new Pusher(app.key, {
    wsHost: host, wsPort: Number(port), forceTLS: false, enabledTransports: ['ws'], cluster: 'x',
    channelAuthorization: {
      customHandler: (p, cb) => cb(null, authServer.authorizeChannel(p.socketId, p.channelName,
        p.channelName.startsWith('presence-') ? user : undefined)),
    },
    userAuthentication: {
      customHandler: (p, cb) => cb(null, authServer.authenticateUser(p.socketId, { id: user.user_id })),
    },
  });
  return c;
}
const subscribed = (ch) => new Promise((resolve, reject) => {
  ch.bind('pusher:subscription_succeeded', resolve);
  ch.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
});
const connected = (c) => until(() => c.connection.state === 'connected');

await check('public-channel-trigger', async () => {
  const c = client(APP);
  const got = [];
  const ch = c.subscribe('news');
  ch.bind('my-event', (d) => got.push(d));
  await subscribed(ch);
  const r = await api.trigger('news', 'my-event', { hello: 'world' });
  if (r.status !== 200) throw new Error(`trigger ${r.status}`);
  await until(() => got.length === 1);
  if (JSON.stringify(got[0]) !== '{"hello":"world"}') throw new Error(JSON.stringify(got));
  c.disconnect();
});

await check('private-channel-auth-and-refusal', async () => {
  const c = client(APP);
  await subscribed(c.subscribe('private-orders'));
  const forged = client(APP, undefined, server({ ...APP, secret: 'wrong' }));
  const ch = forged.subscribe('private-orders');
  const err = await new Promise((resolve) => ch.bind('pusher:subscription_error', resolve));
  if (err.status !== 401) throw new Error(JSON.stringify(err));
  c.disconnect();
  forged.disconnect();
});

await check('presence-members-added-removed', async () => {
  const a = client(APP, { user_id: 'ann', user_info: { name: 'Ann' } });
  const b = client(APP, { user_id: 'bob', user_info: { name: 'Bob' } });
  const chA = a.subscribe('presence-lobby');
  const added = [];
  const removed = [];
  chA.bind('pusher:member_added', (m) => added.push([m.id, m.info]));
  chA.bind('pusher:member_removed', (m) => removed.push(m.id));
  const members = await subscribed(chA);
  if (members.count !== 1 || members.me.id !== 'ann') throw new Error(JSON.stringify(members));
  const chB = b.subscribe('presence-lobby');
  const mb = await subscribed(chB);
  if (mb.count !== 2 || !mb.get('ann') || mb.get('ann').info.name !== 'Ann') throw new Error(JSON.stringify(mb));
  await until(() => added.length === 1);
  if (JSON.stringify(added) !== '[["bob",{"name":"Bob"}]]') throw new Error(JSON.stringify(added));
  const users = await (await api.get({ path: '/channels/presence-lobby/users' })).json();
  if (JSON.stringify(users.users.map((u) => u.id).sort()) !== '["ann","bob"]') throw new Error(JSON.stringify(users));
  b.disconnect();
  await until(() => removed.length === 1);
  if (removed[0] !== 'bob') throw new Error(JSON.stringify(removed));
  a.disconnect();
});

await check('client-events-and-exclusion', async () => {
  const a = client(APP);
  const b = client(APP);
  const chA = a.subscribe('private-chat');
  const chB = b.subscribe('private-chat');
  await Promise.all([subscribed(chA), subscribed(chB)]);
  const gotA = [];
  const gotB = [];
  chA.bind('client-typing', (d) => gotA.push(d));
  chB.bind('client-typing', (d) => gotB.push(d));
  if (!chA.trigger('client-typing', { who: 'a' })) throw new Error('trigger refused');
  await until(() => gotB.length === 1);
  // socket_id exclusion on the HTTP API: A triggers through the server, B gets it, A not.
  const fromServer = [];
  chA.bind('server-event', (d) => fromServer.push(['a', d]));
  chB.bind('server-event', (d) => fromServer.push(['b', d]));
  await api.trigger('private-chat', 'server-event', 'plain text', { socket_id: a.connection.socket_id });
  await until(() => fromServer.length === 1);
  await sleep(200);
  if (gotA.length !== 0 || fromServer.length !== 1 || fromServer[0][0] !== 'b' || fromServer[0][1] !== 'plain text') {
    throw new Error(JSON.stringify({ gotA, fromServer }));
  }
  a.disconnect();
  b.disconnect();
});

await check('client-events-off-for-other-app', async () => {
  const c = client(OTHER);
  const errors = [];
  c.connection.bind('error', (e) => errors.push(e));
  const ch = c.subscribe('private-x');
  await subscribed(ch);
  ch.trigger('client-nope', {});
  await until(() => errors.length > 0);
  if (!JSON.stringify(errors[0]).includes('not enabled')) throw new Error(JSON.stringify(errors));
  c.disconnect();
});

await check('apps-are-isolated', async () => {
  const a = client(APP);
  const o = client(OTHER);
  const got = [];
  const chA = a.subscribe('shared-name');
  const chO = o.subscribe('shared-name');
  chA.bind('e', (d) => got.push(['app', d]));
  chO.bind('e', (d) => got.push(['other', d]));
  await Promise.all([subscribed(chA), subscribed(chO)]);
  await server(OTHER).trigger('shared-name', 'e', 'for other');
  await until(() => got.length === 1);
  await sleep(200);
  if (JSON.stringify(got) !== '[["other","for other"]]') throw new Error(JSON.stringify(got));
  a.disconnect();
  o.disconnect();
});

await check('batch-events-and-channel-info', async () => {
  const c = client(APP);
  const got = [];
  const ch = c.subscribe('batched');
  ch.bind('one', (d) => got.push(d));
  ch.bind('two', (d) => got.push(d));
  await subscribed(ch);
  const r = await api.triggerBatch([{ channel: 'batched', name: 'one', data: '1' }, { channel: 'batched', name: 'two', data: '2' }]);
  if (r.status !== 200) throw new Error(`batch ${r.status}`);
  await until(() => got.length === 2);
  if (got.join() !== '1,2') throw new Error(got.join());
  const info = await (await api.get({ path: '/channels/batched', params: { info: 'subscription_count' } })).json();
  if (info.occupied !== true || info.subscription_count !== 1) throw new Error(JSON.stringify(info));
  const list = await (await api.get({ path: '/channels' })).json();
  if (!('batched' in list.channels)) throw new Error(JSON.stringify(list));
  c.disconnect();
});

await check('switchboard-api-reaches-pusher-clients', async () => {
  const c = client(APP);
  const got = [];
  const ch = c.subscribe('bridge');
  ch.bind('from-hub', (d) => got.push(d));
  await subscribed(ch);
  const key = process.argv[3];
  const r = await fetch(`http://${addr}/v1/api/publish`, {
    method: 'POST',
    headers: { Authorization: `apikey ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'pusher-100:bridge', data: { via: 'switchboard' }, tags: { event: 'from-hub' } }),
  });
  if (!r.ok) throw new Error(`publish ${r.status} ${await r.text()}`);
  await until(() => got.length === 1);
  if (got[0].via !== 'switchboard') throw new Error(JSON.stringify(got));
  c.disconnect();
});

// Pusher's signing, by hand: a bad signature and a stale timestamp are refused with 401.
function signed(method, path, body, { secret = APP.secret, ts = Math.floor(Date.now() / 1000) } = {}) {
  const params = { auth_key: APP.key, auth_timestamp: String(ts), auth_version: '1.0' };
  if (body) params.body_md5 = createHash('md5').update(body).digest('hex');
  const query = Object.keys(params).sort().map((k) => `${k}=${params[k]}`).join('&');
  const sig = createHmac('sha256', secret).update(`${method}\n${path}\n${query}`).digest('hex');
  return `http://${addr}${path}?${query}&auth_signature=${sig}`;
}
await check('bad-signature-and-stale-timestamp-refused', async () => {
  const body = JSON.stringify({ name: 'e', channels: ['news'], data: 'x' });
  const post = (url) => fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  const good = await post(signed('POST', '/apps/100/events', body));
  if (good.status !== 200) throw new Error(`good ${good.status} ${await good.text()}`);
  const bad = await post(signed('POST', '/apps/100/events', body, { secret: 'nope' }));
  if (bad.status !== 401) throw new Error(`bad signature ${bad.status}`);
  const stale = await post(signed('POST', '/apps/100/events', body, { ts: Math.floor(Date.now() / 1000) - 700 }));
  if (stale.status !== 401 || !(await stale.text()).includes('Timestamp')) throw new Error(`stale ${stale.status}`);
  const tampered = await fetch(signed('POST', '/apps/100/events', body), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body.replace('x', 'y') });
  if (tampered.status !== 401) throw new Error(`tampered body ${tampered.status}`);
});

await check('terminate-user-connections', async () => {
  const c = client(APP, { user_id: 'zed' });
  await connected(c);
  const states = [];
  c.connection.bind('state_change', (s) => states.push(s.current));
  c.signin();
  await until(() => c.user.user_data?.id === 'zed');
  const r = await api.terminateUserConnections('zed');
  if (r.status !== 200) throw new Error(`terminate ${r.status}`);
  await until(() => c.connection.state !== 'connected');
  c.disconnect();
});

await check('unknown-app-key-4001', async () => {
  const c = new Pusher('no-such-key', { wsHost: host, wsPort: Number(port), forceTLS: false, enabledTransports: ['ws'], cluster: 'x' });
  const errors = [];
  c.connection.bind('error', (e) => errors.push(e));
  await until(() => errors.length > 0);
  await sleep(300);
  const code = errors[0]?.data?.code ?? errors[0]?.error?.data?.code;
  if (code !== 4001) throw new Error(JSON.stringify(errors));
  if (c.connection.state === 'connected') throw new Error(c.connection.state);
  c.disconnect();
});

console.log(`DONE ${failed} failed`);
process.exit(failed ? 1 : 0);
