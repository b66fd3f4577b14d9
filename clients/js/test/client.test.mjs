// HeraldClient in Node against the real Herald binary (and, for failures Herald never produces on
// purpose, a scripted server from the `ws` package). The `ws` package is the WebSocket
// implementation. Every wait is for an event; timeouts only turn hangs into failures.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket, { WebSocketServer } from 'ws';

import { ClientErrorCode, CloseCode, HeraldClient, HeraldError } from '../dist/index.js';
import { next, record, startHerald, within } from './helpers/herald.mjs';

const fast = { initialDelayMs: 20, maxDelayMs: 200, multiplier: 2, jitter: 'full' };

function client(url, options = {}) {
  return new HeraldClient({ url, WebSocket, reconnect: fast, ...options });
}

async function rejection(promise) {
  try {
    await within(promise, 'the promise to settle');
  } catch (error) {
    return error;
  }
  assert.fail('expected the promise to reject');
}

describe('HeraldClient against Herald', () => {
  let herald;
  const clients = [];
  const open = (options) => {
    const c = client(herald.wsUrl, options);
    clients.push(c);
    return c;
  };

  before(async () => {
    herald = await startHerald({
      args: ['--set', 'websocket.heartbeat_interval=1s', '--set', 'limits.max_rooms_per_connection=2'],
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    await herald?.stop();
  });

  test('connects and receives the welcome with its channels and heartbeat interval', async () => {
    const c = open({ channels: ['campaigns'], clientId: 'js-test', userId: 'u-1' });
    const welcome = next(c, 'welcome');
    await within(c.connect(), 'connect()');
    const w = await welcome;
    assert.equal(c.state, 'ready');
    assert.equal(w.type, 'connection');
    assert.equal(typeof w.connection_id, 'string');
    assert.equal(c.connectionId, w.connection_id);
    assert.equal(w.client_id, 'js-test');
    assert.equal(w.user_id, 'u-1');
    assert.deepEqual(w.channels, ['campaigns']);
    assert.equal(w.heartbeat_interval, 1);
  });

  test('subscribe resolves with the acknowledgement that carries its id', async () => {
    const c = open();
    await c.connect();
    const reply = await within(c.subscribe(['emails', 'ai']), 'subscribe');
    assert.equal(reply.type, 'subscribed');
    assert.deepEqual(reply.channels, ['emails', 'ai']);
    assert.match(String(reply.id), /^hc/);
    assert.deepEqual(c.channels, ['emails', 'ai']);
    const left = await c.unsubscribe('ai');
    assert.equal(left.type, 'unsubscribed');
    assert.deepEqual(c.channels, ['emails']);
    const joined = await c.joinRoom('campaign:1');
    assert.deepEqual([joined.type, joined.room], ['room_joined', 'campaign:1']);
    const pong = await c.request({ type: 'ping', id: 77 });
    assert.deepEqual([pong.type, pong.id], ['pong', 77]);
  });

  test('a refused request rejects with the server error code', async () => {
    const c = open();
    await c.connect();
    const unknown = await rejection(c.request({ type: 'bogus' }));
    assert.ok(unknown instanceof HeraldError);
    assert.equal(unknown.code, 'UNKNOWN_MESSAGE_TYPE');
    assert.equal(unknown.isServerError, true);
    assert.equal(unknown.reply.type, 'error');
    const invalid = await rejection(c.request({ type: 'join_room' }));
    assert.equal(invalid.code, 'INVALID_MESSAGE');
    assert.match(invalid.message, /room/);
    // The connection is still usable afterwards.
    assert.equal((await c.request({ type: 'ping' })).type, 'pong');
  });

  test('a refused room join is forgotten, so it is not restored later', async () => {
    const c = open();
    await c.connect();
    await c.joinRoom('a');
    await c.joinRoom('b');
    const refused = await rejection(c.joinRoom('c'));
    assert.equal(refused.code, 'LIMIT_EXCEEDED');
    assert.deepEqual(c.rooms, ['a', 'b']);
  });

  test('names Herald would refuse throw before anything is sent', () => {
    const c = open();
    assert.throws(() => c.subscribe(''), (e) => e.code === ClientErrorCode.INVALID_NAME);
    assert.throws(() => c.joinRoom('x'.repeat(201)), (e) => e.code === ClientErrorCode.INVALID_NAME);
    assert.deepEqual(c.channels, []);
    assert.deepEqual(c.rooms, []);
  });

  test('events are dispatched by type and to "*"', async () => {
    const c = open({ channels: ['campaigns', 'emails'] });
    await c.connect();
    const launched = [];
    const opened = [];
    const all = [];
    c.on('campaign:launched', (m) => launched.push(m));
    c.on('email:opened', (m) => opened.push(m));
    c.on('*', (m) => all.push(m.type));
    const gotLaunch = next(c, 'campaign:launched');
    await herald.publish({
      channel: 'campaigns',
      event: { type: 'campaign:launched', campaign_id: 123, campaign_name: 'Q1 Outreach' },
    });
    const event = await gotLaunch;
    assert.deepEqual(event, { type: 'campaign:launched', campaign_id: 123, campaign_name: 'Q1 Outreach' });
    const gotOpen = next(c, 'email:opened');
    await herald.publish({ channel: 'emails', event: { type: 'email:opened', email_id: 456 } });
    await gotOpen;
    assert.equal(launched.length, 1);
    assert.equal(opened.length, 1);
    assert.deepEqual(
      all.filter((t) => t !== 'heartbeat'),
      ['campaign:launched', 'email:opened'],
    );
  });

  test('room and user events arrive', async () => {
    const c = open({ userId: 'u-7' });
    await c.connect();
    await c.joinRoom('campaign:123');
    const inRoom = next(c, 'campaign:stats_updated');
    await herald.post('/api/rooms/campaign:123/broadcast', { type: 'campaign:stats_updated', sent: 10 });
    assert.equal((await inRoom).sent, 10);
    const forUser = next(c, 'notification:system');
    await herald.post('/api/users/u-7/notify', { type: 'notification:system', title: 'hi' });
    assert.equal((await forUser).title, 'hi');
  });

  test('heartbeats arrive and keep the connection alive', async () => {
    const c = open();
    const events = record(c);
    await c.connect();
    const heartbeat = await next(c, 'heartbeat');
    assert.equal(heartbeat.type, 'heartbeat');
    await next(c, 'heartbeat');
    assert.equal(c.state, 'ready');
    assert.deepEqual(events.filter(([t]) => t === 'close' || t === 'reconnecting'), []);
  });

  test('a server error that answers no request becomes an "error" event', async () => {
    const c = open();
    await c.connect();
    const error = next(c, 'error');
    assert.equal(c.send({ type: 'bogus' }), true);
    const e = await error;
    assert.ok(e instanceof HeraldError);
    assert.equal(e.code, 'UNKNOWN_MESSAGE_TYPE');
  });

  test('an operator disconnect (4001) is not retried', async () => {
    const c = open();
    const events = record(c);
    await c.connect();
    const closed = next(c, 'close');
    const { status } = await herald.delete(`/api/connections/${encodeURIComponent(c.connectionId)}`);
    assert.equal(status, 200);
    const info = await closed;
    assert.equal(info.code, CloseCode.DISCONNECTED_BY_ADMIN);
    assert.equal(info.willReconnect, false);
    assert.equal(c.state, 'closed');
    assert.equal((await rejection(c.request({ type: 'ping' }))).code, ClientErrorCode.CLOSED);
    assert.deepEqual(events.filter(([t]) => t === 'reconnecting'), []);
  });

  test('close() stops for good; connect() later restores the same subscriptions', async () => {
    const c = open({ channels: ['campaigns'] });
    const events = record(c);
    await c.connect();
    await c.subscribe('emails');
    await c.joinRoom('campaign:5');
    const inFlight = c.request({ type: 'ping' }, { timeoutMs: 60_000 });
    c.close();
    assert.equal(c.state, 'closed');
    assert.equal((await rejection(inFlight)).code, ClientErrorCode.CLOSED);
    const closes = events.filter(([t]) => t === 'close');
    assert.equal(closes.length, 1);
    assert.equal(closes[0][1].willReconnect, false);
    assert.deepEqual(events.filter(([t]) => t === 'reconnecting'), []);
    assert.equal((await rejection(c.request({ type: 'ping' }))).code, ClientErrorCode.CLOSED);

    const welcome = next(c, 'welcome');
    await c.connect();
    assert.deepEqual((await welcome).channels, ['campaigns', 'emails']);
    assert.deepEqual(c.rooms, ['campaign:5']);
    const inRoom = next(c, 'room:event');
    await herald.post('/api/rooms/campaign:5/broadcast', { type: 'room:event' });
    await inRoom;
  });
});

describe('reconnect after Herald restarts on the same port', () => {
  let first;
  let second;
  let c;

  after(async () => {
    c?.close();
    await first?.stop();
    await second?.stop();
  });

  test('the client reconnects, restores channels and rooms, and receives new events', async () => {
    first = await startHerald();
    let tokens = 0;
    c = client(first.wsUrl, {
      channels: ['campaigns'],
      getToken: async () => `token-${++tokens}`,
    });
    const events = record(c);
    await c.connect();
    await c.subscribe(['emails', 'ai']);
    await c.unsubscribe('ai');
    await c.joinRoom('campaign:9');
    assert.equal(tokens, 1);

    const closed = next(c, 'close');
    const reconnected = next(c, 'ready', (e) => e.reconnect);
    await first.stop('SIGTERM');
    const info = await closed;
    assert.equal(info.code, CloseCode.GOING_AWAY);
    assert.equal(info.willReconnect, true);

    second = await startHerald({ port: first.port });
    const ready = await reconnected;
    assert.deepEqual(ready.welcome.channels, ['campaigns', 'emails']);
    assert.deepEqual(ready.rooms, ['campaign:9']);
    assert.ok(tokens >= 2, 'getToken is called before every attempt');
    assert.ok(events.some(([t, e]) => t === 'reconnecting' && e.attempt === 1));

    // The server agrees about what this connection is subscribed to.
    const { connections } = await second.get('/api/connections');
    assert.equal(connections.length, 1);
    assert.deepEqual([...connections[0].channels].sort(), ['campaigns', 'emails']);
    assert.deepEqual(connections[0].rooms, ['campaign:9']);

    const onChannel = next(c, 'email:sent');
    await second.publish({ channel: 'emails', event: { type: 'email:sent', email_id: 1 } });
    assert.equal((await onChannel).email_id, 1);
    const inRoom = next(c, 'campaign:completed');
    await second.post('/api/rooms/campaign:9/broadcast', { type: 'campaign:completed', campaign_id: 9 });
    assert.equal((await inRoom).campaign_id, 9);
  });
});

/** A scripted WebSocket server for failures Herald does not produce on demand. */
async function scriptedServer(onMessage, onConnection = () => {}) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => server.once('listening', resolve));
  const connections = [];
  server.on('connection', (socket, request) => {
    const conn = { socket, url: request.url, headers: request.headers, received: [], muted: false };
    connections.push(conn);
    server.emit('scripted-connection', conn);
    socket.on('message', (data) => {
      const message = JSON.parse(String(data));
      conn.received.push(message);
      server.emit('scripted-message', conn, message);
      if (conn.muted) return;
      const reply = (type, fields = {}) => socket.send(JSON.stringify({ type, ...fields, id: message.id }));
      if (onMessage(conn, message, reply) === undefined) {
        if (message.type === 'ping') reply('pong');
      }
    });
    socket.send(JSON.stringify({ type: 'connection', connection_id: `c${connections.length}`, heartbeat_interval: 30 }));
    onConnection(conn);
  });
  return {
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    connections,
    nextConnection: () => within(new Promise((r) => server.once('scripted-connection', r)), 'a connection'),
    close: () => {
      for (const client of server.clients) client.terminate();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('HeraldClient against a scripted server', () => {
  const cleanup = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  test('a request without a reply rejects with TIMEOUT', async () => {
    const server = await scriptedServer((conn, message) => (message.type === 'silent' ? 'ignored' : undefined));
    cleanup.push(server.close);
    const c = client(server.url);
    cleanup.push(() => c.close());
    await c.connect();
    const error = await rejection(c.request({ type: 'silent' }, { timeoutMs: 100 }));
    assert.equal(error.code, ClientErrorCode.TIMEOUT);
    assert.equal(c.state, 'ready');
  });

  test('a request in flight when the connection drops rejects with DISCONNECTED, then the client reconnects', async () => {
    const server = await scriptedServer((conn, message) => {
      if (message.type === 'drop') {
        conn.socket.close(1011, 'boom');
        return 'closed';
      }
      return undefined;
    });
    cleanup.push(server.close);
    const c = client(server.url);
    cleanup.push(() => c.close());
    await c.connect();
    const reconnected = next(c, 'ready', (e) => e.reconnect);
    const error = await rejection(c.request({ type: 'drop' }));
    assert.equal(error.code, ClientErrorCode.DISCONNECTED);
    assert.equal(error.closeCode, 1011);
    await reconnected;
    assert.equal(server.connections.length, 2);
  });

  test('the heartbeat watchdog pings a silent server, then gives up on it and reconnects', async () => {
    const server = await scriptedServer(() => undefined);
    cleanup.push(server.close);
    const c = client(server.url, { heartbeatTimeoutMs: 400 });
    cleanup.push(() => c.close());
    await c.connect();
    const dead = server.connections[0];
    dead.muted = true; // from now on this connection answers nothing
    const closed = next(c, 'close');
    const reconnected = next(c, 'ready', (e) => e.reconnect);
    const info = await closed;
    assert.equal(info.reason, 'heartbeat timeout');
    assert.equal(info.willReconnect, true);
    await reconnected;
    assert.ok(
      dead.received.some((m) => m.type === 'ping' && m.id === undefined),
      'an idle ping was sent before giving up',
    );
  });

  test('channels and rooms are restored on reconnect; a refused room is reported and forgotten', async () => {
    const server = await scriptedServer((conn, message, reply) => {
      if (message.type === 'join_room' && message.room === 'forbidden') {
        reply('error', { code: 'PERMISSION_DENIED', error: 'Permission denied' });
        return 'refused';
      }
      if (message.type === 'join_room') {
        reply('room_joined', { room: message.room });
        return 'joined';
      }
      if (message.type === 'subscribe') {
        reply('subscribed', { channels: message.channels });
        return 'subscribed';
      }
      return undefined;
    });
    cleanup.push(server.close);
    const c = client(server.url, { channels: ['a', 'with,comma'], rooms: ['ok', 'forbidden'] });
    cleanup.push(() => c.close());
    const errors = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    assert.deepEqual(c.rooms, ['ok']);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'PERMISSION_DENIED');

    // The server restarts (1012): the next connection gets the same channels and only the room
    // that was accepted.
    const reconnected = next(c, 'ready', (e) => e.reconnect);
    server.connections[0].socket.close(1012, 'restart');
    await reconnected;
    for (const conn of server.connections) {
      assert.equal(new URL(conn.url, 'ws://x').searchParams.get('channels'), 'a');
      assert.ok(conn.received.some((m) => m.type === 'subscribe' && m.channels.join() === 'with,comma'));
    }
    const second = server.connections[1];
    assert.deepEqual(
      second.received.filter((m) => m.type === 'join_room').map((m) => m.room),
      ['ok'],
    );
    assert.equal(errors.length, 1);
  });

  test('a hanging or failing getToken counts as a failed attempt and is retried', async () => {
    const server = await scriptedServer(() => undefined);
    cleanup.push(server.close);
    let calls = 0;
    const c = client(server.url, {
      connectTimeoutMs: 200,
      getToken: () => {
        calls += 1;
        if (calls === 1) return new Promise(() => {}); // never settles
        if (calls === 2) throw new Error('token service down');
        return `token-${calls}`;
      },
    });
    cleanup.push(() => c.close());
    const events = record(c);
    await within(c.connect(), 'connect() after two failed attempts');
    assert.equal(calls, 3);
    const reasons = events.filter(([t]) => t === 'reconnecting').map(([, e]) => e.lastClose.reason);
    assert.deepEqual(reasons, ['connect timeout', 'getToken failed']);
    assert.ok(events.some(([t, e]) => t === 'error' && e.code === ClientErrorCode.TOKEN_ERROR));
    assert.equal(server.connections.length, 1);
    assert.equal(server.connections[0].headers?.authorization, 'Bearer token-3');
  });

  test('a policy close (1008) is not retried and connect() rejects', async () => {
    const server = await scriptedServer(() => undefined, (conn) => conn.socket.close(1008, 'auth failed'));
    cleanup.push(server.close);
    const c = client(server.url);
    const events = record(c);
    const error = await rejection(c.connect());
    assert.equal(error.code, ClientErrorCode.CLOSED);
    assert.equal(error.closeCode, 1008);
    assert.equal(c.state, 'closed');
    assert.deepEqual(events.filter(([t]) => t === 'reconnecting'), []);
    assert.equal(events.filter(([t]) => t === 'close').at(-1)[1].willReconnect, false);
  });
});

describe('recover: true resumes streams after a reconnect', () => {
  let herald;
  const clients = [];

  before(async () => {
    herald = await startHerald({
      config: [
        '[[history]]',
        'channels = "orders*"',
        'size = 1000',
        '[[history]]',
        'rooms = "order_*"',
        'size = 1000',
        '[[history]]',
        'channels = "short*"',
        'size = 5',
      ].join('\n'),
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    await herald?.stop();
  });

  /**
   * A client that reconnects after the operator disconnect the test uses to cut it off, and that
   * runs `whileAway` on the attempt after the first: events published there are published while
   * the client has no connection at all.
   */
  function resumingClient(options, whileAway) {
    let attempts = 0;
    const c = client(herald.wsUrl, {
      recover: true,
      shouldReconnect: () => true,
      getToken: async () => {
        attempts += 1;
        if (attempts === 2) await whileAway();
        return '';
      },
      ...options,
    });
    clients.push(c);
    return c;
  }

  async function cutOff(c) {
    const reconnected = next(c, 'ready', (r) => r.reconnect, 'the ready after a reconnect');
    const { status } = await herald.delete(`/api/connections/${encodeURIComponent(c.connectionId)}`);
    assert.equal(status, 200);
    return reconnected;
  }

  test('events published while disconnected arrive once each, in order, before live ones', async () => {
    const publishChannel = (n) => herald.publish({ channel: 'orders', event: { type: 'order', n } });
    const publishRoom = (n) => herald.post('/api/rooms/order_1/broadcast', { type: 'order_room', n });
    const c = resumingClient({ channels: ['orders'], rooms: ['order_1'] }, async () => {
      for (let n = 3; n < 28; n++) await publishChannel(n);
      for (let n = 2; n < 7; n++) await publishRoom(n);
    });
    const channelEvents = [];
    const roomEvents = [];
    const gaps = [];
    c.on('order', (m) => channelEvents.push(m));
    c.on('order_room', (m) => roomEvents.push(m));
    c.on('gap', (g) => gaps.push(g));
    await c.connect();
    let seen = next(c, 'order', (m) => m.n === 2, 'the third channel event');
    for (let n = 0; n < 3; n++) await publishChannel(n);
    await seen;
    seen = next(c, 'order_room', (m) => m.n === 1, 'the second room event');
    for (let n = 0; n < 2; n++) await publishRoom(n);
    await seen;
    assert.equal(channelEvents[0].stream, 'c:orders');
    assert.equal(typeof channelEvents[0].seq, 'number');

    await cutOff(c);
    const liveChannel = next(c, 'order', (m) => m.n === 28, 'the live channel event after the replay');
    const liveRoom = next(c, 'order_room', (m) => m.n === 7, 'the live room event after the replay');
    await publishChannel(28);
    await publishRoom(7);
    await liveChannel;
    await liveRoom;

    assert.deepEqual(channelEvents.map((m) => m.n), Array.from({ length: 29 }, (_, n) => n));
    assert.deepEqual(roomEvents.map((m) => m.n), Array.from({ length: 8 }, (_, n) => n));
    const seqs = channelEvents.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.equal(new Set(seqs).size, seqs.length);
    assert.deepEqual(gaps, []);
    assert.equal(c.positions.get('c:orders').seq, channelEvents.at(-1).seq);
    assert.equal(c.positions.get('r:order_1').seq, roomEvents.at(-1).seq);
  });

  test('a gap history no longer covers is reported as a "gap" event; live events follow', async () => {
    const publish = (n) => herald.publish({ channel: 'shortlived', event: { type: 'tick', n } });
    const c = resumingClient({ channels: ['shortlived'] }, async () => {
      for (let n = 1; n < 21; n++) await publish(n);
    });
    const ticks = [];
    c.on('tick', (m) => ticks.push(m.n));
    await c.connect();
    const first = next(c, 'tick', (m) => m.n === 0, 'the first tick');
    await publish(0);
    const before = (await first).seq;
    const gap = next(c, 'gap');
    await cutOff(c);
    const reported = await gap;
    assert.equal(reported.stream, 'c:shortlived');
    assert.equal(reported.channel, 'shortlived');
    assert.equal(reported.from.seq, before);
    assert.equal(reported.seq, before + 20);
    const live = next(c, 'tick', (m) => m.n === 21, 'the live tick after the gap');
    await publish(21);
    assert.equal((await live).seq, before + 21);
    assert.deepEqual(ticks, [0, 21]);
  });

  test('a client without recover sees plain events, without positions', async () => {
    const c = client(herald.wsUrl, { channels: ['orders-plain'] });
    clients.push(c);
    await c.connect();
    const got = next(c, 'plain');
    await herald.publish({ channel: 'orders-plain', event: { type: 'plain', n: 1 } });
    assert.deepEqual(await got, { type: 'plain', n: 1 });
  });
});
