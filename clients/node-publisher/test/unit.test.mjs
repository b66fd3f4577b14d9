// Routing and event building: pure functions, no I/O (the built package, as users get it).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_ROUTING, HeraldConfigError, HeraldPublisher, buildEvent, httpPublishBody, redisMessage } from '../dist/index.js';

test('redisMessage: channel, room field, direct channel for room-only and user-only events', () => {
  assert.deepEqual(redisMessage({ type: 'a' }, 'app', DEFAULT_ROUTING, { channel: 'c', room: 'r' }), [
    'app:c',
    '{"type":"a","room":"r"}',
  ]);
  assert.deepEqual(redisMessage({ type: 'a' }, 'app', DEFAULT_ROUTING, { userId: 42 }), ['app:_direct', '{"type":"a","user_id":42}']);
  // A room already in the event routes it.
  assert.equal(redisMessage({ type: 'a', room: 'r' }, 'app', DEFAULT_ROUTING, {})[0], 'app:_direct');
  assert.throws(() => redisMessage([], 'app', DEFAULT_ROUTING, { channel: 'c' }), /INVALID_EVENT/);
});

test('httpPublishBody: explicit targets, written into the event, and fields that route', () => {
  assert.deepEqual(httpPublishBody({ type: 'a' }, DEFAULT_ROUTING, { channel: 'c', userId: 'u' }), {
    channel: 'c',
    user_id: 'u',
    event: { type: 'a', user_id: 'u' },
  });
  assert.deepEqual(httpPublishBody({ type: 'a', room: 'r' }, DEFAULT_ROUTING, {}), { room: 'r', event: { type: 'a', room: 'r' } });
  const explicitOnly = { ...DEFAULT_ROUTING, routeFromFields: false };
  assert.deepEqual(httpPublishBody({ type: 'a', room: 'r' }, explicitOnly, { channel: 'c' }), {
    channel: 'c',
    event: { type: 'a', room: 'r' },
  });
});

test('buildEvent: type, fields, room template, derived fields, timestamp; extra cannot replace', () => {
  const now = new Date('2024-01-15T10:30:00.123Z');
  const event = buildEvent('campaign:stats', 'campaigns', ['lead:{lead_id}', 'campaign:{campaign_id}'], { campaign_id: 5, sent: 1, total: 3, gone: undefined }, {
    derived: [['percent', 'percent', ['sent', 'total']]],
    fixed: { source: 'api' },
    now,
  });
  assert.deepEqual(event, {
    type: 'campaign:stats',
    channel: 'campaigns',
    room: 'campaign:5',
    payload: { type: 'campaign:stats', campaign_id: 5, sent: 1, total: 3, source: 'api', percent: 33.3, room: 'campaign:5', timestamp: '2024-01-15T10:30:00.123Z' },
  });
  assert.throws(() => buildEvent('a', undefined, [], { x: 1 }, { extra: { x: 2 } }), TypeError);
  assert.throws(() => buildEvent('a', undefined, [], {}, { extra: { timestamp: 'now' } }), TypeError);
});

test('configuration errors name what is missing', () => {
  assert.throws(() => HeraldPublisher.http(''), HeraldConfigError);
  assert.throws(() => HeraldPublisher.http('ws://127.0.0.1:1'), /http:\/\/ or https:\/\//);
  assert.throws(() => HeraldPublisher.redis({ url: 'redis://127.0.0.1:1', prefix: '' }), /prefix/);
  assert.throws(() => HeraldPublisher.fromEnv({ HERALD_URL: 'http://x', HERALD_TIMEOUT: 'soon' }), /HERALD_TIMEOUT/);
});
