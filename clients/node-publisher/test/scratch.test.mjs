// The packed tarball installed into a scratch project the way a user would install it, used by
// `import` and by `require`, each publishing to a real Herald over HTTP; without the optional
// `redis` peer a Redis publisher says what to install; and the types check from an ES module and a
// CommonJS module.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { API_KEY, startHerald, subscriber } from './helpers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const BODY = `
const [url, key, channel, via] = process.argv.slice(2);
const publisher = HeraldPublisher.http(url, { apiKey: key });
const result = await publisher.publish({ type: 'scratch:published', via }, { channel });
await publisher.close();
const redis = HeraldPublisher.redis({ url: 'redis://127.0.0.1:1/0', prefix: 'app' });
const missing = await redis.publish({ type: 'x' }, { channel: 'c' }).catch((e) => e);
if (!(missing instanceof HeraldConfigError) || !/npm install redis/.test(missing.message)) throw new Error('expected a HeraldConfigError: ' + missing);
console.log(result.transport);
`;

// Each script first checks it got its own build.
const ESM = `import { HeraldConfigError, HeraldPublisher } from '@herald/publisher';
if (!import.meta.resolve('@herald/publisher').endsWith('/dist/index.js')) throw new Error('not the ES module build');
${BODY}`;

const CJS = `const { HeraldConfigError, HeraldPublisher } = require('@herald/publisher');
if (!require.resolve('@herald/publisher').endsWith('/dist/index.cjs')) throw new Error('not the CommonJS build');
(async () => {${BODY}})().catch((e) => { console.error(e); process.exit(1); });
`;

const TYPES_ESM = `import { HeraldPublisher, type PublishResult, buildEvent } from '@herald/publisher';
const publisher: HeraldPublisher = HeraldPublisher.http('http://127.0.0.1:1', { apiKey: 'k', retries: 1 });
export const sent: Promise<PublishResult> = publisher.publishEvent(buildEvent('a', 'c', [], { n: 1 }));
`;

const TYPES_CJS = `import herald = require('@herald/publisher');
const publisher: herald.HeraldPublisher = herald.HeraldPublisher.redis({ url: 'redis://127.0.0.1:1', prefix: 'app' });
export const sent: Promise<herald.PublishResult> = publisher.notifyUser(7, { type: 'a' });
`;

function npm(args, cwd) {
  const result = spawnSync('npm', [...args, '--loglevel=error'], { cwd, encoding: 'utf8' });
  assert.equal(result.status, 0, `npm ${args.join(' ')}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

describe('the packed package in a scratch project', () => {
  let scratch;
  let herald;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'herald-publisher-scratch-'));
    const packed = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], root);
    const [{ filename }] = JSON.parse(packed.slice(packed.indexOf('[')));
    writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true }));
    // No dependencies (redis is an optional peer), so installing the tarball needs no registry.
    npm(['install', '--offline', '--no-audit', '--no-fund', join(scratch, filename)], scratch);
    writeFileSync(join(scratch, 'esm.mjs'), ESM);
    writeFileSync(join(scratch, 'cjs.cjs'), CJS);
    herald = await startHerald();
  });

  after(async () => {
    await herald?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  for (const [script, kind] of [
    ['esm.mjs', '`import` gets the ES module build'],
    ['cjs.cjs', '`require` gets the CommonJS build'],
  ]) {
    test(`${kind}, which publishes to Herald`, async () => {
      const channel = `scratch-${script}`;
      const client = await subscriber(herald, `channels=${channel}`);
      try {
        const run = spawnSync(process.execPath, [script, herald.httpUrl, API_KEY, channel, script], { cwd: scratch, encoding: 'utf8' });
        assert.equal(run.status, 0, run.stderr);
        assert.equal(run.stdout.trim(), 'http');
        assert.deepEqual(await client.next((m) => m.type === 'scratch:published'), { type: 'scratch:published', via: script });
      } finally {
        client.close();
      }
    });
  }

  test('the types resolve for an ES module and a CommonJS module', () => {
    writeFileSync(join(scratch, 'types-esm.mts'), TYPES_ESM);
    writeFileSync(join(scratch, 'types-cjs.cts'), TYPES_CJS);
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = ['--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--target', 'es2022', '--types', 'node'];
    const result = spawnSync(process.execPath, [tsc, ...args, '--typeRoots', join(root, 'node_modules', '@types'), 'types-esm.mts', 'types-cjs.cts'], {
      cwd: scratch,
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stdout + result.stderr);
  });
});
