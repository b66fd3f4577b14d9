// Test helpers: Herald nodes and a throwaway redis-server on loopback ports, a WebSocket
// subscriber (`ws`) and a TCP proxy that can lose an answer on purpose.
//
// Which Herald binary: $HERALD_BIN if set (scripts/test sets it to target/debug/herald), otherwise
// the first of <repo>/target/debug/herald and <repo>/target/release/herald that exists. Waiting is
// always for an event (a line on stdout, a message); timeouts only turn a hang into a failure.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

/** How long any one expected thing may take before the test fails. */
export const WAIT_MS = 15_000;

/** The API key of every test node. */
export const API_KEY = 'test-api-key-0123';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Rejects with `message` (a string or a function making one) if `promise` has not settled within `ms`. */
export function within(promise, message, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${typeof message === 'function' ? message() : message}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function heraldBinary() {
  if (process.env.HERALD_BIN) return process.env.HERALD_BIN;
  const found = [join(repo, 'target/debug/herald'), join(repo, 'target/release/herald')].find((p) => existsSync(p));
  if (!found) throw new Error('no herald binary: run `cargo build --bin herald` in the repository root, or set HERALD_BIN');
  return found;
}

/** The environment without variables that would configure a test node behind the test's back. */
function cleanEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (/^(HERALD_|WEBSOCKET_)/.test(key) || ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'DATABASE_URL'].includes(key)) delete env[key];
  }
  return env;
}

/** Starts a node on a free port with extra flags: `{ addr, port, wsUrl, httpUrl, publish, get, stop }`. */
export async function startHerald({ args = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'herald-node-publisher-'));
  const flags = ['--listen', '127.0.0.1:0', '--api-key', API_KEY, '--data-dir', dir, ...args];
  const child = spawn(heraldBinary(), flags, { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    log += chunk;
  });
  const exited = new Promise((resolveExit) => child.once('exit', () => resolveExit()));
  const listening = new Promise((resolveAddr, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^herald listening on http:\/\/(\S+)/.exec(line);
      if (match) resolveAddr(match[1]);
    });
    exited.then(() => reject(new Error(`herald exited before listening:\n${log}`)));
  });
  const addr = await within(listening, 'herald to print its address');
  const httpUrl = `http://${addr}`;
  const headers = { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' };
  return {
    addr,
    port: Number(addr.slice(addr.lastIndexOf(':') + 1)),
    wsUrl: `ws://${addr}/ws`,
    httpUrl,
    async publish(body) {
      const response = await fetch(`${httpUrl}/api/publish`, { method: 'POST', headers, body: JSON.stringify(body) });
      if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
      return response.json();
    },
    async get(path) {
      return (await fetch(`${httpUrl}${path}`, { headers })).json();
    },
    async stop() {
      child.kill('SIGTERM');
      await within(exited, 'herald to exit');
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** A redis-server on a free loopback port: `{ url, stop() }`. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  running.add(child);
  const ready = new Promise((resolveReady, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.includes('Ready to accept connections')) resolveReady();
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code})`)));
  });
  await within(ready, 'redis-server to start');
  return {
    url: `redis://127.0.0.1:${port}/0`,
    stop() {
      running.delete(child);
      child.kill('SIGKILL');
    },
  };
}

/**
 * A WebSocket client of a Herald node, welcomed: `next(predicate)` resolves with the first message
 * (past or future) that satisfies it; `request(message)` sends one with an id and resolves with the reply.
 */
export async function subscriber(node, query = '') {
  const ws = new WebSocket(`${node.wsUrl}?client_id=node-publisher-test${query ? `&${query}` : ''}`);
  const seen = [];
  const waiters = [];
  ws.on('message', (data) => {
    const message = JSON.parse(String(data));
    seen.push(message);
    for (const waiter of [...waiters]) {
      if (waiter.predicate(message)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(message);
      }
    }
  });
  const client = {
    seen,
    next(predicate, what = 'a message') {
      const found = seen.find(predicate);
      if (found) return Promise.resolve(found);
      const waiting = new Promise((resolveMessage) => waiters.push({ predicate, resolve: resolveMessage }));
      return within(waiting, () => `${what}; saw ${JSON.stringify(seen)}`);
    },
    async request(message) {
      const id = `r${Math.random().toString(36).slice(2)}`;
      ws.send(JSON.stringify({ ...message, id }));
      return client.next((m) => m.id === id, `the reply to ${message.type}`);
    },
    close() {
      ws.close();
    },
  };
  await client.next((m) => m.type === 'connection', 'the welcome');
  return client;
}

/**
 * A TCP proxy to `upstream` (host:port). With `loseAnswers` > 0 it forwards that many requests but
 * cuts the client's connection when the answer starts to come back: Herald handled the request,
 * the caller never learns it.
 */
export async function proxy(upstream, { loseAnswers = 0 } = {}) {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.slice(upstream.lastIndexOf(':') + 1))];
  let toLose = loseAnswers;
  const sockets = new Set();
  const server = createServer((client) => {
    const up = tcpConnect(port, host);
    sockets.add(client).add(up);
    const lose = toLose > 0;
    if (lose) toLose -= 1;
    client.on('data', (chunk) => up.write(chunk));
    up.on('data', (chunk) => {
      if (lose) {
        client.destroy();
        up.destroy();
      } else {
        client.write(chunk);
      }
    });
    for (const [a, b] of [
      [client, up],
      [up, client],
    ]) {
      a.on('close', () => b.destroy());
      a.on('error', () => b.destroy());
    }
  });
  await new Promise((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolveClose) => server.close(resolveClose));
    },
  };
}
