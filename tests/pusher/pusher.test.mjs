// The Pusher Channels face of Herald with the real libraries: pusher-js (its Node build) as the
// client and `pusher` (the npm server SDK) as the backend, against the real herald binary.
//
// Waiting is always for an event (a callback, a state change); `within` only turns a hang into a
// failure with a message.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Echo from 'laravel-echo';
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';

import { startHerald, within } from '../../clients/js/test/helpers/herald.mjs';

const APP = { id: 'app-1', key: 'app-key', secret: 'app-secret-0123' };
const OTHER = { id: 'app-2', key: 'other-key', secret: 'other-secret-0123' };

const CONFIG = `
[[pusher.apps]]
id = "${APP.id}"
key = "${APP.key}"
secret = "${APP.secret}"
enable_client_messages = true

[[pusher.apps]]
id = "${OTHER.id}"
key = "${OTHER.key}"
secret = "${OTHER.secret}"
`;

/** The backend: the npm server SDK pointed at the node. */
function server(herald, app = APP, secret = app.secret) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret,
    host: '127.0.0.1',
    port: String(herald.port),
    useTLS: false,
    encryptionMasterKeyBase64: MASTER_KEY,
  });
}

/** The key end-to-end encrypted channels derive their secrets from (the backend's alone). */
const MASTER_KEY = Buffer.alloc(32, 7).toString('base64');

const clients = new Set();

/** A pusher-js client whose channel and user authorization come from the server SDK. */
function client(herald, { app = APP, backend = server(herald, app), user, key = app.key } = {}) {
  const pusher = new PusherClient(key, {
    wsHost: '127.0.0.1',
    wsPort: herald.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'local',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith('presence-') ? { user_id: user.id, user_info: user.info } : undefined;
        callback(null, backend.authorizeChannel(socketId, channelName, presence));
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => callback(null, backend.authenticateUser(socketId, user)),
    },
  });
  clients.add(pusher);
  return pusher;
}

function once(emitter, event, what = event) {
  return within(new Promise((resolve) => emitter.bind(event, function handler(data, metadata) {
    emitter.unbind(event, handler);
    resolve(data ?? metadata);
  })), what);
}

function connected(pusher) {
  if (pusher.connection.state === 'connected') return Promise.resolve();
  return within(new Promise((resolve) => pusher.connection.bind('connected', resolve)), 'pusher-js to connect');
}

async function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  await within(new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', resolve);
    channel.bind('pusher:subscription_error', (e) => reject(new Error(`subscription to ${name} refused: ${JSON.stringify(e)}`)));
  }), `subscription to ${name}`);
  return channel;
}

