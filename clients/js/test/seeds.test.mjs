// The compatibility profiles' own JavaScript and TypeScript client code (tests/seeds in the
// repository holds the Python side), run in Node against the real Herald binary with each
// profile's example configuration. Each snippet runs as its document gives it: TypeScript is only
// transpiled, and only the server address (and a token placeholder) is replaced. `ws` provides
// the browser's WebSocket API; the functions a snippet expects from its application (React's
// useCallback, UI handlers) are provided by the test and log what they are given.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

import ts from 'typescript';
import WebSocket from 'ws';

import { API_KEY, lineLog, startHerald, within } from './helpers/herald.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const example = (name) => readFileSync(join(repo, 'examples', name), 'utf8');

/** An HS256 JWT, as the applications' own auth services issue them. */
function jwt(secret, claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** Console output of a snippet, with waiting for a line. */
function capture() {
  const log = lineLog('the snippet logged');
  const push = (level) => (...args) => log.add({ level, args });
  return {
    lines: log.lines,
    console: { log: push('log'), error: push('error'), warn: push('warn') },
    waitFor: log.waitFor,
  };
}

/**
 * Runs a snippet from test/seeds with `replacements` applied, in a context holding `globals`.
 * `epilogue` is code run after it in the same scope (to start what the document's application
 * would start). Returns the context's sockets so the test can close them.
 */
function runSnippet(file, replacements, globals, epilogue = '') {
  let source = readFileSync(join(here, 'seeds', file), 'utf8');
  for (const [from, to] of replacements) {
    assert.ok(source.includes(from), `${file} mentions ${from}`);
    source = source.replaceAll(from, to);
  }
  if (file.endsWith('.ts')) {
    source = ts.transpileModule(source, { compilerOptions: { target: ts.ScriptTarget.ES2022 } }).outputText;
  }
  const sockets = [];
  class TrackedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  // Timers the snippet starts (reconnects, heartbeats) end with the test.
  const timers = [];
  const context = vm.createContext({
    WebSocket: TrackedWebSocket,
    JSON,
    Math,
    Date,
    setTimeout: (...args) => timers.push(setTimeout(...args)) && timers.at(-1),
    setInterval: (...args) => timers.push(setInterval(...args)) && timers.at(-1),
    clearTimeout,
    clearInterval,
    ...globals,
  });
  vm.runInContext(`${source}\n${epilogue}`, context, { filename: file });
  return {
    sockets,
    run: (code) => vm.runInContext(code, context),
    close() {
      timers.forEach((t) => clearTimeout(t));
      for (const socket of sockets) {
        socket.onclose = null;
        socket.on('error', () => {});
        socket.terminate();
      }
    },
  };
}

async function freePort() {
  return new Promise((resolvePort) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** A throwaway redis-server on a free loopback port. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await within(
    new Promise((ready) => child.stdout.on('data', (chunk) => String(chunk).includes('Ready to accept') && ready())),
    'redis-server to start',
  );
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

test("document 001's TypeScript client connects, joins its order room and receives chat", async () => {
  const secret = 'chat-secret-0123456789';
  const herald = await startHerald({ config: example('manufacturing-chat.toml'), args: ['--set', `auth.jwt_secret=${secret}`] });
  const out = capture();
  const token = jwt(secret, { sub: '7', roles: ['customer'], order_ids: [123] });
  // The application's handlers: the document leaves them to the UI framework.
  const epilogue = `
    class App extends WebSocketClient {
      onChatMessage(message) { console.log('chat', message.room, message.content); }
    }
    globalThis.client = new App(${JSON.stringify(token)});
    client.connect();`;
  const context = { console: out.console };
  const snippet = runSnippet('doc001_websocket_client.ts', [['localhost:8000', herald.addr]], context, epilogue);
  try {
    await out.waitFor((l) => l.args[0] === 'WebSocket connected', 'WebSocket connected');
    const client = snippet.sockets[0];
    const frames = [];
    client.on('message', (data) => frames.push(JSON.parse(String(data))));
    snippet.run("client.joinRoom('order_123')");
    await within(
      (async () => {
        while (!frames.some((f) => f.type === 'room_joined')) await new Promise((r) => setTimeout(r, 20));
      })(),
      () => `room_joined; frames: ${JSON.stringify(frames)}`,
    );
    snippet.run("client.sendMessage('order_123', 'Hello, how is the order progressing?')");
    const chat = await out.waitFor((l) => l.args[0] === 'chat', 'the chat message');
    assert.deepEqual(chat.args, ['chat', 'order_123', 'Hello, how is the order progressing?']);
    assert.equal(frames[0].type, 'connection_established', 'the welcome the document expects comes first');
    assert.deepEqual(out.lines.filter((l) => l.level === 'error'), []);
  } finally {
    snippet.close();
    await herald.stop();
  }
});

test("document 003's client connects, joins the workspace and gets room_state", async () => {
  const redis = await startRedis();
  const secret = 'spreadsheet-secret-0123456789';
  const herald = await startHerald({
    config: example('spreadsheet.toml'),
    args: ['--set', `auth.jwt_secret=${secret}`, '--set', `redis.url=${redis.url}`],
  });
  const out = capture();
  const token = jwt(secret, { sub: 'user_1', username: 'john_doe', workspace_ids: ['123'] });
  const received = [];
  const handleMessage = (message) => {
    received.push(message);
    out.console.log('handleMessage', message.type);
  };
  const snippet = runSnippet(
    'doc003_browser_client.js',
    [['localhost:8000', herald.addr], ['your-jwt-token', token]],
    { console: out.console, handleMessage },
  );
  try {
    await out.waitFor((l) => l.args[0] === 'Connected to WebSocket', 'Connected to WebSocket');
    await out.waitFor((l) => l.args[0] === 'handleMessage' && l.args[1] === 'room_state', 'room_state');
    const state = received.find((m) => m.type === 'room_state');
    assert.equal(state.room_id, 'workspace_123');
    assert.equal(state.total_users, 1);
    assert.equal(state.users[0].user_id, 'user_1');
    assert.notEqual(received[0].type, 'connection', 'nothing the document never sent comes first');
  } finally {
    snippet.close();
    await herald.stop();
    redis.stop();
  }
});

test("document 004's dashboard hook shows the stats after the document's test messages", async () => {
  const herald = await startHerald({ config: example('message-dashboard.toml'), args: ['--set', 'database.batch_linger=100ms'] });
  const out = capture();
  const stats = [];
  const react = {
    useCallback: (fn) => fn,
    setWsConnected: (value) => out.console.log('setWsConnected', value),
    setStats: (value) => {
      stats.push(value);
      out.console.log('setStats', value.total_messages);
    },
    setThroughputHistory: (update) => update([]),
  };
  const snippet = runSnippet('doc004_use_messages.ts', [['localhost:8000', herald.addr]], { console: out.console, ...react }, 'connectWebSocket();');
  try {
    await out.waitFor((l) => l.args[0] === 'WebSocket connected', 'WebSocket connected');
    // The document's curl loop, as fetch calls: no key.
    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, n) =>
        fetch(`http://${herald.addr}/messages`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ user_id: n + 1, channel_id: 1, content: `Test ${n + 1}` }),
        }).then((r) => r.status),
      ),
    );
    assert.deepEqual(new Set(replies), new Set([202]));
    await out.waitFor((l) => l.args[0] === 'setStats' && l.args[1] === 100, 'setStats with 100 messages');
    const shown = stats.find((s) => s.total_messages === 100);
    assert.equal(typeof shown.messages_per_second, 'number');
    assert.ok(shown.total_batches >= 1);
    assert.ok(API_KEY, 'the node has an API key, which the ingestion route does not ask for');
  } finally {
    snippet.close();
    await herald.stop();
  }
});

