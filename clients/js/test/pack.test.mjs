// What `npm publish` would upload: the three builds (ESM, CommonJS, script tag) with their types
// and source maps, README, LICENSE and package.json; nothing else (no sources, tests, examples).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('npm pack ships dist, README, LICENSE and package.json, and nothing else', () => {
  // `npm pack` runs `prepare`, so the package builds itself from a clean checkout.
  // `prepare`'s build log comes first on stdout, coloured where CI is set (picocolors reads `CI`):
  // the JSON is the array that starts a line.
  const result = spawnSync('npm', ['pack', '--dry-run', '--json', '--loglevel=error'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  assert.equal(result.status, 0, result.stderr);
  const start = result.stdout.search(/^\[\s*\{/m);
  assert.ok(start >= 0, `no JSON array in npm pack's output: ${result.stdout}`);
  const [pack] = JSON.parse(result.stdout.slice(start));
  const files = pack.files.map((f) => f.path);
  const wanted = [
    'package.json',
    'README.md',
    'LICENSE',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/index.cjs',
    'dist/index.d.cts',
    'dist/herald.global.js',
    'dist/herald.global.d.ts',
  ];
  for (const path of wanted) {
    assert.ok(files.includes(path), `${path} missing from the package: ${files.join(', ')}`);
  }
  for (const path of files) {
    assert.ok(
      ['package.json', 'README.md', 'LICENSE'].includes(path) || path.startsWith('dist/'),
      `${path} should not be published`,
    );
  }
  assert.equal(pack.name, '@herald/client');
});

test('the script-tag build (the whole client, minified) stays within 10 KB gzipped', () => {
  const bytes = gzipSync(readFileSync(join(root, 'dist', 'herald.global.js')), { level: 9 }).length;
  assert.ok(bytes <= 10 * 1024, `dist/herald.global.js is ${bytes} bytes gzipped`);
});
