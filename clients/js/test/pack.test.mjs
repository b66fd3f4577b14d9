// What `npm publish` would upload: the built library with its types, the sources it maps to,
// README and LICENSE; never tests, examples or dependencies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('npm pack ships the built library, its types, README and LICENSE, and nothing else', () => {
  // `npm pack` runs `prepare`, so the package builds itself from a clean checkout.
  const result = spawnSync('npm', ['pack', '--dry-run', '--json', '--loglevel=error'], { cwd: root, encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const start = result.stdout.indexOf('[');
  const [pack] = JSON.parse(result.stdout.slice(start));
  const files = pack.files.map((f) => f.path);
  for (const wanted of ['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts', 'src/index.ts']) {
    assert.ok(files.includes(wanted), `${wanted} missing from the package: ${files.join(', ')}`);
  }
  for (const path of files) {
    assert.ok(!/^(test|examples|node_modules)\//.test(path), `${path} should not be published`);
  }
  assert.equal(pack.name, '@herald/client');
});