test("document 002's client prints the worker's job updates with their status", async () => {
  const herald = await startHerald({ config: example('job-updates.toml') });
  const out = capture();
  // The snippet calls the application's updateJobStatus(jobId, status, data).
  const updateJobStatus = (...args) => out.console.log('updateJobStatus', ...args);
  const snippet = runSnippet('doc002_browser_client.js', [['localhost:8080', herald.addr]], { console: out.console, updateJobStatus });
  try {
    await out.waitFor((l) => l.args[0] === 'Connected to WebSocket server', 'Connected to WebSocket server');
    await herald.waitForTotal('connections', (n) => n === 1);
    // The worker's message as the document's "Redis Message Format" gives it, here over HTTP.
    const worker = {
      event: 'job_update',
      job_id: '550e8400-e29b-41d4-a716-446655440000',
      timestamp: 1699369800,
      data: { job_id: '550e8400-e29b-41d4-a716-446655440000', status: 'processing', progress: 50 },
    };
    await herald.publish({ channel: 'jobs:updates', event: worker });
    const line = `Job ${worker.job_id} status: processing`;
    await out.waitFor((l) => l.args[0] === line, line);
    const ui = await out.waitFor((l) => l.args[0] === 'updateJobStatus', 'updateJobStatus(...)');
    assert.deepEqual(ui.args, ['updateJobStatus', worker.job_id, 'processing', worker.data]);
  } finally {
    snippet.close();
    await herald.stop();
  }
});
