// Pure functions: backoff delays, the reconnect rule, URL building, name checks, positions.
// No server, no timers.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  backoffCap,
  buildConnectUrl,
  CloseCode,
  computeBackoffDelay,
  DEFAULT_RECONNECT,
  defaultShouldReconnect,
  nameProblem,
  normalizeReconnect,
  PositionTracker,
  defaultStreamOf,
} from '../dist/index.js';

const options = { initialDelayMs: 100, maxDelayMs: 5_000, multiplier: 2, jitter: 'none' };

describe('backoff', () => {
  test('without jitter the delay doubles per attempt until the cap', () => {
    const delays = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => computeBackoffDelay(n, options));
    assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  });

  test('delay windows never shrink and stay capped, even for absurd attempt numbers', () => {
    let previous = 0;
    for (let attempt = 1; attempt <= 2000; attempt++) {
      const cap = backoffCap(attempt, options);
      assert.ok(cap >= previous, `attempt ${attempt}: ${cap} < ${previous}`);
      assert.ok(cap <= options.maxDelayMs);
      previous = cap;
    }
    assert.equal(backoffCap(2000, options), 5000);
  });

  test('full jitter draws from [0, cap]: the random source scales the window', () => {
    const full = { ...options, jitter: 'full' };
    assert.equal(computeBackoffDelay(4, full, () => 0), 0);
    assert.equal(computeBackoffDelay(4, full, () => 0.5), 400);
    assert.equal(computeBackoffDelay(4, full, () => 1), 800);
    // With the same draw, later attempts wait longer.
    const sameDraw = [1, 2, 3, 4, 5].map((n) => computeBackoffDelay(n, full, () => 0.75));
    assert.deepEqual(sameDraw, [75, 150, 300, 600, 1200]);
  });

  test('equal jitter keeps at least half the window', () => {
    const equal = { ...options, jitter: 'equal' };
    assert.equal(computeBackoffDelay(3, equal, () => 0), 200);
    assert.equal(computeBackoffDelay(3, equal, () => 1), 400);
  });

  test('a broken random source cannot produce a negative or NaN delay', () => {
    const full = { ...options, jitter: 'full' };
    assert.equal(computeBackoffDelay(2, full, () => -3), 0);
    assert.equal(computeBackoffDelay(2, full, () => Number.NaN), 0);
    assert.equal(computeBackoffDelay(2, full, () => 7), 200);
  });

  test('defaults and validation', () => {
    assert.deepEqual(normalizeReconnect(undefined), { ...DEFAULT_RECONNECT });
    assert.equal(normalizeReconnect({ initialDelayMs: 10, maxDelayMs: 20 }).multiplier, 2);
    assert.throws(() => normalizeReconnect({ multiplier: 0.5 }), RangeError);
    assert.throws(() => normalizeReconnect({ initialDelayMs: 100, maxDelayMs: 10 }), RangeError);
    assert.throws(() => normalizeReconnect({ jitter: 'sometimes' }), RangeError);
  });
});

describe('reconnect rule', () => {
  test('reconnects after shutdown, network failures, idle and slow-consumer closes', () => {
    for (const code of [1000, 1001, 1006, 1009, 1011, 1012, 1013, 4000, 4008, 4999]) {
      assert.equal(defaultShouldReconnect({ code }), true, `code ${code}`);
    }
  });

  test('does not reconnect after policy, protocol and operator closes', () => {
    for (const code of [1002, 1003, 1007, 1008, 1010, 3000, 3003, 4001]) {
      assert.equal(defaultShouldReconnect({ code }), false, `code ${code}`);
    }
  });

  test('an expired token is retried only when a fresh one can be fetched', () => {
    assert.equal(defaultShouldReconnect({ code: CloseCode.TOKEN_EXPIRED }, { canRefreshToken: false }), false);
    assert.equal(defaultShouldReconnect({ code: CloseCode.TOKEN_EXPIRED }, { canRefreshToken: true }), true);
  });
});

