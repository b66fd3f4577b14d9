// The bundle sizes, minified and gzipped (level 9): the core (`@herald/client` as a bundler would
// ship it: dist/index.js bundled and minified) must stay within 10 KiB gzipped; the optional
// entry points and the script-tag build (core + fallback + MessagePack) are reported beside it.
// Run after `npm run build`; exits 1 above the budget.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const CORE_BUDGET_GZ = 10 * 1024;

async function minified(entry) {
  const result = await build({
    entryPoints: [join(root, entry)],
    bundle: true,
    minify: true,
    write: false,
    format: 'esm',
    target: 'es2020',
    external: ['react'],
    logLevel: 'error',
  });
  return result.outputFiles[0].contents;
}

const sizes = [
  ['core (@herald/client)', await minified('dist/index.js')],
  ['@herald/client/fallback (alone)', await minified('dist/fallback.js')],
  ['@herald/client/msgpack (alone)', await minified('dist/msgpack.js')],
  ['@herald/client/react (with the core, without React)', await minified('dist/react.js')],
  ['dist/herald.global.js (script tag: core + fallback + msgpack)', readFileSync(join(root, 'dist/herald.global.js'))],
];
for (const [name, bytes] of sizes) {
  console.log(`${name}: ${bytes.length} bytes minified, ${gzipSync(bytes, { level: 9 }).length} bytes gzipped`);
}
const core = gzipSync(sizes[0][1], { level: 9 }).length;
if (core > CORE_BUDGET_GZ) {
  console.error(`the core is ${core} bytes gzipped; the budget is ${CORE_BUDGET_GZ}`);
  process.exit(1);
}
console.log(`core within budget: ${core} of ${CORE_BUDGET_GZ} bytes gzipped`);
