// The pages Herald serves itself, in Debian's Chromium: the live dashboard and the test console.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { launchChromium } from './helpers/browser.mjs';
import { API_KEY, startHerald, WAIT_MS, within } from './helpers/herald.mjs';
import WebSocket from 'ws';

const wait = { timeout: WAIT_MS };

describe('pages served by herald, in Chromium', () => {
  let browser;
  let herald;

  before(async () => {
    herald = await startHerald();
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await herald?.stop();
  });

  async function openConsole() {
    const page = await browser.context.newPage();
    await page.goto(`${herald.httpUrl}/console`);
    await page.click('#connect');
    await page.waitForSelector('#status.connected', wait);
    return page;
  }

  test('the pages run under a strict Content-Security-Policy: hashed scripts, their own origin only', async () => {
    const host = new URL(herald.httpUrl).host;
    for (const path of ['/', '/console']) {
      const response = await fetch(`${herald.httpUrl}${path}`);
      const csp = response.headers.get('content-security-policy') ?? '';
      const directive = (name) => csp.split(';').map((d) => d.trim()).find((d) => d.startsWith(`${name} `)) ?? '';
      const script = directive('script-src');
      assert.ok(!script.includes('unsafe-inline'), `${path}: ${csp}`);
      assert.match(script, /'sha256-[A-Za-z0-9+/]+={0,2}'/, `${path}: ${csp}`);
      const style = directive('style-src');
      assert.ok(!style.includes('unsafe-inline'), `${path}: ${csp}`);
      assert.match(style, /'sha256-[A-Za-z0-9+/]+={0,2}'/, `${path}: ${csp}`);
      const connect = directive('connect-src').split(/\s+/).slice(1);
      assert.deepEqual(connect, ["'self'", `ws://${host}`, `wss://${host}`], `${path}: ${csp}`);
    }

    // Both pages do their work under it, with no violation reported.
    const violations = [];
    const watch = (page) => page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
    });
    const consolePage = await browser.context.newPage();
    watch(consolePage);
    await consolePage.goto(`${herald.httpUrl}/console`);
    await consolePage.click('#connect');
    await consolePage.waitForSelector('#status.connected', wait);
    await consolePage.fill('#message', '{"type":"ping","id":"csp-ping"}');
    await consolePage.click('#send');
    await consolePage.waitForFunction(() => /"type":"pong".*csp-ping/.test(document.getElementById('log').textContent), null, wait);
    const dashboard = await browser.context.newPage();
    watch(dashboard);
    await dashboard.goto(`${herald.httpUrl}/`);
    await dashboard.waitForSelector('#stream.ok', wait);
    await dashboard.fill('#api-key', API_KEY);
    await dashboard.click('#key-form button');
    await dashboard.waitForFunction(() => window.dashboard.state.frames > 0, null, wait);
    await dashboard.waitForFunction(() => document.getElementById('nodes').textContent.length > 0, null, wait);
    assert.deepEqual(violations, []);

    // A WebSocket to any other host is refused by the policy.
    const refused = await consolePage.evaluate(() => new Promise((resolve) => {
      document.addEventListener('securitypolicyviolation', (e) => resolve(e.effectiveDirective), { once: true });
      try {
        new WebSocket('ws://127.0.0.2:9/elsewhere');
      } catch (error) {
        resolve(String(error));
      }
    }));
    assert.match(refused, /connect-src|SecurityError/);
    await consolePage.close();
    await dashboard.close();
  });

  test('the test console connects, subscribes, sends, publishes and shows every frame', async () => {
    const page = await openConsole();
    await page.waitForFunction(() => document.getElementById('log').textContent.includes('"type":"connection"'), null, wait);
    await page.fill('#channel', 'news');
    await page.click('#subscribe');
    await page.waitForFunction(() => document.getElementById('log').textContent.includes('"type":"subscribed"'), null, wait);
    // A backend publishes: the event shows up.
    await herald.publish({ channel: 'news', event: { type: 'headline', text: 'from the test' } });
    await page.waitForFunction(() => document.getElementById('log').textContent.includes('from the test'), null, wait);
    // Any JSON, both directions.
    await page.fill('#message', '{"type":"ping","id":"console-ping"}');
    await page.click('#send');
    await page.waitForFunction(() => /"type":"pong".*console-ping/.test(document.getElementById('log').textContent), null, wait);
    // Publishing through the API from the page itself.
    await page.fill('#pub-channel', 'news');
    await page.fill('#pub-event', '{"type":"from-console","n":7}');
    await page.fill('#pub-key', API_KEY);
    await page.click('#publish');
    await page.waitForFunction(() => document.getElementById('log').textContent.includes('"type":"from-console"'), null, wait);
    const counts = await page.evaluate(() => window.consoleState);
    assert.ok(counts.in >= 5 && counts.out >= 2, JSON.stringify(counts));
    await page.close();
  });

  test('the dashboard shows connections, rooms and a chart that moves, rendering names as text', async () => {
    const dashboard = await browser.context.newPage();
    await dashboard.goto(`${herald.httpUrl}/`);
    await dashboard.waitForSelector('#stream.ok', wait);
    await dashboard.fill('#api-key', API_KEY);
    await dashboard.click('#key-form button');
    await dashboard.waitForFunction(() => window.dashboard.state.frames > 0, null, wait);
    // Only the dashboard's own stats stream is open (the console test closed its page), and
    // watching the node is not being one of its clients.
    await dashboard.waitForFunction(() => window.dashboard.state.last.total_connections === 0, null, wait);
    const before = 0;

    // A connection opened elsewhere appears.
    const consolePage = await openConsole();
    await dashboard.waitForFunction(
      (n) => Number(document.getElementById('connections').textContent) >= n + 1,
      before,
      wait,
    );
    // A hostile room name is listed as text, never run.
    const hostile = '<img src=x onerror="window.pwned=1">';
    await consolePage.fill('#room', hostile);
    await consolePage.click('#join');
    await consolePage.waitForFunction(() => document.getElementById('log').textContent.includes('"type":"room_joined"'), null, wait);
    await dashboard.waitForFunction((name) => document.getElementById('rooms').textContent.includes(name), hostile, wait);
    assert.equal(await dashboard.evaluate(() => window.pwned), undefined);
    assert.equal(await dashboard.locator('#rooms img').count(), 0);

    // Publishing makes the deliveries line move.
    await consolePage.fill('#channel', 'ticks');
    await consolePage.click('#subscribe');
    await consolePage.waitForFunction(() => document.getElementById('log').textContent.includes('"channels":["ticks"]'), null, wait);
    let publishing = true;
    const publisher = (async () => {
      for (let i = 0; publishing && i < 2000; i++) {
        await herald.publish({ channel: 'ticks', event: { type: 'tick', i } });
      }
    })();
    await dashboard.waitForFunction(() => window.dashboard.series.deliveries.some((v) => v > 0), null, wait);
    await dashboard.waitForFunction(() => window.dashboard.series.publishes.some((v) => v > 0), null, wait);
    publishing = false;
    await publisher;
    if (process.env.HERALD_SCREENSHOT) {
      mkdirSync(new URL('.', `file://${process.env.HERALD_SCREENSHOT}`).pathname, { recursive: true });
      await dashboard.setViewportSize({ width: 1280, height: 900 });
      await dashboard.screenshot({ path: process.env.HERALD_SCREENSHOT, fullPage: true });
    }
    await consolePage.close();
    await dashboard.close();
  });
});

