// nginx in front of Herald, configured as a proxy that refuses WebSocket upgrades (as some
// corporate proxies do) while passing plain HTTP through unbuffered, so that only the fallback
// transports get through. Optionally it also serves the test pages on the same origin (no CORS).

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { within } from './herald.mjs';

async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Starts nginx on a free loopback port: `path` (e.g. `/ws`, and everything under it) goes to
 * `heraldAddr` unless it asks for a WebSocket upgrade (403); anything else goes to `staticAddr`
 * when given. Resolves with `{ url, close }`.
 */
export async function startRefusingProxy({ heraldAddr, path = '/ws', staticAddr }) {
  const dir = mkdtempSync(join(tmpdir(), 'herald-nginx-'));
  const port = await freePort();
  const root = process.getuid?.() === 0 ? 'user root;\n' : '';
  const config = `${root}worker_processes 1;
error_log ${join(dir, 'error.log')} warn;
pid ${join(dir, 'nginx.pid')};
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location ${path} {
      # The proxy under test: no WebSocket through here.
      if ($http_upgrade != "") { return 403; }
      proxy_pass http://${heraldAddr};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
    ${staticAddr === undefined ? '' : `location / { proxy_pass http://${staticAddr}; }`}
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), config);
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', 'daemon off;'], {
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
