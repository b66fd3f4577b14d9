// The v2 API in Debian's Chromium (playwright-core) against the real Herald binary: the token in
// Sec-WebSocket-Protocol with MessagePack negotiated beside it, subscriptions, presence, history,
// publish, a token refreshed in band, a reconnect that resumes without loss or duplicates, and the
// React hooks. Every wait is for an event; timeouts only turn hangs into failures.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

import { collectConsole, launchChromium, serveStatic } from './helpers/browser.mjs';
import { startHerald, within } from './helpers/herald.mjs';
import { startRefusingProxy } from './helpers/nginx.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = resolve(here, '..');
const SECRET = 'js-client-v2-browser-secret-0123456789';

function jwt(sub, seconds) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const claims = { sub, name: `name-${sub}`, exp: Math.floor(Date.now() / 1000) + seconds };
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
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

const LIBRARY_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>herald client v2</title>
<script type="module">
  import * as Herald from '/dist/index.js';
  import { decodeMsgpack } from '/dist/msgpack.js';
  import { sse, stream } from '/dist/fallback.js';
  window.decodeMsgpack = decodeMsgpack;
  window.fallbacks = { sse, stream };
  window.Herald = Herald;
</script>`;

/** A React app on the hooks: connection state, a channel's state and last event, a room's members. */
const REACT_APP = `
import { createElement as h } from 'react';
import { createRoot } from 'react-dom/client';
import { useHerald, usePresence, useSubscription } from '@herald/client/react';

function App({ url, token }) {
  const { client, state } = useHerald({ url, token });
  const jobs = useSubscription(client, 'jobs:react');
  const members = usePresence(client, 'chat:react');
  return h('div', null,
    h('p', { id: 'state' }, state),
    h('p', { id: 'sub' }, jobs.state),
    h('p', { id: 'last' }, jobs.last ? String(jobs.last.n) : ''),
    h('p', { id: 'members' }, members ? members.map((m) => m.user_id).join(',') : ''));
}

