// @herald/publisher against a real Herald node with a real Redis: what a WebSocket client receives
// for each publish, over HTTP and over Redis, and the errors.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import { after, before, describe, test } from 'node:test';

import {
  HeraldConnectionError,
  HeraldHTTPError,
  HeraldNotDeliveredError,
  HeraldPublisher,
  HeraldTargetError,
  buildEvent,
} from '../dist/index.js';
import { API_KEY, freePort, proxy, startHerald, startRedis, subscriber, within } from './helpers.mjs';

const PREFIX = 'myapp';
const unique = (stem) => `${stem}-${randomUUID().slice(0, 8)}`;

describe('@herald/publisher against Herald and Redis', () => {
  let redis;
  let herald;

  before(async () => {
    redis = await startRedis();
    herald = await startHerald({ args: ['--redis-url', redis.url, '--set', `redis.prefixes=["${PREFIX}"]`] });
    // Herald pattern-subscribes to <prefix>:* at start; a Redis publish before that reaches nobody.
    const probe = HeraldPublisher.redis({ url: redis.url, prefix: PREFIX, requireReceiver: true });
    try {
      await within(
        (async () => {
          for (;;) {
            try {
              return await probe.publish({ type: 'probe' }, { channel: 'probe' });
            } catch (error) {
              if (!(error instanceof HeraldNotDeliveredError)) throw error;
              await new Promise((r) => setTimeout(r, 20));
            }
          }
        })(),
        "Herald's pattern subscription",
      );
    } finally {
      await probe.close();
    }
  });

  after(async () => {
    await herald?.stop();
    redis?.stop();
  });

  describe('HTTP', () => {
    test('channel, room and user events reach their connections, over one kept-alive connection', async () => {
      const channel = unique('orders');
      const room = unique('order');
      const client = await subscriber(herald, `channels=${channel}&user_id=u-${room}`);
      await client.request({ type: 'join_room', room });
      const publisher = HeraldPublisher.http(herald.httpUrl, { apiKey: API_KEY });
      try {
        const result = await publisher.publish({ type: 'order:shipped', n: 1 }, { channel });
        assert.deepEqual(result, { transport: 'http', localOnly: false });
        assert.deepEqual(await client.next((m) => m.type === 'order:shipped'), { type: 'order:shipped', n: 1 });
        await publisher.publishToRoom(room, { type: 'room:event' });
        assert.deepEqual(await client.next((m) => m.type === 'room:event'), { type: 'room:event', room });
        await publisher.notifyUser(`u-${room}`, { type: 'user:event' });
        assert.equal((await client.next((m) => m.type === 'user:event')).user_id, `u-${room}`);
        const built = buildEvent('order:packed', channel, ['order:{order_id}'], { order_id: 7, note: null });
        await publisher.publishEvent(built);
        const packed = await client.next((m) => m.type === 'order:packed');
        assert.equal(packed.order_id, 7);
        assert.equal(packed.room, 'order:7');
        assert.ok(!('note' in packed));
        assert.equal(publisher.transport.socketsOpened, 1);
      } finally {
        await publisher.close();
        client.close();
      }
    });

    test("Herald's refusals carry its code", async () => {
      const wrongKey = HeraldPublisher.http(herald.httpUrl, { apiKey: 'not-the-key' });
      const publisher = HeraldPublisher.http(herald.httpUrl, { apiKey: API_KEY });
      try {
        const refused = await wrongKey.publish({ type: 'x' }, { channel: 'c' }).catch((e) => e);
        assert.ok(refused instanceof HeraldHTTPError, String(refused));
        assert.ok([401, 403].includes(refused.status));
        assert.equal(refused.code, 'AUTHENTICATION_FAILED');
        const invalid = await publisher.publish({ type: 'x' }, { channel: 'bad\u0001name' }).catch((e) => e);
        assert.ok(invalid instanceof HeraldHTTPError);
        assert.equal(invalid.code, 'INVALID_NAME');
        await assert.rejects(publisher.publish({ type: 'x' }), (e) => e instanceof HeraldHTTPError && e.code === 'NO_TARGET');
      } finally {
        await wrongKey.close();
        await publisher.close();
      }
    });

    test('a message whose answer was lost is retried with its idempotency key and stored once', async () => {
      const room = unique('support');
      const lossy = await proxy(herald.addr, { loseAnswers: 1 });
      const publisher = HeraldPublisher.http(lossy.url, { apiKey: API_KEY, retryDelayMs: 10 });
      try {
        const posted = await publisher.postMessage(room, 'ticket opened', { idempotencyKey: 'k-1' });
        // The first answer was lost; the retry found the stored message.
        assert.equal(posted.duplicate, true);
        assert.equal(posted.message.content, 'ticket opened');
        assert.equal(publisher.transport.socketsOpened, 2);
        const history = await herald.get(`/api/rooms/${encodeURIComponent(room)}/messages`);
        assert.deepEqual(
          history.messages.map((m) => m.content),
          ['ticket opened'],
        );
      } finally {
        await publisher.close();
        await lossy.close();
      }
    });

    test('a publish whose answer was lost is not retried (it has no idempotency key)', async () => {
      const channel = unique('once');
      const client = await subscriber(herald, `channels=${channel}`);
      const lossy = await proxy(herald.addr, { loseAnswers: 1 });
      const publisher = HeraldPublisher.http(lossy.url, { apiKey: API_KEY, retryDelayMs: 10 });
      try {
        await assert.rejects(publisher.publish({ type: 'once' }, { channel }), HeraldConnectionError);
        assert.equal(publisher.transport.attempts, 1);
        await client.next((m) => m.type === 'once');
        // A marker published after it arrives, and the event came exactly once before it.
        await herald.publish({ channel, event: { type: 'marker' } });
        await client.next((m) => m.type === 'marker');
        assert.equal(client.seen.filter((m) => m.type === 'once').length, 1);
      } finally {
        await publisher.close();
        await lossy.close();
        client.close();
      }
    });

    test("a publish refused by Herald's in-flight cap (503, Retry-After) is retried and delivered", async () => {
      const busy = await startHerald({ args: ['--set', 'server.max_requests_in_flight=1'] });
      const channel = unique('busy');
      const client = await subscriber(busy, `channels=${channel}`);
      // A request whose body never comes holds the only place. A probe that reaches Herald first
      // takes the place instead, and the stalled request is refused and closed: then stall again.
      let stall;
      const openStall = async () => {
        stall?.destroy();
        stall = tcpConnect(busy.port, '127.0.0.1');
        stall.on('error', () => {});
        await new Promise((resolveConnect) => stall.once('connect', resolveConnect));
        stall.refused = false;
        stall.once('data', () => {
          stall.refused = true;
        });
        stall.write(`POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`);
      };
      await openStall();
      const retries = [];
      const publisher = HeraldPublisher.http(busy.httpUrl, {
        apiKey: API_KEY,
        onRetry: (info) => {
          retries.push(info);
          stall.destroy(); // frees the place before the retry
        },
      });
      try {
        // The stalled request must hold the place before the publish is sent: wait until Herald
        // refuses a probe. The loop ends with the wait, so a failure cannot keep the process alive.
        let waiting = true;
        await within(
          (async () => {
            while (waiting) {
              const response = await fetch(`${busy.httpUrl}/health`).catch(() => undefined);
              if (response?.status === 503 && response.headers.get('retry-after') !== null) return;
              if (stall.refused) await openStall();
              await new Promise((r) => setTimeout(r, 20));
            }
          })(),
          'the stalled request to hold the only place',
        ).finally(() => {
          waiting = false;
        });
        await publisher.publish({ type: 'busy:ok' }, { channel });
        assert.equal(retries.length, 1);
        assert.equal(retries[0].reason, 'HTTP 503');
        assert.ok(retries[0].delayMs >= 1000);
        await client.next((m) => m.type === 'busy:ok');
      } finally {
        stall.destroy();
        await publisher.close();
        client.close();
        await busy.stop();
      }
    });

    test('an unreachable Herald is retried, then reported', async () => {
      const port = await freePort();
      const publisher = HeraldPublisher.http(`http://127.0.0.1:${port}`, { apiKey: API_KEY, retries: 2, retryDelayMs: 5 });
      try {
        await assert.rejects(publisher.publish({ type: 'x' }, { channel: 'c' }), (e) => {
          assert.ok(e instanceof HeraldConnectionError);
          assert.equal(e.cause.code, 'ECONNREFUSED');
          return true;
        });
        assert.equal(publisher.transport.attempts, 3);
      } finally {
        await publisher.close();
      }
    });
  });

  describe('Redis', () => {
    test('PUBLISH on the prefixed channel reaches channel, room and user', async () => {
      const channel = unique('campaigns');
      const room = unique('campaign');
      const client = await subscriber(herald, `channels=${channel}&user_id=r-${room}`);
      await client.request({ type: 'join_room', room });
      const publisher = HeraldPublisher.redis({ url: redis.url, prefix: PREFIX, requireReceiver: true });
      try {
        const result = await publisher.publish({ type: 'campaign:paused', id: 1 }, { channel });
        assert.equal(result.transport, 'redis');
        assert.ok(result.receivers >= 1);
        assert.deepEqual(await client.next((m) => m.type === 'campaign:paused'), { type: 'campaign:paused', id: 1 });
        // Room-only: carried on the direct channel with the room field.
        await publisher.publishToRoom(room, { type: 'campaign:stats' });
        assert.deepEqual(await client.next((m) => m.type === 'campaign:stats'), { type: 'campaign:stats', room });
        await publisher.notifyUser(`r-${room}`, { type: 'campaign:note' });
        await client.next((m) => m.type === 'campaign:note');
      } finally {
        await publisher.close();
        client.close();
      }
    });

    test('local checks, a prefix nobody reads, and an unreachable Redis', async () => {
      const publisher = HeraldPublisher.redis({ url: redis.url, prefix: PREFIX });
      const nobody = HeraldPublisher.redis({ url: redis.url, prefix: 'nobody-reads-this', requireReceiver: true });
      const port = await freePort();
      const down = HeraldPublisher.redis({ url: `redis://127.0.0.1:${port}/0`, prefix: PREFIX, timeoutMs: 1000 });
      try {
        await assert.rejects(publisher.publish({ type: 'x' }), (e) => e instanceof HeraldTargetError && e.code === 'NO_TARGET');
        await assert.rejects(
          publisher.publish({ type: 'x', room: 'a' }, { room: 'b' }),
          (e) => e instanceof HeraldTargetError && e.code === 'CONFLICTING_TARGET',
        );
        await assert.rejects(
          publisher.publish({ type: 'x' }, { channel: 'x'.repeat(201) }),
          (e) => e instanceof HeraldTargetError && e.code === 'INVALID_NAME',
        );
        await assert.rejects(nobody.publish({ type: 'x' }, { channel: 'c' }), HeraldNotDeliveredError);
        await assert.rejects(down.publish({ type: 'x' }, { channel: 'c' }), HeraldConnectionError);
      } finally {
        await publisher.close();
        await nobody.close();
        await down.close();
      }
    });
  });

  test('fromEnv picks the transport from the environment', async () => {
    const http = HeraldPublisher.fromEnv({ HERALD_URL: herald.httpUrl, HERALD_API_KEY: API_KEY });
    assert.equal(http.transport.name, 'http');
    const viaRedis = HeraldPublisher.fromEnv({ REDIS_URL: redis.url, HERALD_REDIS_PREFIX: PREFIX });
    assert.equal(viaRedis.transport.name, 'redis');
    assert.throws(() => HeraldPublisher.fromEnv({ REDIS_URL: redis.url }), /HERALD_REDIS_PREFIX/);
    assert.throws(() => HeraldPublisher.fromEnv({}), /HERALD_URL/);
    await http.close();
    await viaRedis.close();
  });
});
