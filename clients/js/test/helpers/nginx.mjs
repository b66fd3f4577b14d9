// nginx in front of Herald as a proxy that refuses WebSocket upgrades (as some corporate proxies
// do) while passing plain HTTP through unbuffered, so that only the fallback transports get
// through: the repository's tests/fallback/nginx-no-websocket.conf, shared with the Rust suite.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { within } from './herald.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Starts nginx on a free loopback port with `tests/fallback/nginx-no-websocket.conf` (everything
 * goes to `heraldAddr` unless it asks for a WebSocket upgrade: 403). With `staticAddr`, `/` and
 * `/dist/` go there instead, so that test pages share the endpoint's origin (no CORS).
 * Resolves with `{ url, close }`.
 */
export async function startRefusingProxy({ heraldAddr, staticAddr }) {
  const dir = mkdtempSync(join(tmpdir(), 'herald-nginx-'));
  const port = await freePort();
  let config = readFileSync(join(repo, 'tests/fallback/nginx-no-websocket.conf'), 'utf8')
    .replaceAll('@LISTEN@', String(port))
    .replaceAll('127.0.0.1:@UPSTREAM@', heraldAddr);
  if (staticAddr !== undefined) {
    config = config.replace(
      '        location / {',
      `        location = / { proxy_pass http://${staticAddr}; }\n        location /dist/ { proxy_pass http://${staticAddr}; }\n        location / {`,
    );
  }
  // Workers otherwise drop to an account that cannot write the private temp directory.
  if (process.getuid?.() === 0) config = `user root;\n${config}`;
  writeFileSync(join(dir, 'nginx.conf'), config);
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', 'daemon off; pid nginx.pid;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((r) => child.once('exit', r));
  // Ready when it answers HTTP.
  const url = `http://127.0.0.1:${port}`;
  const ready = (async () => {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
      try {
        await fetch(`${url}/__ready`);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  })();
  await within(ready, () => `nginx to answer; ${stderr} ${readFileSync(join(dir, 'error.log'), 'utf8')}`);
  return {
    url,
    async close() {
      child.kill('SIGTERM');
      await within(exited, 'nginx to exit');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
