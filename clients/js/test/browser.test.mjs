// In Debian's Chromium (playwright-core): the built library, and the seed documents' own plain
// WebSocket snippets, against the real Herald binary.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { collectConsole, launchChromium, serveStatic, startsWith } from './helpers/browser.mjs';
import { startHerald, within } from './helpers/herald.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = resolve(here, '..');
const repo = resolve(packageRoot, '../..');

/** A page that loads the built library as an ES module and exposes it as `window.Herald`. */
const LIBRARY_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>herald client</title>
<script type="module">
  import * as Herald from '/dist/index.js';
  window.Herald = Herald;
</script>`;

/** A page that runs a seed snippet, pointed at `address` instead of the document's host. */
function seedPage(snippet, documentHost, address, prelude = '') {
  const source = readFileSync(join(here, 'seeds', snippet), 'utf8');
  assert.ok(source.includes(documentHost), `${snippet} mentions ${documentHost}`);
  const pointed = source.replaceAll(documentHost, address);
  return `<!doctype html>\n<meta charset="utf-8">\n<script>${prelude}</script>\n<script>\n${pointed}\n</script>`;
}

describe('in Chromium', () => {
  let browser;
  let web;
  const pages = {};

  before(async () => {
    web = await serveStatic(packageRoot, pages);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await web?.close();
  });

  async function libraryPage() {
    pages['/'] = LIBRARY_PAGE;
    const page = await browser.context.newPage();
    const output = collectConsole(page);
    await page.goto(`${web.url}/`);
    await page.waitForFunction(() => window.Herald !== undefined, null, { timeout: 15_000 });
    return { page, output };
  }

  test('the library connects, subscribes and receives a published event', async () => {
    const herald = await startHerald();
    const { page, output } = await libraryPage();
    try {
      const connected = await page.evaluate(async (url) => {
        const client = new window.Herald.HeraldClient({ url, channels: ['campaigns'] });
        window.client = client;
        await client.connect();
        const ack = await client.subscribe('emails');
        window.opened = new Promise((resolveEvent) => client.on('email:opened', resolveEvent));
        return { state: client.state, welcome: client.welcome, ack };
      }, herald.wsUrl);
      assert.equal(connected.state, 'ready');
      assert.deepEqual(connected.welcome.channels, ['campaigns']);
      assert.equal(connected.ack.type, 'subscribed');
      assert.deepEqual(connected.ack.channels, ['emails']);

      await herald.publish({ channel: 'emails', event: { type: 'email:opened', email_id: 456, room: 'campaign:123' } });
      const event = await within(page.evaluate(() => window.opened), 'the event in the page');
      assert.deepEqual(event, { type: 'email:opened', email_id: 456, room: 'campaign:123' });

      const refused = await page.evaluate(() =>
        window.client.request({ type: 'bogus' }).then(
          () => null,
          (error) => ({ name: error.name, code: error.code }),
        ),
      );
      assert.deepEqual(refused, { name: 'HeraldError', code: 'UNKNOWN_MESSAGE_TYPE' });
      assert.deepEqual(output.errors, []);
    } finally {
      await page.close();
      await herald.stop();
    }
  });

  test('the library reconnects after Herald restarts on the same port and restores its subscriptions', async () => {
    let first = await startHerald();
    let second;
    const { page, output } = await libraryPage();
    try {
      await page.evaluate(async (url) => {
        const client = new window.Herald.HeraldClient({
          url,
          channels: ['campaigns'],
          reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
        });
        window.client = client;
        window.closes = [];
        client.on('close', (e) => window.closes.push(e));
        window.reconnected = new Promise((resolveReady) =>
          client.on('ready', (e) => {
            if (e.reconnect) resolveReady(e);
          }),
        );
        await client.connect();
        await client.joinRoom('campaign:42');
      }, first.wsUrl);

      await first.stop('SIGTERM');
      second = await startHerald({ port: first.port });
      first = undefined;
      const ready = await within(page.evaluate(() => window.reconnected), 'the reconnect in the page');
      assert.deepEqual(ready.welcome.channels, ['campaigns']);
      assert.deepEqual(ready.rooms, ['campaign:42']);
      const closes = await page.evaluate(() => window.closes);
      assert.equal(closes[0].code, 1001);
      assert.equal(closes[0].willReconnect, true);

      await page.evaluate(() => {
        window.launched = new Promise((r) => window.client.on('campaign:launched', r));
        window.completed = new Promise((r) => window.client.on('campaign:completed', r));
      });
      await second.publish({ channel: 'campaigns', event: { type: 'campaign:launched', campaign_id: 42 } });
      await second.post('/api/rooms/campaign:42/broadcast', { type: 'campaign:completed', campaign_id: 42 });
      assert.equal((await within(page.evaluate(() => window.launched), 'launch')).campaign_id, 42);
      assert.equal((await within(page.evaluate(() => window.completed), 'completion')).campaign_id, 42);
      assert.deepEqual(output.errors, []);
    } finally {
      await page.close();
      await first?.stop();
      await second?.stop();
    }
  });

  test("document 000's browser snippet works unchanged", async () => {
    const herald = await startHerald({ config: readFileSync(join(repo, 'examples/campaign-events.toml'), 'utf8') });
    pages['/seed000.html'] = seedPage('doc000_browser_client.js', 'localhost:8000', herald.addr);
    const page = await browser.context.newPage();
    const output = collectConsole(page);
    try {
      await page.goto(`${web.url}/seed000.html`);
      await output.waitFor(startsWith('WebSocket connected'), 'WebSocket connected');
      const welcome = await output.waitFor(startsWith('Connected:'), 'Connected: <welcome>');
      assert.equal(welcome.args[1].client_id, 'user123');
      assert.deepEqual(welcome.args[1].channels, ['campaigns', 'emails']);
      // The snippet's subscribe and join_room are acknowledged (its default branch logs them).
      const unknown = (type) => (line) => line.args[0] === 'Unknown message:' && line.args[1]?.type === type;
      await output.waitFor(unknown('subscribed'), 'the subscribe acknowledgement');
      const joined = await output.waitFor(unknown('room_joined'), 'the join acknowledgement');
      assert.equal(joined.args[1].room, 'campaign:123');

      await herald.publish({
        channel: 'campaigns',
        event: {
          type: 'campaign:launched',
          campaign_id: 123,
          campaign_name: 'Q1 Outreach',
          total_recipients: 500,
          scheduled_at: null,
          room: 'campaign:123',
          timestamp: '2024-01-15T10:30:00Z',
        },
      });
      const launched = await output.waitFor(startsWith('Campaign launched:'), 'Campaign launched:');
      assert.equal(launched.args[1].campaign_name, 'Q1 Outreach');

      // To the room only: reaches the snippet through its join_room.
      await herald.post('/api/rooms/campaign:123/broadcast', {
        type: 'email:opened',
        email_id: 456,
        campaign_id: 123,
        room: 'campaign:123',
      });
      const opened = await output.waitFor(startsWith('Email opened:'), 'Email opened:');
      assert.equal(opened.args[1].email_id, 456);

      // On a channel the snippet subscribed to in onopen.
      await herald.publish({
        channel: 'scrapers',
        event: { type: 'scraper:progress', scraper_id: 'scrape_abc123', percent: 50.0 },
      });
      const progress = await output.waitFor(startsWith('Scraper progress:'), 'Scraper progress:');
      assert.deepEqual(progress.args, ['Scraper progress:', '50%']);
      // Each event was logged once: the campaign event was not also delivered through the room.
      assert.equal(output.lines.filter(startsWith('Campaign launched:')).length, 1);
      assert.deepEqual(output.errors, []);
    } finally {
      await page.close();
      await herald.stop();
    }
  });

  test("document 002's browser snippet works unchanged", async () => {
    const herald = await startHerald({ config: readFileSync(join(repo, 'examples/job-updates.toml'), 'utf8') });
    // The snippet calls the application's updateJobStatus(jobId, status, data).
    const prelude = 'function updateJobStatus(...args) { console.log("updateJobStatus", ...args); }';
    pages['/seed002.html'] = seedPage('doc002_browser_client.js', 'localhost:8080', herald.addr, prelude);
    const page = await browser.context.newPage();
    const output = collectConsole(page);
    try {
      await page.goto(`${web.url}/seed002.html`);
      await output.waitFor(startsWith('Connected to WebSocket server'), 'Connected to WebSocket server');
      // The snippet ignores the welcome, so wait until Herald has registered the connection.
      await herald.waitForTotal('connections', (n) => n === 1);
      await herald.publish({
        channel: 'jobs:updates',
        event: { job_id: 'test-123', status: 'completed', data: { success: true } },
      });
      await output.waitFor((l) => l.args[0] === 'Job test-123 status: completed', 'Job test-123 status: completed');
      const data = await output.waitFor(startsWith('Data:'), 'Data:');
      assert.deepEqual(data.args, ['Data:', { success: true }]);
      const ui = await output.waitFor(startsWith('updateJobStatus'), 'updateJobStatus(...)');
      assert.deepEqual(ui.args, ['updateJobStatus', 'test-123', 'completed', { success: true }]);
      // The worker's own message ("Redis Message Format"): the channel's shape lifts the status.
      await herald.publish({
        channel: 'jobs:updates',
        event: { event: 'job_update', job_id: 'job-9', timestamp: 1699369800, data: { job_id: 'job-9', status: 'processing', progress: 50 } },
      });
      await output.waitFor((l) => l.args[0] === 'Job job-9 status: processing', 'Job job-9 status: processing');
      assert.deepEqual(output.errors, []);
    } finally {
      await page.close();
      await herald.stop();
    }
  });
});
