// Test helpers: a throwaway redis-server, Herald nodes (the JS client's harness starts them), a
// WebSocket subscriber (`ws`) and a TCP proxy that can lose an answer on purpose.
import { spawn } from 'node:child_process';
import { createServer, connect as tcpConnect } from 'node:net';
import { createInterface } from 'node:readline';

import WebSocket from 'ws';

import { API_KEY, WAIT_MS, startHerald, within } from '../../js/test/helpers/herald.mjs';

export { API_KEY, WAIT_MS, startHerald, within };

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

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
