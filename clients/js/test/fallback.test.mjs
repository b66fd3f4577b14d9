// The fallback transports (SSE, NDJSON streaming) in Node against the real Herald binary, and the
// automatic fallback through nginx configured to refuse WebSocket upgrades. Every wait is for an
// event; timeouts only turn hangs into failures.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { HeraldClient } from '../dist/index.js';
import { sse, stream } from '../dist/fallback.js';
import { next, startHerald, within } from './helpers/herald.mjs';
import { startRefusingProxy } from './helpers/nginx.mjs';

const SECRET = 'js-client-fallback-secret-0123456789';
const fast = { initialDelayMs: 20, maxDelayMs: 200, multiplier: 2, jitter: 'full' };

function jwt(sub, seconds) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const claims = { sub, name: `name-${sub}`, exp: Math.floor(Date.now() / 1000) + seconds };
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

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
mode = "required"
jwt_secret = "${SECRET}"
on_expiry = "refresh"
refresh_ahead = "1h"

[presence]
enabled = true

[[history]]
channels = "jobs:*"

[[history]]
rooms = "chat:*"
`;

describe('fallback transports against Herald', () => {
  let herald;
  let proxy;
  const clients = [];
  const open = (options) => {
    const c = new HeraldClient({ WebSocket, reconnect: fast, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    herald = await startHerald({ config: CONFIG, args: ['--set', 'websocket.heartbeat_interval=1s'] });
    proxy = await startRefusingProxy({ heraldAddr: herald.addr });
  });

  after(async () => {
    for (const c of clients) c.close();
    await proxy?.close();
    await herald?.stop();
  });

  for (const transport of [sse, stream]) {
    test(`${transport.name}: subscribe, events, history, presence, publish, in-band refresh`, async () => {
      let calls = 0;
      const c = open({
        url: herald.wsUrl,
        transports: [transport],
        getToken: () => jwt(`u-${transport.name}`, calls++ === 0 ? 600 : 7200),
      });
      const refreshed = next(c, 'token_refreshed');
      await within(c.connect(), 'connect()');
      assert.equal(c.transport, transport.name);
      assert.equal(c.welcome.user_id, `u-${transport.name}`);
      assert.ok((await refreshed).expires_at > Date.now() / 1000 + 3600);

      const jobs = c.channel(`jobs:${transport.name}`);
      await within(jobs.subscribe(), 'subscribe()');
      assert.equal(jobs.state, 'subscribed');
      const got = once(jobs, 'job:done');
      await herald.publish({ channel: `jobs:${transport.name}`, event: { type: 'job:done', channel: `jobs:${transport.name}`, n: 1 } });
      assert.equal((await got).n, 1);
      const history = await within(jobs.history(), 'history()');
      assert.deepEqual(history.events.map((e) => e.n), [1]);

      const room = c.room(`chat:${transport.name}`);
      await within(room.subscribe(), 'join');
      assert.deepEqual((await room.presence()).map((m) => m.user_id), [`u-${transport.name}`]);
      const echoed = once(room, 'chat_message');
      const ack = await within(room.publish('over http'), 'publish()');
      assert.equal(ack.type, 'chat_message_ack');
      assert.equal((await echoed).content, 'over http');
      c.close();
    });
  }

  test('through a proxy that refuses WebSocket: falls back to SSE and resumes after a lost session', async () => {
    const c = open({
      url: `${proxy.url.replace('http', 'ws')}/ws`,
      token: jwt('behind-proxy', 7200),
      transports: ['websocket', sse, stream],
      recover: true,
      shouldReconnect: () => true,
    });
    const transports = [];
    c.on('open', (e) => transports.push(e.transport));
    await within(c.connect(), 'connect() through the proxy');
    assert.equal(c.transport, 'sse');
    assert.deepEqual(transports, ['sse']);

    const jobs = c.channel('jobs:proxy');
    await within(jobs.subscribe(), 'subscribe()');
    const seen = [];
    jobs.on('job:tick', (e) => seen.push(e.i));
    const first = once(jobs, 'job:tick', (e) => e.i === 1);
    await herald.publish({ channel: 'jobs:proxy', event: { type: 'job:tick', i: 1 } });
    await first;

    const back = once(jobs, 'subscribed');
    const lost = next(c, 'close');
    const kicked = await herald.delete(`/api/connections/${c.connectionId}`);
    assert.ok(kicked.status < 300, JSON.stringify(kicked));
    // The server's last message carries the close code, as a WebSocket close frame would.
    assert.equal((await lost).code, 4001);
    for (let i = 2; i <= 4; i++) await herald.publish({ channel: 'jobs:proxy', event: { type: 'job:tick', i } });
    await back;
    const last = once(jobs, 'job:tick', (e) => e.i === 5);
    await herald.publish({ channel: 'jobs:proxy', event: { type: 'job:tick', i: 5 } });
    await last;
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    assert.deepEqual(transports, ['sse', 'sse'], 'the working transport is kept for the session');
  });
});
