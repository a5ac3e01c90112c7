// Pusher clients spread over three nodes: ann on nodes 1 and 2 (two connections), bob on node 2,
// carl on node 3, all in presence-room and news. Prints READY, then waits for a line on stdin,
// then disconnects everyone on nodes 1 and 2 (node 3 is killed by the test) and prints DONE.
// usage: node pusher_cluster.mjs ADDR1 ADDR2 ADDR3
import readline from 'node:readline';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const addrs = process.argv.slice(2);
const app = { appId: '100', key: 'app-key', secret: 'app-secret' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function client(addr, user) {
  const [host, port] = addr.split(':');
  const server = new PusherServer({ ...app, host, port, useTLS: false });
  return new Pusher(app.key, {
    wsHost: host, wsPort: Number(port), forceTLS: false, enabledTransports: ['ws'], cluster: 'x',
    channelAuthorization: {
      customHandler: (p, cb) => cb(null, server.authorizeChannel(p.socketId, p.channelName,
        p.channelName.startsWith('presence-') ? { user_id: user } : undefined)),
    },
  });
}
const subscribed = (ch) => new Promise((resolve, reject) => {
  ch.bind('pusher:subscription_succeeded', resolve);
  ch.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
});
const clients = [
  client(addrs[0], 'ann'),
  client(addrs[1], 'ann'),
  client(addrs[1], 'bob'),
  client(addrs[2], 'carl'),
];
for (const c of clients) {
  await subscribed(c.subscribe('presence-room'));
  await subscribed(c.subscribe('news'));
  await sleep(100);
}
console.log('READY');
const lines = readline.createInterface({ input: process.stdin });
for await (const _ of lines) break;
for (const c of clients.slice(0, 3)) {
  c.disconnect();
  await sleep(300);
}
await sleep(500);
console.log('DONE');
process.exit(0);