window.startApp = (url, token) => createRoot(document.getElementById('root')).render(h(App, { url, token }));
`;

describe('v2 in Chromium', () => {
  let browser;
  let web;
  let herald;
  let proxy;
  const pages = {};

  before(async () => {
    herald = await startHerald({ config: CONFIG, args: ['--set', 'websocket.heartbeat_interval=1s'] });
    const bundle = await build({
      stdin: { contents: REACT_APP, resolveDir: packageRoot, loader: 'js' },
      bundle: true,
      write: false,
      format: 'esm',
      define: { 'process.env.NODE_ENV': '"production"' },
      alias: { '@herald/client/react': resolve(packageRoot, 'dist/react.js') },
    });
    pages['/'] = LIBRARY_PAGE;
    pages['/react.js'] = bundle.outputFiles[0].text;
    pages['/react.html'] = '<!doctype html><meta charset="utf-8"><div id="root"></div><script type="module" src="/react.js"></script>';
    web = await serveStatic(packageRoot, pages);
    // The same pages and Herald's endpoint on one origin, through a proxy that refuses WebSocket.
    proxy = await startRefusingProxy({ heraldAddr: herald.addr, staticAddr: new URL(web.url).host });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await proxy?.close();
    await web?.close();
    await herald?.stop();
  });

  async function libraryPage(origin = web.url) {
    const page = await browser.context.newPage();
    const output = collectConsole(page);
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => window.Herald !== undefined, null, { timeout: 15_000 });
    return { page, output };
  }

  /**
   * The whole v2 scenario in a page. `websocket`: straight to Herald, the token in
   * Sec-WebSocket-Protocol and herald.msgpack negotiated; `sse` / `stream`: through the proxy that
   * refuses WebSocket, starting with WebSocket and falling back.
   */
  async function scenario(mode) {
    const viaProxy = mode !== 'websocket';
    const { page, output } = await libraryPage(viaProxy ? proxy.url : web.url);
    const url = viaProxy ? `${proxy.url.replace('http', 'ws')}/ws` : herald.wsUrl;
    const tokens = { alice: [jwt('alice', 600), jwt('alice', 7200)], bob: jwt('bob', 7200) };
    try {
      const first = await within(
        page.evaluate(
          async ({ url, tokens, mode, suffix }) => {
            const { HeraldClient } = window.Herald;
            const { sse, stream } = window.fallbacks;
            const transports = mode === 'websocket' ? ['websocket'] : mode === 'sse' ? ['websocket', sse, stream] : ['websocket', stream];
            const alice = new HeraldClient({
              url,
              transports,
              // Connection attempts get a token inside refresh_ahead, so Herald asks for a new one at
              // once; the refresh (on a connection that has its welcome) gets a long one.
              getToken: () => tokens.alice[alice.connectionId === undefined ? 0 : 1],
              protocols: ['herald.msgpack'],
              msgpack: window.decodeMsgpack,
              recover: true,
              shouldReconnect: () => true,
              reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
            });
            const bob = new HeraldClient({ url, token: tokens.bob, transports });
            window.alice = alice;
            window.refreshed = new Promise((r) => alice.on('token_refreshed', r));
            await Promise.all([alice.connect(), bob.connect()]);
            const jobs = alice.channel(`jobs:${suffix}`);
            window.ticks = [];
            jobs.on('job:tick', (e) => window.ticks.push(e.i));
            await jobs.subscribe();
            const room = alice.room(`chat:${suffix}`);
            await room.subscribe();
            const joined = new Promise((r) => room.on('join', r));
            const message = new Promise((r) => room.on('chat_message', r));
            const bobRoom = bob.room(`chat:${suffix}`);
            await bobRoom.subscribe();
            const ack = await bobRoom.publish('hi from bob');
            return {
              protocol: alice.protocol,
              transport: alice.transport,
              user: alice.welcome.user_id,
              jobs: jobs.state,
              joined: (await joined).user_id,
              members: (await room.presence()).map((m) => m.user_id).sort(),
              message: (await message).content,
              ack: ack.type,
              history: (await room.history()).events.filter((e) => e.type === 'chat_message').map((e) => e.content),
            };
          },
          { url, tokens, mode, suffix: mode },
        ),
        'the first steps in the page',
      );
      assert.equal(first.transport, mode);
      if (mode === 'websocket') assert.equal(first.protocol, 'herald.msgpack');
      assert.equal(first.user, 'alice');
      assert.equal(first.jobs, 'subscribed');
      assert.equal(first.joined, 'bob');
      assert.deepEqual(first.members, ['alice', 'bob']);
      assert.equal(first.message, 'hi from bob');
      assert.equal(first.ack, 'chat_message_ack');
      assert.deepEqual(first.history, ['hi from bob']);

      const refreshed = await within(page.evaluate(() => window.refreshed), 'token_refreshed in the page');
      assert.ok(refreshed.expires_at > Date.now() / 1000 + 3600);

      // Events before, during and after a lost connection arrive once each, in order.
      await herald.publish({ channel: `jobs:${mode}`, event: { type: 'job:tick', i: 1 } });
      await within(page.waitForFunction(() => window.ticks.length === 1), 'the first tick');
      const id = await page.evaluate(() => {
        window.back = new Promise((r) => window.alice.channel(window.alice.channels[0]).on('subscribed', r));
        window.lost = new Promise((r) => window.alice.on('close', r));
        return window.alice.connectionId;
      });
      const kicked = await herald.delete(`/api/connections/${id}`);
      assert.ok(kicked.status < 300, JSON.stringify(kicked));
      await within(page.evaluate(() => window.lost), 'the close in the page');
      for (let i = 2; i <= 4; i++) await herald.publish({ channel: `jobs:${mode}`, event: { type: 'job:tick', i } });
      await within(page.evaluate(() => window.back), 'the subscription restored');
      await herald.publish({ channel: `jobs:${mode}`, event: { type: 'job:tick', i: 5 } });
      await within(page.waitForFunction(() => window.ticks.length >= 5), 'five ticks');
      assert.deepEqual(await page.evaluate(() => window.ticks), [1, 2, 3, 4, 5]);
      assert.equal(await page.evaluate(() => window.alice.state), 'ready');
      assert.equal(await page.evaluate(() => window.alice.transport), mode, 'the working transport is kept');
      assert.deepEqual(output.errors, []);
    } finally {
      await page.evaluate(() => window.alice?.close()).catch(() => {});
      await page.close();
    }
  }

  test('over WebSocket: subscribe, presence, history, publish, an in-band refresh and a resuming reconnect', () =>
    scenario('websocket'));

  test('through a proxy refusing WebSocket, over SSE: the same', () => scenario('sse'));

  test('through a proxy refusing WebSocket, over HTTP streaming: the same', () => scenario('stream'));

  test('the React hooks render state, events and presence', async () => {
    const page = await browser.context.newPage();
    const output = collectConsole(page);
    try {
      await page.goto(`${web.url}/react.html`);
      await page.waitForFunction(() => window.startApp !== undefined, null, { timeout: 15_000 });
      await page.evaluate(({ url, token }) => window.startApp(url, token), { url: herald.wsUrl, token: jwt('rita', 7200) });
      const text = (id) => page.evaluate((i) => document.getElementById(i)?.textContent, id);
      await within(page.waitForFunction(() => document.getElementById('sub')?.textContent === 'subscribed'), 'subscribed');
      assert.equal(await text('state'), 'ready');
      await within(page.waitForFunction(() => document.getElementById('members')?.textContent === 'rita'), 'presence');
      await herald.publish({ channel: 'jobs:react', event: { type: 'job:tick', channel: 'jobs:react', n: 7 } });
      await within(page.waitForFunction(() => document.getElementById('last')?.textContent === '7'), 'the event rendered');
      assert.deepEqual(output.errors, []);
    } finally {
      await page.close();
    }
  });
});