describe('the operator dashboard, in Chromium', () => {
  let browser;
  let herald;
  const sockets = [];

  before(async () => {
    herald = await startHerald({ config: '[presence]\nenabled = true\n\n[[history]]\nchannels = "hist*"\n' });
    browser = await launchChromium();
  });

  after(async () => {
    for (const ws of sockets) ws.terminate();
    await browser?.close();
    await herald?.stop();
  });

  /** A WebSocket client of the node, with every frame it got and a way to wait for one. */
  async function client(userId) {
    const ws = new WebSocket(`${herald.wsUrl}?user_id=${encodeURIComponent(userId)}`);
    sockets.push(ws);
    const frames = [];
    const waiters = [];
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data));
      frames.push(frame);
      for (const w of [...waiters]) if (w.predicate(frame)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(frame); }
    });
    const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
    const frame = (predicate, what) => {
      const seen = frames.find(predicate);
      if (seen) return Promise.resolve(seen);
      return within(new Promise((resolve) => waiters.push({ predicate, resolve })), `a frame: ${what}`);
    };
    const welcome = await frame((f) => f.type === 'connection', 'the welcome');
    return { ws, frames, frame, closed: () => within(closed, `${userId}'s socket to close`), id: welcome.connection_id };
  }

  /** A dashboard page; with `key`, the key is entered. Records failed responses and console errors. */
  async function open({ key, width = 1280 } = {}) {
    const page = await browser.context.newPage();
    await page.setViewportSize({ width, height: 900 });
    const failures = [];
    const errors = [];
    page.on('response', (r) => { if (r.status() >= 400) failures.push(`${r.status()} ${r.url()}`); });
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${herald.httpUrl}/`);
    await page.waitForSelector('#stream.ok', wait);
    if (key !== undefined) {
      await page.fill('#api-key', key);
      await page.click('#key-form button');
    }
    return { page, failures, errors };
  }

  /** Resolves once the page's own 2 s poll has run `n` more times. */
  async function polls(page, n) {
    const start = await page.evaluate(() => window.dashboard.state.polls);
    await page.waitForFunction((target) => window.dashboard.state.polls >= target, start + n, wait);
  }

  test('without a key it asks for one and polls nothing that fails; a wrong key is tried once', async () => {
    const { page, failures, errors } = await open();
    await page.waitForFunction(() => window.dashboard.state.frames > 0, null, wait);
    await polls(page, 2);
    assert.deepEqual(failures, []);
    assert.deepEqual(errors, []);
    assert.match(await page.textContent('#key-notice'), /Enter the API key/);
    assert.ok(await page.isVisible('#key-notice'));
    assert.equal(await page.textContent('#key-state'), 'no API key');
    assert.ok(await page.isDisabled('#publish-form button'));
    // The public figures still show.
    await page.waitForFunction(() => document.getElementById('nodes').childElementCount > 0, null, wait);

    // A wrong key: one refusal, then a clear state and no more requests.
    await page.fill('#api-key', 'not-the-key');
    await page.click('#key-form button');
    await page.waitForSelector('#key-state.bad', wait);
    await polls(page, 2);
    assert.equal(failures.filter((f) => f.startsWith('401')).length, 1, failures.join('\n'));
    assert.match(await page.textContent('#key-notice'), /refused the API key/);
    await page.close();
  });

  test('at phone width nothing overflows and no header breaks inside a word', async () => {
    const long = `room-${'x'.repeat(150)}`;
    const member = await client('phone-user');
    member.ws.send(JSON.stringify({ type: 'join_room', room: long }));
    await member.frame((f) => f.type === 'room_joined' || f.type === 'room_state', 'joined the long room');
    const { page, errors } = await open({ key: API_KEY, width: 420 });
    await page.waitForFunction((name) => document.getElementById('rooms').textContent.includes(name), long, wait);
    await page.waitForFunction(() => /^v\d/.test(document.getElementById('version').textContent), null, wait);
    await page.waitForFunction(() => window.dashboard.state.chart.xTicks.length >= 2, null, wait);
    const layout = await page.evaluate(() => {
      const doc = document.documentElement;
      // A word broken across lines has more than one client rectangle.
      const broken = [];
      for (const el of document.querySelectorAll('th, h1, h2, h3, .label, .pill, button, label, #key-notice')) {
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          for (const m of node.data.matchAll(/\S+/g)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            if (range.getClientRects().length > 1) broken.push(m[0]);
          }
        }
      }
      const wide = [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > doc.clientWidth + 0.5)
        .map((el) => el.id || el.tagName);
      return { scroll: doc.scrollWidth, client: doc.clientWidth, broken, wide };
    });
    assert.equal(layout.client, 420);
    assert.ok(layout.scroll <= layout.client, JSON.stringify(layout));
    assert.deepEqual(layout.wide, []);
    assert.deepEqual(layout.broken, []);
    assert.deepEqual(errors, []);
    if (process.env.HERALD_SCREENSHOT_PHONE) await page.screenshot({ path: process.env.HERALD_SCREENSHOT_PHONE, fullPage: true });
    member.ws.close();
    await page.close();
  });

  test('with the key: version, memory, CPU and descriptors, and a chart with axes and times', async () => {
    const { page, errors } = await open({ key: API_KEY });
    await page.waitForFunction(() => /^v\d+\.\d+\.\d+/.test(document.getElementById('version').textContent), null, wait);
    assert.match(await page.textContent('#rss'), /^\d+(\.\d)? (KiB|MiB|GiB)$/);
    assert.match(await page.textContent('#fds'), /^\d+ \/ [\d,]+$/);
    // CPU is a percentage once two samples are in.
    await page.waitForFunction(() => / %$/.test(document.getElementById('cpu').textContent), null, { timeout: 30_000 });
    await page.waitForFunction(() => window.dashboard.state.chart.xTicks.length >= 2, null, wait);
    const chart = await page.evaluate(() => window.dashboard.state.chart);
    assert.equal(chart.unit, 'events / s');
    assert.equal(chart.yTicks[0], '0');
    assert.ok(chart.yTicks.length >= 2, JSON.stringify(chart));
    for (const t of chart.xTicks) assert.match(t, /^\d\d:\d\d:\d\d$/);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test('with the key it disconnects a connection and a user, publishes, and reads presence and history', async () => {
    const { page, errors } = await open({ key: API_KEY });
    await page.waitForFunction(() => !document.querySelector('#publish-form button').disabled, null, wait);
    const result = () => page.textContent('#action-result');
    const status = async (pattern) => {
      await page.waitForFunction((p) => new RegExp(p).test(document.getElementById('action-status').textContent), pattern.source, wait);
    };

    // Disconnect one connection, from its row in the connections table.
    const one = await client('alice');
    await page.waitForSelector(`button[data-connection="${one.id}"]`, wait);
    await page.click(`button[data-connection="${one.id}"]`);
    assert.equal(await one.closed(), 4001);
    await status(/disconnected/);

    // …and by id, typed in.
    const two = await client('alice');
    await page.fill('#disconnect-id', two.id);
    await page.click('#disconnect-form button');
    assert.equal(await two.closed(), 4001);

    // Disconnect a user: all of their connections, and only theirs.
    const bobs = [await client('bob'), await client('bob')];
    const carol = await client('carol');
    await page.fill('#disconnect-user', 'bob');
    await page.click('#disconnect-user-form button');
    assert.deepEqual(await Promise.all(bobs.map((b) => b.closed())), [4001, 4001]);
    await status(/bob: 2 connection/);
    assert.equal(carol.ws.readyState, WebSocket.OPEN);

    // Publish to a channel and to a room: the subscribed client gets the event, shown as text.
    carol.ws.send(JSON.stringify({ type: 'subscribe', channels: ['hist-news'] }));
    await carol.frame((f) => f.type === 'subscribed', 'subscribed');
    const hostile = '<img src=x onerror="window.pwned=1">';
    await page.selectOption('#publish-kind', 'channel');
    await page.fill('#publish-name', 'hist-news');
    await page.fill('#publish-event', JSON.stringify({ type: 'notice', text: hostile }));
    await page.click('#publish-form button');
    const got = await carol.frame((f) => f.type === 'notice', 'the published notice');
    assert.equal(got.text, hostile);
    await status(/published to channel hist-news/);
    carol.ws.send(JSON.stringify({ type: 'join_room', room: 'ops' }));
    await carol.frame((f) => f.type === 'room_joined' || f.type === 'room_state', 'joined ops');
    await page.selectOption('#publish-kind', 'room');
    await page.fill('#publish-name', 'ops');
    await page.fill('#publish-event', '{"type":"to-room","n":3}');
    await page.click('#publish-form button');
    assert.equal((await carol.frame((f) => f.type === 'to-room', 'the room event')).n, 3);
    // An event that is not JSON is refused on the page, with the reason.
    await page.fill('#publish-event', '{not json');
    await page.click('#publish-form button');
    await status(/not JSON/);

    // Presence of a connected user.
    await page.fill('#presence-user', 'carol');
    await page.click('#presence-form button');
    await status(/presence of carol/);
    const presence = JSON.parse(await result());
    assert.equal(presence.user_id, 'carol');
    assert.equal(presence.online, true, JSON.stringify(presence));

    // History of a channel with [[history]]: the event published above, as text.
    await page.selectOption('#history-kind', 'channel');
    await page.fill('#history-name', 'hist-news');
    await page.click('#history-form button');
    await status(/history of channel hist-news/);
    const history = JSON.parse(await result());
    assert.equal(history.events.length, 1, JSON.stringify(history));
    assert.equal(history.events[0].text, hostile);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await page.locator('#action-result img').count(), 0);
    assert.deepEqual(errors, []);
    await page.close();
  });
});
