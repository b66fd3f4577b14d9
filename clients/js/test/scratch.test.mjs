// The packed tarball, installed into a scratch project the way a user would install it, used by
// `import`, by `require` and by a `<script>` tag (in Chromium), each connecting to a real Herald and
// receiving a published event; and its types checked from an ES module, a CommonJS module and a
// script that uses the global.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium, serveStatic } from './helpers/browser.mjs';
import { startHerald, within } from './helpers/herald.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Connects, subscribes to `emails`, prints `ready`, then prints the first `email:opened` event. */
const CLIENT_BODY = `
const client = new HeraldClient({ url: process.env.HERALD_WS_URL, WebSocket, channels: ['emails'] });
client.on('email:opened', (event) => {
  console.log(JSON.stringify(event));
  client.close();
});
client.connect().then(() => console.log('ready'), (error) => {
  console.error(error);
  process.exit(1);
});
`;

// Each script first checks it got its own build: Node 20.19+ can also require() an ES module, so
// a working client alone would not show that the \`require\` condition exists.
const ESM_CLIENT = `import { createRequire } from 'node:module';
import { HeraldClient } from '@herald/client';
if (!import.meta.resolve('@herald/client').endsWith('/dist/index.js')) throw new Error('not the ES module build');
const WebSocket = createRequire(import.meta.url)(process.env.WS_MODULE);
${CLIENT_BODY}`;

const CJS_CLIENT = `const { HeraldClient } = require('@herald/client');
if (!require.resolve('@herald/client').endsWith('/dist/index.cjs')) throw new Error('not the CommonJS build');
const WebSocket = require(process.env.WS_MODULE);
${CLIENT_BODY}`;

const TYPES_ESM = `import { HeraldClient, type HeraldClientOptions } from '@herald/client';
import { sse, stream } from '@herald/client/fallback';
import { decodeMsgpack } from '@herald/client/msgpack';
const options: HeraldClientOptions = { url: 'ws://127.0.0.1:1/ws', channels: ['a'], transports: ['websocket', sse, stream], msgpack: decodeMsgpack };
export const client: HeraldClient = new HeraldClient(options);
`;

const TYPES_CJS = `import herald = require('@herald/client');
import fallback = require('@herald/client/fallback');
const options: herald.HeraldClientOptions = { url: 'ws://127.0.0.1:1/ws', transports: ['websocket', fallback.sse] };
export const client: herald.HeraldClient = new herald.HeraldClient(options);
`;

const TYPES_GLOBAL = `/// <reference types="@herald/client/global" />
const client: InstanceType<typeof Herald.HeraldClient> = new Herald.HeraldClient({ url: 'ws://127.0.0.1:1/ws' });
client.close();
`;

const SCRIPT_PAGE = `<!doctype html>
<meta charset="utf-8">
<script src="/dist/herald.global.js"></script>`;

