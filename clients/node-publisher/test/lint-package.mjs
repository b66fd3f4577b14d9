// Packs @herald/publisher once and checks the tarball as a registry would see it: publint
// (package.json fields, exports, file presence) and "Are the types wrong?" (types resolve for
// `import` and `require` under every TypeScript module resolution). Both run offline on the tarball.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);

function run(command, args) {
  console.log(`$ ${[command, ...args].join(' ')}`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`${command} failed (status ${result.status})`);
    process.exit(1);
  }
}

const out = mkdtempSync(join(tmpdir(), 'herald-publisher-pack-'));
try {
  // --ignore-scripts: `npm test` has just built dist.
  const packed = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--loglevel=error', '--pack-destination', out], {
    cwd: root,
    encoding: 'utf8',
  });
  if (packed.status !== 0) {
    console.error(packed.stderr);
    process.exit(1);
  }
  const [{ filename, files }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')));
  const unexpected = files.map((f) => f.path).filter((p) => !/^(dist\/|package\.json$|README\.md$|LICENSE$)/.test(p));
  if (unexpected.length > 0) {
    console.error(`the tarball holds files it should not: ${unexpected.join(', ')}`);
    process.exit(1);
  }
  const tarball = join(out, filename);
  run(bin('publint'), ['run', tarball, '--strict']);
  run(bin('attw'), [tarball, '--format', 'table-flipped']);
} finally {
  rmSync(out, { recursive: true, force: true });
}