describe('Pusher protocol with pusher-js and the pusher server SDK', () => {
  let herald;

  before(async () => {
    herald = await startHerald({ config: CONFIG });
  });

  after(async () => {
    for (const pusher of clients) pusher.disconnect();
    await herald?.stop();
  });

  test('connects with a digits.digits socket id and receives a triggered event on a public channel', async () => {
    const pusher = client(herald);
    const channel = await subscribed(pusher, 'news');
    assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);
    const got = once(channel, 'headline');
    await server(herald).trigger('news', 'headline', { title: 'hello', n: 1 });
    assert.deepEqual(await got, { title: 'hello', n: 1 });
  });

  test('an unknown app key is refused with 4001 and pusher-js does not reconnect', async () => {
    const pusher = client(herald, { key: 'no-such-key' });
    const error = await once(pusher.connection, 'error', 'the connection error');
    // Before connection_established pusher-js wraps the protocol's error in a WebSocketError.
    assert.equal(error.error.data.code, 4001);
    await within(new Promise((resolve) => {
      const check = () => (['failed', 'disconnected'].includes(pusher.connection.state) ? resolve() : setTimeout(check, 20));
      check();
    }), 'pusher-js to give up');
  });

  test('private channels need a valid signature', async () => {
    const forged = client(herald, { backend: server(herald, APP, 'not-the-secret') });
    const refused = forged.subscribe('private-orders');
    const error = await once(refused, 'pusher:subscription_error', 'the subscription error');
    assert.equal(error.status, 401);

    const pusher = client(herald);
    const channel = await subscribed(pusher, 'private-orders');
    const got = once(channel, 'created');
    await server(herald).trigger('private-orders', 'created', { id: 7 });
    assert.deepEqual(await got, { id: 7 });
  });

  test('presence: one member per user id, member_added and member_removed, and the users API', async () => {
    const alice = client(herald, { user: { id: 'alice', info: { name: 'Alice' } } });
    const room = await subscribed(alice, 'presence-room');
    assert.equal(room.members.count, 1);
    assert.deepEqual(room.members.me.info, { name: 'Alice' });

    const added = once(room, 'pusher:member_added', 'member_added');
    const bob = client(herald, { user: { id: 'bob', info: { name: 'Bob' } } });
    const bobRoom = await subscribed(bob, 'presence-room');
    assert.deepEqual((await added).info, { name: 'Bob' });
    assert.equal(bobRoom.members.count, 2);

    // A second tab of Bob's is not a second member.
    const bobAgain = client(herald, { user: { id: 'bob', info: { name: 'Bob' } } });
    const again = await subscribed(bobAgain, 'presence-room');
    assert.equal(again.members.count, 2);

    const backend = server(herald);
    const users = await (await backend.get({ path: '/channels/presence-room/users' })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);
    const info = await (await backend.get({ path: '/channels/presence-room', params: { info: 'user_count,subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, subscription_count: 3, user_count: 2 });
    const list = await (await backend.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
    assert.deepEqual(list.channels['presence-room'], { user_count: 2 });

    // Bob leaves only when his last socket does.
    const removed = once(room, 'pusher:member_removed', 'member_removed');
    bobAgain.disconnect();
    bob.disconnect();
    assert.equal((await removed).id, 'bob');
    assert.equal(room.members.count, 1);
  });

  test('client events reach the other subscribers of a private channel, never the sender; public channels refuse them', async () => {
    const a = client(herald);
    const b = client(herald);
    const channelA = await subscribed(a, 'private-chat');
    const channelB = await subscribed(b, 'private-chat');
    let echoed = false;
    channelA.bind('client-typing', () => {
      echoed = true;
    });
    const got = once(channelB, 'client-typing');
    assert.equal(channelA.trigger('client-typing', { who: 'a' }), true);
    assert.deepEqual(await got, { who: 'a' });

    const publicA = await subscribed(a, 'lobby');
    const publicB = await subscribed(b, 'lobby');
    let relayed = false;
    publicB.bind('client-shout', () => {
      relayed = true;
    });
    const refused = once(a.connection, 'error', 'the refusal of a public client event');
    a.send_event('client-shout', { loud: true }, 'lobby');
    const error = await refused;
    assert.match(error.data.message, /only on private and presence channels/);
    // The public event was refused before it reached the hub; a later event on the same
    // connection to B proves the connection carried on and that nothing was relayed meanwhile.
    const after = once(channelB, 'client-typing');
    channelA.trigger('client-typing', { who: 'a', n: 2 });
    assert.deepEqual(await after, { who: 'a', n: 2 });
    assert.equal(relayed, false);
    assert.equal(echoed, false);
    assert.ok(publicA);
  });

  test('trigger to several channels, batch, and socket_id exclusion', async () => {
    const a = client(herald);
    const b = client(herald);
    const [a1, a2] = [await subscribed(a, 'multi-1'), await subscribed(a, 'multi-2')];
    const b1 = await subscribed(b, 'multi-1');
    const backend = server(herald);

    const both = [once(a1, 'ping'), once(a2, 'ping')];
    await backend.trigger(['multi-1', 'multi-2'], 'ping', 'plain text');
    assert.deepEqual(await Promise.all(both), ['plain text', 'plain text']);

    let excluded = false;
    a1.bind('only-others', () => {
      excluded = true;
    });
    const toB = once(b1, 'only-others');
    await backend.trigger('multi-1', 'only-others', { x: 1 }, { socket_id: a.connection.socket_id });
    assert.deepEqual(await toB, { x: 1 });

    const batch = [once(a1, 'batched'), once(a2, 'batched')];
    await backend.triggerBatch([
      { channel: 'multi-1', name: 'batched', data: { n: 1 } },
      { channel: 'multi-2', name: 'batched', data: { n: 2 } },
    ]);
    assert.deepEqual(await Promise.all(batch), [{ n: 1 }, { n: 2 }]);
    // Events on one channel arrive in order, so "only-others" would have come before "batched".
    assert.equal(excluded, false);
  });

  test('a wrong secret or a stale timestamp gets 401 from the HTTP API', async () => {
    await assert.rejects(server(herald, APP, 'wrong-secret').trigger('news', 'x', {}), (e) => e.status === 401);
    const stale = server(herald);
    const realNow = Date.now;
    Date.now = () => realNow() - 3600_000;
    try {
      await assert.rejects(stale.get({ path: '/channels' }), (e) => e.status === 401);
    } finally {
      Date.now = realNow;
    }
  });

  test('apps are namespaces: another app on the same channel name hears nothing', async () => {
    const mine = client(herald);
    const theirs = client(herald, { app: OTHER });
    const myNews = await subscribed(mine, 'shared-name');
    const theirNews = await subscribed(theirs, 'shared-name');
    let leaked = false;
    theirNews.bind('story', () => {
      leaked = true;
    });
    const got = once(myNews, 'story');
    await server(herald).trigger('shared-name', 'story', 1);
    await got;
    const otherGot = once(theirNews, 'story');
    await server(herald, OTHER).trigger('shared-name', 'story', 2);
    assert.equal(await otherGot, 2);
    assert.equal(leaked, true, 'the second app hears its own event');
    const channels = await (await server(herald, OTHER).get({ path: '/channels' })).json();
    assert.ok(!Object.keys(channels.channels).some((c) => c.startsWith('multi-')), JSON.stringify(channels));
  });

  test('cache channels replay the last event on subscribe, and report a miss', async () => {
    const backend = server(herald);
    const early = client(herald);
    const missing = early.subscribe('cache-empty');
    await once(missing, 'pusher:cache_miss', 'cache_miss');
    await backend.trigger('cache-prices', 'tick', { price: 42 });
    const late = client(herald);
    const channel = late.subscribe('cache-prices');
    assert.deepEqual(await once(channel, 'tick', 'the cached event'), { price: 42 });
  });

  test('user sign-in, sending to a user, and terminating a user’s connections', async () => {
    const carol = client(herald, { user: { id: 'carol', user_info: {} } });
    await connected(carol);
    carol.signin();
    await within(carol.user.signinDonePromise, 'sign-in');
    assert.equal(carol.user.user_data.id, 'carol');
    const backend = server(herald);
    // pusher-js subscribes to #server-to-user-carol once signed in; events for the user come there.
    const own = carol.user.serverToUserChannel;
    if (!own.subscribed) await once(own, 'pusher:subscription_succeeded', 'the user channel');
    const got = within(new Promise((resolve) => carol.user.bind('note', resolve)), 'the event sent to the user');
    await backend.sendToUser('carol', 'note', { hi: 1 });
    assert.deepEqual(await got, { hi: 1 });
    const closed = once(carol.connection, 'error', 'the termination');
    await backend.terminateUserConnections('carol');
    const error = await closed;
    assert.equal((error.data ?? error.error.data).code, 4009);
  });

  test('private-encrypted channels: the backend encrypts, Herald relays, pusher-js decrypts', async () => {
    const pusher = client(herald);
    const channel = await subscribed(pusher, 'private-encrypted-vault');
    const got = once(channel, 'secret');
    await server(herald).trigger('private-encrypted-vault', 'secret', { code: 1234 });
    assert.deepEqual(await got, { code: 1234 });
  });

  test('Laravel Echo on top of pusher-js: public and private channels', async () => {
    const backend = server(herald);
    const echo = new Echo({
      broadcaster: 'pusher',
      Pusher: PusherClient,
      key: APP.key,
      wsHost: '127.0.0.1',
      wsPort: herald.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      cluster: 'local',
      authorizer: (channel) => ({
        authorize: (socketId, callback) => callback(null, backend.authorizeChannel(socketId, channel.name)),
      }),
    });
    try {
      const shipped = within(new Promise((resolve) => echo.channel('orders').listen('.OrderShipped', resolve)), 'OrderShipped');
      const note = within(new Promise((resolve) => echo.private('user.5').listen('.Note', resolve)), 'Note');
      await within(new Promise((resolve) => echo.connector.pusher.connection.bind('connected', resolve)), 'Echo to connect');
      // Echo subscribes on its own schedule: publish until each subscription is live.
      const ready = (name) => within((async () => {
        for (;;) {
          const info = await (await backend.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
          if (info.subscription_count === 1) return;
          await new Promise((r) => setTimeout(r, 20));
        }
      })(), `${name} to be subscribed`);
      await ready('orders');
      await ready('private-user.5');
      await backend.trigger('orders', 'OrderShipped', { id: 9 });
      await backend.trigger('private-user.5', 'Note', { text: 'hi' });
      assert.deepEqual(await shipped, { id: 9 });
      assert.deepEqual(await note, { text: 'hi' });
    } finally {
      echo.disconnect();
    }
  });

  test('pusher-js reconnects and resubscribes after the node restarts', async () => {
    const port = herald.port;
    const pusher = client(herald);
    const channel = await subscribed(pusher, 'survivor');
    const firstSocket = pusher.connection.socket_id;
    const resubscribed = once(channel, 'pusher:subscription_succeeded', 'the resubscription');
    await herald.stop();
    herald = await startHerald({ port, config: CONFIG });
    await resubscribed;
    assert.notEqual(pusher.connection.socket_id, firstSocket);
    const got = once(channel, 'back');
    await server(herald).trigger('survivor', 'back', { ok: true });
    assert.deepEqual(await got, { ok: true });
  });
});

describe('Pusher webhooks, verified with the server SDK', () => {
  let herald;
  let hooks;
  const received = [];
  const waiting = [];
  let refuseNext = 0;

  /** The next webhook request: `{ headers, rawBody }`. */
  function nextHook(what) {
    if (received.length > 0) return Promise.resolve(received.shift());
    return within(new Promise((resolve) => waiting.push(resolve)), what);
  }

  /** Collects webhook events until every name in `names` was seen; returns them in order. */
  async function eventsUntil(names) {
    const events = [];
    const backend = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1' });
    while (!names.every((n) => events.some((e) => e.name === n))) {
      const request = await nextHook(`webhooks ${names.join(', ')}`);
      const webhook = backend.webhook(request);
      assert.equal(webhook.isValid(), true, `signature of ${request.rawBody}`);
      events.push(...webhook.getEvents());
    }
    return events;
  }

  before(async () => {
    const { createServer } = await import('node:http');
    hooks = createServer((request, response) => {
      let rawBody = '';
      request.setEncoding('utf8');
      request.on('data', (chunk) => {
        rawBody += chunk;
      });
      request.on('end', () => {
        const hook = { headers: request.headers, rawBody };
        if (refuseNext > 0) {
          refuseNext -= 1;
          hook.refused = true;
          response.writeHead(503).end();
        } else {
          response.writeHead(200).end('{}');
        }
        const resolve = waiting.shift();
        if (resolve) resolve(hook);
        else received.push(hook);
      });
    });
    await new Promise((resolve) => hooks.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${hooks.address().port}/pusher/webhooks`;
    herald = await startHerald({
      config: `
[[pusher.apps]]
id = "${APP.id}"
key = "${APP.key}"
secret = "${APP.secret}"
enable_client_messages = true

[[pusher.apps.webhooks]]
url = "${url}"
`,
    });
  });

  after(async () => {
    await herald?.stop();
    hooks?.close();
  });

  test('occupied, member_added, client_event, member_removed and vacated arrive signed', async () => {
    const dana = client(herald, { user: { id: 'dana', info: {} } });
    const room = await subscribed(dana, 'presence-hooks');
    const first = await eventsUntil(['channel_occupied', 'member_added']);
    assert.deepEqual(first.find((e) => e.name === 'member_added'), { name: 'member_added', channel: 'presence-hooks', user_id: 'dana' });
    room.trigger('client-wave', { hand: 'left' });
    const [wave] = await eventsUntil(['client_event']);
    assert.equal(wave.event, 'client-wave');
    assert.equal(wave.user_id, 'dana');
    assert.deepEqual(JSON.parse(wave.data), { hand: 'left' });
    assert.match(wave.socket_id, /^\d+\.\d+$/);
    dana.disconnect();
    const last = await eventsUntil(['member_removed', 'channel_vacated']);
    const names = last.map((e) => e.name);
    assert.ok(names.indexOf('member_removed') < names.indexOf('channel_vacated'), names.join());
  });

  test('a tampered body fails the SDK check', async () => {
    const probe = client(herald);
    await subscribed(probe, 'tamper');
    const request = await nextHook('the occupied webhook');
    const backend = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1' });
    assert.equal(backend.webhook(request).isValid(), true);
    const tampered = { ...request, rawBody: request.rawBody.replace('tamper', 'tampex') };
    assert.equal(backend.webhook(tampered).isValid(), false);
    probe.disconnect();
    await eventsUntil(['channel_vacated']);
  });

  test('a refused delivery is retried with the same signed body', async () => {
    refuseNext = 1;
    const probe = client(herald);
    await subscribed(probe, 'retry-me');
    const refused = await nextHook('the refused webhook');
    const retried = await nextHook('the retried webhook');
    assert.equal(refused.refused, true);
    assert.equal(retried.rawBody, refused.rawBody);
    assert.equal(retried.headers['x-pusher-signature'], refused.headers['x-pusher-signature']);
    assert.equal(retried.headers['x-pusher-key'], APP.key);
    probe.disconnect();
    await eventsUntil(['channel_vacated']);
  });
});
