// Test harness: the real `herald` binary on a loopback port.
//
// Which binary: $HERALD_BIN if set (scripts/test sets it to target/debug/herald), otherwise the
// first of <repo>/target/debug/herald and <repo>/target/release/herald that exists. Every process
// started here is killed when the test process exits, even after a failure.
//
// Waiting is always for an event (a line on stdout, a reply, a stats figure); the timeouts only
// turn a hang into a failure with a message.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** How long any one expected thing may take before the test fails. */
export const WAIT_MS = 15_000;

/** The API key of every test node. */
export const API_KEY = 'test-api-key-0123';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../../..');
const running = new Set();

process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** The herald binary the tests run. */
export function heraldBinary() {
  if (process.env.HERALD_BIN) {
    if (!existsSync(process.env.HERALD_BIN)) throw new Error(`HERALD_BIN=${process.env.HERALD_BIN} does not exist`);
    return process.env.HERALD_BIN;
  }
  for (const candidate of [join(repo, 'target/debug/herald'), join(repo, 'target/release/herald')]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('no herald binary: run `cargo build --bin herald` in the repository root, or set HERALD_BIN');
}

/**
 * A log of lines (console output, say) that can be waited on: `add(line)` records one and wakes
 * the waiters it satisfies; `waitFor(predicate, what)` resolves with the first matching line, past
 * or future, and on time-out names `what` and every line so far (under `heading`).
 */
export function lineLog(heading) {
  const lines = [];
  const waiters = [];
  return {
    lines,
    add(line) {
      lines.push(line);
      for (const waiter of [...waiters]) {
        if (waiter.predicate(line)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    },
    waitFor(predicate, what) {
      const found = lines.find(predicate);
      if (found) return Promise.resolve(found);
      const waiting = new Promise((resolveLine) => waiters.push({ predicate, resolve: resolveLine }));
      return within(waiting, () => `${what}; ${heading}:\n${lines.map((l) => JSON.stringify(l.args)).join('\n')}`);
    },
  };
}

/** Rejects with `message` (a string or a function making one) if `promise` has not settled within `ms`. */
export function within(promise, message, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const text = typeof message === 'function' ? message() : message;
      reject(new Error(`timed out after ${ms} ms: ${text}`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Variables that would change a test node's configuration behind the test's back. */
function cleanEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (
      key.startsWith('HERALD_') ||
      key.startsWith('WEBSOCKET_') ||
      ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'DATABASE_URL'].includes(key)
    ) {
      delete env[key];
    }
  }
  return env;
}

/**
 * Starts a node. `port` 0 lets Herald pick; `config` is TOML written to a temp file; `args` are
 * extra flags (e.g. `['--set', 'websocket.heartbeat_interval=1s']`).
 */
export async function startHerald({ port = 0, config, args = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'herald-js-'));
  const flags = ['--listen', `127.0.0.1:${port}`, '--api-key', API_KEY, '--data-dir', dir, ...args];
  if (config !== undefined) {
    writeFileSync(join(dir, 'herald.toml'), config);
    flags.push('--config', join(dir, 'herald.toml'));
  }
  const child = spawn(heraldBinary(), flags, { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let log = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    log += chunk;
  });
  const exited = new Promise((resolveExit) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolveExit({ code, signal });
    });
  });
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise((resolveAddr, reject) => {
    lines.on('line', (line) => {
      const match = /^herald listening on http:\/\/(\S+)/.exec(line);
      if (match) resolveAddr(match[1]);
    });
    exited.then(({ code, signal }) => reject(new Error(`herald exited (${code ?? signal}) before listening:\n${log}`)));
  });
  let addr;
  try {
    addr = await within(listening, 'herald to print its address');
  } catch (error) {
    child.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const httpUrl = `http://${addr}`;
  return {
    addr,
    port: Number(addr.slice(addr.lastIndexOf(':') + 1)),
    wsUrl: `ws://${addr}/ws`,
    httpUrl,
    get log() {
      return log;
    },
    /** POSTs JSON to an API route with the API key; resolves with the parsed body, throws on 4xx/5xx. */
    async post(path, body) {
      const response = await fetch(`${httpUrl}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const json = await response.json();
      if (!response.ok) throw new Error(`POST ${path} → ${response.status} ${JSON.stringify(json)}`);
      return json;
    },
    publish(body) {
      return this.post('/api/publish', body);
    },
    async get(path) {
      const response = await fetch(`${httpUrl}${path}`, { headers: { authorization: `Bearer ${API_KEY}` } });
      return response.json();
    },
    async delete(path) {
      const response = await fetch(`${httpUrl}${path}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${API_KEY}` },
      });
      return { status: response.status, body: await response.json() };
    },
    /** Polls `/api/stats` until `totals[field]` satisfies `predicate`. */
    async waitForTotal(field, predicate) {
      let done = false;
      const poll = (async () => {
        while (!done) {
          const stats = await this.get('/api/stats');
          const value = stats?.stats?.totals?.[field];
          if (typeof value === 'number' && predicate(value)) return value;
          await new Promise((r) => setTimeout(r, 20));
        }
        return undefined;
      })();
      try {
        return await within(poll, `stats total ${field} to reach the expected value`);
      } finally {
        done = true;
      }
    },
    /** Stops the node with `signal` (SIGTERM: graceful, clients get 1001) and waits for it to exit. */
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const result = await within(exited, 'herald to exit');
      rmSync(dir, { recursive: true, force: true });
      return result;
    },
  };
}

/** Resolves with the next `type` event of `client` that satisfies `predicate`. */
export function next(client, type, predicate = () => true, what = `"${type}"`) {
  let off = () => {};
  const waiting = new Promise((resolveEvent) => {
    off = client.on(type, (payload) => {
      if (!predicate(payload)) return;
      off();
      resolveEvent(payload);
    });
  });
  return within(waiting, `client event ${what}`).finally(() => off());
}

/** Records every lifecycle event of a client, in order, as `[type, payload]`. */
export function record(client, types = ['open', 'welcome', 'ready', 'close', 'reconnecting', 'error']) {
  const events = [];
  for (const type of types) client.on(type, (payload) => events.push([type, payload]));
  return events;
}
