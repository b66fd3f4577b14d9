// The v2 API in Node against the real Herald binary: subscription objects (states, events,
// restore and resume on reconnect), presence, history, publish, in-band token refresh, the token
// out of the URL, and MessagePack. Every wait is for an event; timeouts only turn hangs into
// failures.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import WebSocket, { WebSocketServer } from 'ws';

import { HeraldClient, HeraldError } from '../dist/index.js';
import { decodeMsgpack } from '../dist/msgpack.js';
import { next, startHerald, within } from './helpers/herald.mjs';

const fast = { initialDelayMs: 20, maxDelayMs: 200, multiplier: 2, jitter: 'full' };
const SECRET = 'js-client-v2-test-secret-0123456789';

/** An HS256 JWT for `sub`, expiring in `seconds`. */
function jwt(sub, seconds, extra = {}) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const claims = { sub, name: `name-${sub}`, exp: Math.floor(Date.now() / 1000) + seconds, ...extra };
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/** Resolves with the next `type` event of a subscription (or client) satisfying `predicate`. */
function once(emitter, type, predicate = () => true) {
  let off = () => {};
  const waiting = new Promise((resolve) => {
    off = emitter.on(type, (payload) => {
      if (predicate(payload)) resolve(payload);
    });
  });
  return within(waiting, `event "${type}"`).finally(() => off());
}

const CONFIG = `
[auth]
mode = "optional"
jwt_secret = "${SECRET}"
on_expiry = "refresh"
refresh_ahead = "1h"

[presence]
enabled = true

[[history]]
channels = "jobs:*"
size = 100

[[history]]
rooms = "chat:*"
size = 100
`;

