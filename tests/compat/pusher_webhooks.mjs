// Drives the events the Pusher app's webhooks report: two members join and leave a presence
// channel, one sends a client event on a private channel. Prints DONE when all is done.
// usage: node pusher_webhooks.mjs HTTP_ADDR
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const [host, port] = process.argv[2].split(':');
const app = { appId: '100', key: 'app-key', secret: 'app-secret' };
const server = new PusherServer({ ...app, host, port, useTLS: false });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const client = (user) => new Pusher(app.key, {
  wsHost: host, wsPort: Number(port), forceTLS: false, enabledTransports: ['ws'], cluster: 'x',
  channelAuthorization: {
    customHandler: (p, cb) => cb(null, server.authorizeChannel(p.socketId, p.channelName,
      p.channelName.startsWith('presence-') ? { user_id: user } : undefined)),
  },
});
const subscribed = (ch) => new Promise((resolve, reject) => {
  ch.bind('pusher:subscription_succeeded', resolve);
  ch.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
});
const a = client('ann');
const b = client('bob');
await subscribed(a.subscribe('presence-room'));
await subscribed(b.subscribe('presence-room'));
const chat = a.subscribe('private-chat');
await subscribed(chat);
chat.trigger('client-hello', { from: 'ann' });
await sleep(300);
b.disconnect();
await sleep(500);
a.disconnect();
await sleep(500);
console.log('DONE');
process.exit(0);
