// Browser harness: Debian's Chromium driven by playwright-core (no downloaded browsers), a tiny
// static HTTP server on 127.0.0.1 for the built library and test pages, and a console collector
// that waits for lines.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';

import { chromium } from 'playwright-core';

import { lineLog } from './herald.mjs';

/** The Chromium the tests drive: $CHROMIUM if set, else Debian's. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches headless Chromium with a fresh profile; `close()` also deletes the profile. */
export async function launchChromium() {
  const profile = mkdtempSync(join(tmpdir(), 'herald-chromium-'));
  let context;
  try {
    // A persistent context is how Playwright takes a --user-data-dir.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
    });
  } catch (error) {
    rmSync(profile, { recursive: true, force: true });
    throw error;
  }
  return {
    context,
    async close() {
      try {
        await context.close();
      } finally {
        rmSync(profile, { recursive: true, force: true });
      }
    },
  };
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
};

/**
 * Serves files under `root` and `pages` (path → string or function returning a string) on
 * 127.0.0.1. Resolves with `{ url, close }`.
 */
export async function serveStatic(root, pages = {}) {
  const base = resolve(root);
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url, 'http://x').pathname);
    const page = pages[path];
    if (page !== undefined) {
      const body = typeof page === 'function' ? page() : page;
      response.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'text/html; charset=utf-8' });
      response.end(body);
      return;
    }
    const file = normalize(join(base, path));
    if (!file.startsWith(base + sep)) {
      response.writeHead(403).end();
      return;
    }
    try {
      const body = readFileSync(file);
      response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

/**
 * Collects a page's console output as `{ type, text, args }` (args as JSON values, in order) and
 * page errors; `waitFor(predicate)` resolves with the first matching line, past or future.
 */
export function collectConsole(page) {
  const log = lineLog('console so far');
  const errors = [];
  let chain = Promise.resolve();
  page.on('pageerror', (error) => errors.push(error));
  page.on('console', (message) => {
    // Arguments are fetched asynchronously; the chain keeps the lines in console order.
    chain = chain.then(async () => {
      let args;
      try {
        args = await Promise.all(message.args().map((arg) => arg.jsonValue()));
      } catch {
        args = [message.text()];
      }
      log.add({ type: message.type(), text: message.text(), args });
    });
  });
  return { lines: log.lines, errors, waitFor: (predicate, what) => log.waitFor(predicate, `console line: ${what}`) };
}

/** A predicate for a console line whose first argument is `first`. */
export const startsWith = (first) => (line) => typeof line.args[0] === 'string' && line.args[0].startsWith(first);