describe('HeraldClient v2 against Herald', () => {
  let herald;
  const clients = [];
  const open = (options = {}) => {
    const c = new HeraldClient({ url: herald.wsUrl, WebSocket, reconnect: fast, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    herald = await startHerald({ config: CONFIG, args: ['--set', 'websocket.heartbeat_interval=1s'] });
  });

  after(async () => {
    for (const c of clients) c.close();
    await herald?.stop();
  });

  test('a channel subscription goes subscribing → subscribed and receives its events', async () => {
    const c = open();
    await within(c.connect(), 'connect()');
    const sub = c.channel('jobs:1');
    const states = [];
    sub.on('subscribing', () => states.push('subscribing'));
    sub.on('subscribed', () => states.push('subscribed'));
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(c.channel('jobs:1'), sub, 'one object per channel');
    await within(sub.subscribe(), 'subscribe()');
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(states, ['subscribing', 'subscribed']);
    const typed = once(sub, 'job:done');
    const any = once(sub, 'event');
    await herald.publish({ channel: 'jobs:1', event: { type: 'job:done', channel: 'jobs:1', n: 1 } });
    assert.equal((await typed).n, 1);
    assert.equal((await any).type, 'job:done');
    await sub.unsubscribe();
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(c.channels, []);

    // The same object subscribes again, with its handlers.
    assert.equal(c.channel('jobs:1'), sub);
    await within(sub.subscribe(), 'subscribe() again');
    const again = once(sub, 'job:done');
    await herald.publish({ channel: 'jobs:1', event: { type: 'job:done', channel: 'jobs:1', n: 2 } });
    assert.equal((await again).n, 2);
    c.removeSubscription(sub);
    assert.notEqual(c.channel('jobs:1'), sub);
  });

  test('a refused subscription reports the server code and ends unsubscribed', async () => {
    const strict = await startHerald({ args: ['--set', 'limits.max_channels_per_connection=1'] });
    const c = new HeraldClient({ url: strict.wsUrl, WebSocket, reconnect: fast });
    try {
      await within(c.connect(), 'connect()');
      await within(c.channel('first').subscribe(), 'the first subscribe()');
      const sub = c.channel('second');
      const states = [];
      for (const type of ['subscribing', 'subscribed', 'unsubscribed']) sub.on(type, () => states.push(type));
      const errors = [];
      sub.on('error', (e) => errors.push(e));
      const error = await sub.subscribe().catch((e) => e);
      assert.ok(error instanceof HeraldError, String(error));
      assert.equal(error.code, 'LIMIT_EXCEEDED');
      assert.equal(sub.state, 'unsubscribed');
      assert.deepEqual(states, ['subscribing', 'unsubscribed']);
      assert.deepEqual(errors.map((e) => e.code), ['LIMIT_EXCEEDED']);
      assert.deepEqual(c.channels, ['first'], 'a refused channel is not restored later');
      // A request of a subscription that the server refuses rejects with its code too.
      const history = await c.channel('first').history().catch((e) => e);
      assert.equal(history.code, 'INVALID_MESSAGE');
      assert.throws(() => c.channel(''), (e) => e.code === 'INVALID_NAME');
    } finally {
      c.close();
      await strict.stop();
    }
  });

  test('history() returns a stream\'s events with positions', async () => {
    const c = open();
    await within(c.connect(), 'connect()');
    for (let i = 1; i <= 3; i++) {
      await herald.publish({ channel: 'jobs:h', event: { type: 'job:step', i } });
    }
    const history = await within(c.channel('jobs:h').history({ limit: 2 }), 'history()');
    assert.equal(history.stream, 'c:jobs:h');
    assert.deepEqual(history.events.map((e) => e.i), [2, 3]);
    assert.equal(history.seq, 3);
    const since = await c.channel('jobs:h').history({ since: { seq: 1, epoch: history.epoch } });
    assert.equal(since.recovered, true);
    assert.deepEqual(since.events.map((e) => e.i), [2, 3]);
  });

  test('a room: presence, join and leave events, publish and its history', async () => {
    const alice = open({ token: jwt('alice', 3600) });
    const bob = open({ token: jwt('bob', 3600) });
    await within(Promise.all([alice.connect(), bob.connect()]), 'connect()');
    const roomA = alice.room('chat:1');
    await within(roomA.subscribe(), 'alice joins');
    const membersA = await within(roomA.presence(), 'presence()');
    assert.deepEqual(membersA.map((m) => m.user_id), ['alice']);

    const joined = once(roomA, 'join');
    const roomB = bob.room('chat:1');
    await within(roomB.subscribe(), 'bob joins');
    assert.equal((await joined).user_id, 'bob');
    assert.deepEqual((await roomB.presence()).map((m) => m.user_id).sort(), ['alice', 'bob']);
    assert.deepEqual(roomA.members.map((m) => m.user_id).sort(), ['alice', 'bob']);

    const received = once(roomA, 'chat_message');
    const ack = await within(roomB.publish('hello', { idempotencyKey: 'k-1' }), 'publish()');
    assert.equal(ack.type, 'chat_message_ack');
    assert.equal((await received).content, 'hello');
    const history = await within(roomA.history(), 'room history()');
    assert.ok(history.events.some((e) => e.content === 'hello'), JSON.stringify(history));

    const left = once(roomA, 'leave');
    await roomB.unsubscribe();
    assert.equal((await left).user_id, 'bob');
    assert.deepEqual(roomA.members.map((m) => m.user_id), ['alice']);
  });

  test('a reconnect restores subscriptions and resumes without loss or duplicates', async () => {
    // An operator's kick (4001) is not retried by default; this application reconnects anyway.
    const c = open({ recover: true, shouldReconnect: () => true });
    await within(c.connect(), 'connect()');
    const sub = c.channel('jobs:r');
    await within(sub.subscribe(), 'subscribe()');
    const seen = [];
    sub.on('job:tick', (e) => seen.push(e.i));
    const first = once(sub, 'job:tick', (e) => e.i === 1);
    await herald.publish({ channel: 'jobs:r', event: { type: 'job:tick', i: 1 } });
    await first;

    // Drop the connection from the server side, publish while it is gone.
    const subscribing = once(sub, 'subscribing');
    const resubscribed = once(sub, 'subscribed');
    const closed = next(c, 'close');
    const id = c.connectionId;
    const kicked = await herald.delete(`/api/connections/${id}`);
    assert.ok(kicked.status < 300, JSON.stringify(kicked));
    await closed;
    assert.equal((await subscribing).reconnect, true);
    for (let i = 2; i <= 4; i++) await herald.publish({ channel: 'jobs:r', event: { type: 'job:tick', i } });

    await resubscribed;
    assert.equal(sub.state, 'subscribed');
    const last = once(sub, 'job:tick', (e) => e.i === 5);
    await herald.publish({ channel: 'jobs:r', event: { type: 'job:tick', i: 5 } });
    await last;
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  });

  test('the token goes in an Authorization header, never in the URL', async () => {
    const token = jwt('carol', 3600);
    const c = open({ token });
    const welcome = next(c, 'welcome');
    let url;
    c.on('open', (e) => {
      url = e.url;
    });
    await within(c.connect(), 'connect()');
    assert.equal((await welcome).user_id, 'carol');
    assert.equal(new URL(url).searchParams.get('token'), null);
    assert.ok(!url.includes(token));
  });

  test('the token in a Sec-WebSocket-Protocol (as browsers send it) is accepted', async () => {
    const c = open({ token: jwt('dave', 3600), tokenIn: 'protocol' });
    const welcome = next(c, 'welcome');
    await within(c.connect(), 'connect()');
    assert.equal((await welcome).user_id, 'dave');
  });

  test('token_expiring is answered in band: a new token, no reconnect', async () => {
    let calls = 0;
    const c = open({
      getToken: () => {
        calls += 1;
        // The first token expires within refresh_ahead (1 h), so Herald asks at once.
        return jwt('erin', calls === 1 ? 600 : 7200);
      },
    });
    const refreshed = next(c, 'token_refreshed');
    await within(c.connect(), 'connect()');
    const id = c.connectionId;
    const reply = await refreshed;
    assert.ok(reply.expires_at > Date.now() / 1000 + 3600, JSON.stringify(reply));
    assert.equal(calls, 2);
    assert.equal(c.connectionId, id, 'same connection');
    assert.equal(c.state, 'ready');
  });

  test('herald.msgpack frames are decoded with the msgpack entry point', async () => {
    const c = open({ protocols: ['herald.msgpack'], msgpack: decodeMsgpack });
    const sub = c.channel('jobs:m');
    await within(c.connect(), 'connect()');
    await within(sub.subscribe(), 'subscribe()');
    const got = once(sub, 'job:mp');
    const event = { type: 'job:mp', channel: 'jobs:m', n: -5, big: 2 ** 40, f: 1.5, s: 'é'.repeat(40), a: [true, null] };
    await herald.publish({ channel: 'jobs:m', event });
    const received = await got;
    for (const [k, v] of Object.entries(event)) assert.deepEqual(received[k], v, k);
  });
});

describe('token transport against a scripted server', () => {
  test('tokenIn url (old servers) puts it in the query; header mode sends Authorization', async () => {
    const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    const seen = [];
    server.on('connection', (socket, request) => {
      seen.push({ url: request.url, auth: request.headers.authorization, protocol: request.headers['sec-websocket-protocol'] });
      socket.send(JSON.stringify({ type: 'connection', connection_id: `c${seen.length}` }));
      socket.on('message', (data) => {
        const m = JSON.parse(String(data));
        socket.send(JSON.stringify({ type: 'pong', id: m.id }));
      });
    });
    const url = `ws://127.0.0.1:${server.address().port}/ws`;
    const clients = [
      new HeraldClient({ url, WebSocket, token: 'a.b.c', tokenIn: 'url' }),
      new HeraldClient({ url, WebSocket, token: 'a.b.c' }),
      new HeraldClient({ url, WebSocket, token: 'a.b.c', tokenIn: 'protocol' }),
      new HeraldClient({ url, WebSocket, token: 'a.b.c', tokenInUrl: true }),
    ];
    try {
      for (const c of clients) await within(c.connect(), 'connect()');
      assert.equal(new URL(seen[0].url, 'ws://x').searchParams.get('token'), 'a.b.c');
      assert.equal(seen[1].auth, 'Bearer a.b.c');
      assert.equal(new URL(seen[1].url, 'ws://x').searchParams.get('token'), null);
      assert.equal(seen[2].protocol, 'herald.json,herald.token.a.b.c');
      assert.equal(new URL(seen[3].url, 'ws://x').searchParams.get('token'), 'a.b.c');
    } finally {
      for (const c of clients) c.close();
      server.close();
    }
  });
});

describe('token expiry against a scripted server', () => {
  test('after a 4003 close (token expired) the client reconnects with a fresh token from getToken', async () => {
    const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    const auth = [];
    server.on('connection', (socket, request) => {
      auth.push(request.headers.authorization);
      socket.send(JSON.stringify({ type: 'connection', connection_id: `c${auth.length}` }));
      socket.on('message', (data) => {
        const m = JSON.parse(String(data));
        socket.send(JSON.stringify({ type: 'pong', id: m.id }));
        // The first connection's token "expires" as soon as it is ready.
        if (auth.length === 1) socket.close(4003, 'token expired');
      });
    });
    let calls = 0;
    const c = new HeraldClient({
      url: `ws://127.0.0.1:${server.address().port}/ws`,
      WebSocket,
      reconnect: fast,
      getToken: () => `h.p.s${++calls}`,
    });
    try {
      const closed = next(c, 'close');
      const again = next(c, 'ready', (e) => e.reconnect);
      await within(c.connect(), 'connect()');
      const info = await closed;
      assert.equal(info.code, 4003);
      assert.equal(info.willReconnect, true);
      await again;
      assert.deepEqual(auth, ['Bearer h.p.s1', 'Bearer h.p.s2']);
    } finally {
      c.close();
      server.close();
    }
  });
});

describe('decodeMsgpack', () => {
  const bytes = (...b) => new Uint8Array(b);
  test('decodes every JSON type and refuses malformed input', () => {
    // {"a":[1,-1,null,true,1.5],"s":"é"} written by hand.
    const packed = bytes(0x82, 0xa1, 0x61, 0x95, 0x01, 0xff, 0xc0, 0xc3, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xa1, 0x73, 0xa2, 0xc3, 0xa9);
    assert.deepEqual(decodeMsgpack(packed), { a: [1, -1, null, true, 1.5], s: 'é' });
    assert.equal(decodeMsgpack(bytes(0xcf, 0, 0, 0x01, 0, 0, 0, 0, 0)), 2 ** 40);
    assert.equal(decodeMsgpack(bytes(0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe)), -2);
    assert.throws(() => decodeMsgpack(bytes(0x92, 0x01)), /truncated/);
    assert.throws(() => decodeMsgpack(bytes(0x01, 0x02)), /trailing/);
    assert.throws(() => decodeMsgpack(bytes(0xc1)), /unsupported/);
    // A "__proto__" key is an own property, as with JSON.parse, not the object's prototype.
    const proto = decodeMsgpack(bytes(0x81, 0xa9, ...Buffer.from('__proto__'), 0x81, 0xa1, 0x78, 0x01));
    assert.equal(Object.getPrototypeOf(proto), Object.prototype);
    assert.deepEqual(Object.keys(proto), ['__proto__']);
    assert.equal({}.x, undefined);
  });
});
