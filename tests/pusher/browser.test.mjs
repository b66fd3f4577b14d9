// pusher-js's browser build in Debian's Chromium (playwright-core, no downloaded browsers)
// against the real herald binary: connect, subscribe to a private channel authorized by the npm
// server SDK, receive a triggered event, and send a client event to a Node pusher-js client.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';

import { startHerald, within } from '../../clients/js/test/helpers/herald.mjs';

const APP = { id: '3003', key: 'browser-key', secret: 'browser-secret-0123' };
const CONFIG = `
[[pusher.apps]]
id = "${APP.id}"
key = "${APP.key}"
secret = "${APP.secret}"
enable_client_messages = true
`;
const require = createRequire(import.meta.url);
const BROWSER_BUILD = require.resolve('pusher-js/dist/web/pusher.min.js');

let herald;
let context;
let profile;

before(async () => {
  herald = await startHerald({ config: CONFIG });
  profile = mkdtempSync(join(tmpdir(), 'herald-pusher-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await herald?.stop();
});

test('pusher-js in Chromium: private channel, a triggered event and a client event', async () => {
  const backend = new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    host: '127.0.0.1',
    port: String(herald.port),
    useTLS: false,
  });
  const page = await context.newPage();
  await page.setContent('<!doctype html><meta charset="utf-8"><title>pusher-js</title>');
  await page.addScriptTag({ path: BROWSER_BUILD });
  // The page asks Node for channel authorizations, as it would ask its own backend.
  await page.exposeFunction('authorize', (socketId, channel) => backend.authorizeChannel(socketId, channel));
  await page.evaluate(
    ({ key, port }) =>
      new Promise((resolve, reject) => {
        window.received = [];
        window.pusher = new window.Pusher(key, {
          wsHost: '127.0.0.1',
          wsPort: port,
          forceTLS: false,
          enabledTransports: ['ws'],
          disableStats: true,
          cluster: 'local',
          channelAuthorization: {
            customHandler: ({ socketId, channelName }, callback) =>
              window.authorize(socketId, channelName).then((auth) => callback(null, auth), callback),
          },
        });
        const channel = window.pusher.subscribe('private-browser');
        channel.bind('pusher:subscription_succeeded', resolve);
        channel.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
        channel.bind('news', (data) => window.received.push(data));
      }),
    { key: APP.key, port: herald.port },
  );

  await backend.trigger('private-browser', 'news', { from: 'backend' });
  await page.waitForFunction(() => window.received.length === 1, null, { timeout: 15_000 });
  assert.deepEqual(await page.evaluate(() => window.received[0]), { from: 'backend' });

  const node = new PusherClient(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: herald.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'local',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => callback(null, backend.authorizeChannel(socketId, channelName)),
    },
  });
  try {
    const channel = node.subscribe('private-browser');
    await within(new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve)), 'the Node subscription');
    const got = within(new Promise((resolve) => channel.bind('client-hello', resolve)), 'the client event from Chromium');
    await page.evaluate(() => window.pusher.channel('private-browser').trigger('client-hello', { from: 'chromium' }));
    assert.deepEqual(await got, { from: 'chromium' });
  } finally {
    node.disconnect();
    await page.evaluate(() => window.pusher.disconnect());
  }
});