describe('connection URL', () => {
  test('channels, client id, user id, extra parameters and an encoded token', () => {
    const { url, urlChannels } = buildConnectUrl('ws://127.0.0.1:8000/ws/campaigns?campaign_id=123', {
      channels: ['campaigns', 'emails'],
      token: 'a b&c=d/é',
      clientId: 'user123',
      userId: '42',
      params: { resume: 'x' },
    });
    const parsed = new URL(url);
    assert.equal(parsed.pathname, '/ws/campaigns');
    assert.equal(parsed.searchParams.get('campaign_id'), '123');
    assert.equal(parsed.searchParams.get('channels'), 'campaigns,emails');
    assert.equal(parsed.searchParams.get('client_id'), 'user123');
    assert.equal(parsed.searchParams.get('user_id'), '42');
    assert.equal(parsed.searchParams.get('resume'), 'x');
    assert.equal(parsed.searchParams.get('token'), 'a b&c=d/é');
    assert.ok(!url.includes('a b&c'), 'the token is URL-encoded');
    assert.deepEqual(urlChannels, ['campaigns', 'emails']);
  });

  test('channels Herald would split or trim in a URL are left for a subscribe message', () => {
    const { url, urlChannels } = buildConnectUrl('ws://h/ws', { channels: ['a,b', ' padded', 'plain'] });
    assert.deepEqual(urlChannels, ['plain']);
    assert.equal(new URL(url).searchParams.get('channels'), 'plain');
  });

  test('a very long channel list is cut; the rest is subscribed by message', () => {
    const many = Array.from({ length: 500 }, (_, i) => `channel-number-${i}`);
    const { url, urlChannels } = buildConnectUrl('ws://h/ws', { channels: many });
    assert.ok(urlChannels.length > 0 && urlChannels.length < many.length);
    assert.ok(url.length < 2600, `URL is ${url.length} characters`);
  });

  test('http(s) URLs become ws(s)', () => {
    assert.ok(buildConnectUrl('https://h/ws', { channels: [] }).url.startsWith('wss://h/ws'));
    assert.throws(() => buildConnectUrl('ftp://h/ws', { channels: [] }), /unsupported URL scheme/);
  });

  test('names Herald refuses are caught before sending', () => {
    assert.equal(nameProblem('campaign:123'), undefined);
    assert.match(nameProblem(''), /empty/);
    assert.match(nameProblem('x'.repeat(201)), /201 bytes/);
    assert.match(nameProblem('é'.repeat(101)), /202 bytes/);
    assert.match(nameProblem('a\u0000b'), /control/);
    assert.match(nameProblem('a\u0085b'), /control/);
  });
});

describe('stream positions', () => {
  test('the last seq per stream, forward only within an epoch, reset by a new epoch', () => {
    const tracker = new PositionTracker(defaultStreamOf);
    tracker.observe({ type: 'x', channel: 'campaigns', seq: 4, epoch: 'e1' });
    tracker.observe({ type: 'x', channel: 'campaigns', seq: 3, epoch: 'e1' });
    tracker.observe({ type: 'x', room: 'campaign:1', seq: 9 });
    tracker.observe({ type: 'x', room: 'campaign:1' });
    tracker.observe({ type: 'x', seq: 5 });
    assert.deepEqual(Object.fromEntries(tracker.snapshot()), {
      'channel:campaigns': { seq: 4, epoch: 'e1' },
      'room:campaign:1': { seq: 9 },
    });
    tracker.observe({ type: 'x', channel: 'campaigns', seq: 1, epoch: 'e2' });
    assert.deepEqual(tracker.snapshot().get('channel:campaigns'), { seq: 1, epoch: 'e2' });
  });

  test('a reported position starts a stream but never moves one back; delete forgets it', () => {
    const tracker = new PositionTracker(defaultStreamOf);
    tracker.reset('c:jobs', { seq: 41, epoch: 'e1' });
    tracker.observe({ type: 'x', stream: 'c:jobs', seq: 43, epoch: 'e1' });
    tracker.reset('c:jobs', { seq: 42, epoch: 'e1' });
    assert.deepEqual(tracker.snapshot().get('c:jobs'), { seq: 43, epoch: 'e1' });
    tracker.reset('c:jobs', { seq: 7, epoch: 'e2' });
    assert.deepEqual(tracker.snapshot().get('c:jobs'), { seq: 7, epoch: 'e2' });
    assert.deepEqual(tracker.get('c:jobs'), { seq: 7, epoch: 'e2' });
    assert.equal(tracker.get('c:other'), undefined);
    tracker.delete('c:jobs');
    assert.equal(tracker.size, 0);
  });
});
