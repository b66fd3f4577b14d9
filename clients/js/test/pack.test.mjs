// What `npm publish` would upload: the three builds (ESM, CommonJS, script tag) with their types
// and source maps, the entry-point stubs for old resolvers (msgpack/, fallback/, react/), README,
// LICENSE and package.json; nothing else (no sources, tests, examples).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

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
    'dist/fallback.js',
    'dist/msgpack.js',
    'dist/react.js',
    'dist/react.cjs',
    'fallback/package.json',
    'msgpack/package.json',
    'react/package.json',
  ];
  for (const path of wanted) {
    assert.ok(files.includes(path), `${path} missing from the package: ${files.join(', ')}`);
  }
  for (const path of files) {
    assert.ok(
      ['package.json', 'README.md', 'LICENSE', 'fallback/package.json', 'msgpack/package.json', 'react/package.json'].includes(
        path,
      ) || path.startsWith('dist/'),
      `${path} should not be published`,
    );
  }
  assert.equal(pack.name, '@herald/client');
});

test('the core stays within 10 KiB gzipped (test/size.mjs)', () => {
  const result = spawnSync(process.execPath, [join(root, 'test', 'size.mjs')], { cwd: root, encoding: 'utf8' });
  assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
  assert.match(result.stdout, /core within budget/);
});
