// The pages Herald serves itself, in Debian's Chromium: the live dashboard and the test console.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { launchChromium } from './helpers/browser.mjs';
import { API_KEY, startHerald, WAIT_MS } from './helpers/herald.mjs';

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