function npm(args, cwd) {
  const result = spawnSync('npm', [...args, '--loglevel=error'], { cwd, encoding: 'utf8' });
  assert.equal(result.status, 0, `npm ${args.join(' ')}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

describe('the packed package in a scratch project', () => {
  let scratch;
  let herald;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'herald-client-scratch-'));
    // `npm test` has built dist; the tarball is what `npm publish` would upload.
    const packed = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], root);
    const [{ filename }] = JSON.parse(packed.slice(packed.indexOf('[')));
    writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true }));
    // The package has no dependencies, so installing the tarball needs no registry.
    npm(['install', '--offline', '--no-audit', '--no-fund', join(scratch, filename)], scratch);
    writeFileSync(join(scratch, 'esm.mjs'), ESM_CLIENT);
    writeFileSync(join(scratch, 'cjs.cjs'), CJS_CLIENT);
    herald = await startHerald();
  });

  after(async () => {
    await herald?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  async function nodeClientReceives(script) {
    const child = spawn(process.execPath, [script], {
      cwd: scratch,
      env: { ...process.env, HERALD_WS_URL: herald.wsUrl, WS_MODULE: join(root, 'node_modules', 'ws') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise((resolveExit) => child.once('exit', resolveExit));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    try {
      const first = await within(lines.next(), () => `${script} to connect; stderr:\n${stderr}`);
      assert.equal(first.value, 'ready', stderr);
      await herald.publish({ channel: 'emails', event: { type: 'email:opened', email_id: 7, via: script } });
      const second = await within(lines.next(), () => `${script} to receive the event; stderr:\n${stderr}`);
      assert.deepEqual(JSON.parse(second.value), { type: 'email:opened', email_id: 7, via: script });
      assert.equal(await within(exited, `${script} to exit`), 0, stderr);
    } finally {
      child.kill();
    }
  }

  test('`import` gets the ES module build, which receives a published event', () => nodeClientReceives('esm.mjs'));

  test('`require` gets the CommonJS build, which receives a published event', () => nodeClientReceives('cjs.cjs'));

  test('a <script> tag gets the global build, which receives a published event in Chromium', async () => {
    const web = await serveStatic(join(scratch, 'node_modules', '@herald', 'client'), { '/': SCRIPT_PAGE });
    const browser = await launchChromium();
    try {
      const page = await browser.context.newPage();
      await page.goto(`${web.url}/`);
      const state = await page.evaluate(async (url) => {
        const client = new window.Herald.HeraldClient({ url, channels: ['emails'] });
        window.opened = new Promise((resolveEvent) => client.on('email:opened', resolveEvent));
        await client.connect();
        return [client.state, typeof window.Herald.sse.open, typeof window.Herald.decodeMsgpack];
      }, herald.wsUrl);
      assert.deepEqual(state, ['ready', 'function', 'function'], 'the global build carries the fallbacks and msgpack');
      await herald.publish({ channel: 'emails', event: { type: 'email:opened', email_id: 8 } });
      const event = await within(page.evaluate(() => window.opened), 'the event in the page');
      assert.deepEqual(event, { type: 'email:opened', email_id: 8 });
    } finally {
      await browser.close();
      await web.close();
    }
  });

  test('the optional entry points resolve by import and by require', () => {
    writeFileSync(
      join(scratch, 'entries.mjs'),
      `import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { sse, stream } = await import('@herald/client/fallback');
const { decodeMsgpack } = await import('@herald/client/msgpack');
if (sse.name !== 'sse' || stream.name !== 'stream') throw new Error('fallback');
if (decodeMsgpack(new Uint8Array([0x81, 0xa1, 0x61, 0x01])).a !== 1) throw new Error('msgpack');
if (require('@herald/client/fallback').sse.name !== 'sse') throw new Error('fallback (require)');
if (typeof require('@herald/client/msgpack').decodeMsgpack !== 'function') throw new Error('msgpack (require)');
// React is an optional peer, not installed here: the entry point resolves to its own file.
if (!import.meta.resolve('@herald/client/react').endsWith('/dist/react.js')) throw new Error('react (import)');
if (!require.resolve('@herald/client/react').endsWith('/dist/react.cjs')) throw new Error('react (require)');
console.log('ok');
`,
    );
    const result = spawnSync(process.execPath, ['entries.mjs'], { cwd: scratch, encoding: 'utf8' });
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.equal(result.stdout.trim(), 'ok');
  });

  test('the types resolve for an ES module, a CommonJS module and the script-tag global', () => {
    writeFileSync(join(scratch, 'types-esm.mts'), TYPES_ESM);
    writeFileSync(join(scratch, 'types-cjs.cts'), TYPES_CJS);
    writeFileSync(join(scratch, 'types-global.ts'), TYPES_GLOBAL);
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = ['--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--target', 'es2022'];
    const lib = ['--lib', 'es2022,dom'];
    const result = spawnSync(process.execPath, [tsc, ...args, ...lib, 'types-esm.mts', 'types-cjs.cts', 'types-global.ts'], {
      cwd: scratch,
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stdout + result.stderr);
  });
});
