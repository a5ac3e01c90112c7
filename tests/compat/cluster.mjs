// centrifuge-js on node A receives what Centrifugo's HTTP API publishes on node B (one Redis),
// and history read on either node has the same offsets.
// usage: node cluster.mjs ADDR_A ADDR_B API_KEY
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [a, b, key] = process.argv.slice(2);
let failed = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function api(addr, method, body) {
  const r = await fetch(`http://${addr}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  if (j.error) throw new Error(JSON.stringify(j.error));
  return j.result;
}
async function check(name, fn) {
  try { await fn(); console.log(`OK ${name}`); } catch (e) { failed++; console.log(`FAIL ${name}: ${e?.stack ?? e}`); }
}
const c = new Centrifuge(`ws://${a}/connection/websocket`, { websocket: WebSocket });
const sub = c.newSubscription('cluster-news');
const got = [];
sub.on('publication', (ctx) => got.push([ctx.offset, ctx.data.n]));
sub.subscribe();
c.connect();
await sub.ready(5000);
await check('cluster-publish-on-other-node', async () => {
  for (let n = 1; n <= 3; n++) await api(b, 'publish', { channel: 'cluster-news', data: { n } });
  const end = Date.now() + 10000;
  while (got.length < 3 && Date.now() < end) await sleep(25);
  if (JSON.stringify(got) !== '[[1,1],[2,2],[3,3]]') throw new Error(JSON.stringify(got));
});
await check('cluster-history-same-offsets', async () => {
  const ha = await api(a, 'history', { channel: 'cluster-news', limit: -1 });
  const hb = await api(b, 'history', { channel: 'cluster-news', limit: -1 });
  if (JSON.stringify(ha) !== JSON.stringify(hb) || ha.offset !== 3) throw new Error(`${JSON.stringify(ha)} ${JSON.stringify(hb)}`);
});
c.disconnect();
console.log(`DONE ${failed} failed`);
process.exit(failed ? 1 : 0);
