import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Socket } from 'node:net';

import { HeraldConfigError, HeraldConnectionError, HeraldHTTPError } from './errors.js';
import type { PublishResult } from './result.js';

/** Options of the HTTP transport. */
export interface HttpOptions {
  /** Herald's `api.key`, sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Per attempt, in milliseconds (default 5000). */
  timeoutMs?: number;
  /** Further attempts after a failure that is safe to retry (default 2). */
  retries?: number;
  /** The first retry's delay window in milliseconds, doubling per retry, with full jitter (default 100). */
  retryDelayMs?: number;
  /** Connections kept open to Herald at most (default 16). Ignored when `agent` is given. */
  maxSockets?: number;
  /** Your own agent (keep-alive is then up to you); left open by `close()`. */
  agent?: http.Agent;
  /** Called before each retry (for logs or metrics): which attempt failed, why, and the delay. */
  onRetry?: (info: RetryInfo) => void;
}

/** What {@link HttpOptions.onRetry} is told. */
export interface RetryInfo {
  /** The attempt that failed (1 for the first request). */
  attempt: number;
  /** The HTTP status, or the network error's code. */
  reason: string;
  /** Milliseconds until the next attempt. */
  delayMs: number;
}

/** One HTTP answer. */
interface Answer {
  status: number;
  text: string;
  retryAfter: number | undefined;
}

/** Network errors that mean the request never reached Herald. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
/** Network errors after which Herald may or may not have handled the request. */
const MAYBE_SENT = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'UND_ERR_SOCKET']);

class AttemptError extends Error {
  constructor(
    readonly original: Error & { code?: string },
    /** The request certainly did not reach Herald: any request may be sent again. */
    readonly notSent: boolean,
  ) {
    super(original.message);
  }
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const parsed: unknown = text ? JSON.parse(text) : {};
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

const sleep = (ms: number) => new Promise<void>((resolveSleep) => setTimeout(resolveSleep, ms));

/**
 * Herald's HTTP API over `node:http` / `node:https` with a keep-alive agent: connections are
 * reused between calls.
 *
 * Retries. A request is sent again (up to `retries` times, with backoff and jitter) only when doing
 * so cannot deliver an event twice:
 * - it never reached Herald (connection refused, name not resolved), or it went out on a reused
 *   keep-alive connection that Herald had already closed (`ECONNRESET` / `EPIPE` on a reused socket);
 * - Herald answered 503 with `Retry-After` (its in-flight cap refused the request before handling it);
 * - the request carries an idempotency key (`postMessage`): then also after a lost answer, a timeout,
 *   502 or 504; Herald stores a retried key once and answers with the original message.
 * `POST /api/publish` has no idempotency key, so a publish whose answer was lost is not retried: it
 * fails with `HeraldConnectionError` (the event may or may not have gone out).
 */
export class HttpTransport {
  readonly name = 'http';
  readonly baseUrl: string;
  readonly agent: http.Agent;
  /** How many connections this transport opened (keep-alive keeps this low). */
  socketsOpened = 0;
  /** How many requests it sent, retries included. */
  attempts = 0;
  readonly #apiKey: string | undefined;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #retryDelayMs: number;
  readonly #ownsAgent: boolean;
  readonly #module: typeof http | typeof https;
  readonly #seen = new WeakSet<Socket>();
  readonly #onRetry: ((info: RetryInfo) => void) | undefined;

  constructor(baseUrl: string, options: HttpOptions = {}) {
    if (!baseUrl) throw new HeraldConfigError("Herald's base URL is required (e.g. http://127.0.0.1:8000)");
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new HeraldConfigError(`not a URL: ${JSON.stringify(baseUrl)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new HeraldConfigError(`Herald's base URL starts with http:// or https://, not ${url.protocol}`);
    }
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#module = url.protocol === 'https:' ? https : http;
    this.#apiKey = options.apiKey;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#retries = Math.max(0, options.retries ?? 2);
    this.#retryDelayMs = options.retryDelayMs ?? 100;
    this.#ownsAgent = options.agent === undefined;
    this.#onRetry = options.onRetry;
    this.agent =
      options.agent ??
      new this.#module.Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 16, scheduling: 'lifo' });
  }

  /** `POST /api/publish` (and the other publish routes): retried only where that is safe. */
  async publish(path: string, body: unknown): Promise<PublishResult> {
    const answer = await this.#send(path, body, undefined);
    const parsed = parseObject(answer.text);
    const result: PublishResult = { transport: 'http', localOnly: parsed.local_only === true };
    if (typeof parsed.warning === 'string') result.warning = parsed.warning;
    return result;
  }

  /** A POST with an `Idempotency-Key` header: retried after any failure that may be transient. */
  async postIdempotent(path: string, body: unknown, key: string = randomUUID()): Promise<Record<string, unknown>> {
    const answer = await this.#send(path, body, key);
    return parseObject(answer.text);
  }

  async #send(path: string, body: unknown, idempotencyKey: string | undefined): Promise<Answer> {
    const payload = Buffer.from(JSON.stringify(body), 'utf8');
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/json',
      Accept: 'application/json',
      'User-Agent': 'herald-publisher-node',
      'Content-Length': payload.length,
    };
    if (this.#apiKey) headers.Authorization = `Bearer ${this.#apiKey}`;
    if (idempotencyKey !== undefined) headers['Idempotency-Key'] = idempotencyKey;
    for (let attempt = 0; ; attempt += 1) {
      const last = attempt >= this.#retries;
      const backoff = Math.random() * this.#retryDelayMs * 2 ** attempt;
      let answer: Answer;
      try {
        answer = await this.#attempt(path, payload, headers);
      } catch (error) {
        const failure = error as AttemptError;
        const retry = failure.notSent || idempotencyKey !== undefined;
        if (last || !retry) {
          throw new HeraldConnectionError(`Herald at ${this.baseUrl} is unreachable: ${failure.message}`, {
            cause: failure.original,
          });
        }
        this.#onRetry?.({ attempt: attempt + 1, reason: failure.original.code ?? failure.message, delayMs: backoff });
        await sleep(backoff);
        continue;
      }
      if (answer.status < 400) return answer;
      const refusedUnhandled = answer.status === 503 && answer.retryAfter !== undefined;
      const transient = [502, 503, 504].includes(answer.status) && idempotencyKey !== undefined;
      if (last || !(refusedUnhandled || transient)) throw HeraldHTTPError.fromResponse(answer.status, answer.text);
      // Herald's Retry-After is in seconds; a publisher should not stall for long on it.
      const delayMs = Math.max(backoff, Math.min((answer.retryAfter ?? 0) * 1000, 2000));
      this.#onRetry?.({ attempt: attempt + 1, reason: `HTTP ${answer.status}`, delayMs });
      await sleep(delayMs);
    }
  }

  #attempt(path: string, payload: Buffer, headers: Record<string, string | number>): Promise<Answer> {
    this.attempts += 1;
    return new Promise<Answer>((resolveAnswer, reject) => {
      const request = this.#module.request(`${this.baseUrl}${path}`, {
        method: 'POST',
        agent: this.agent,
        headers,
        timeout: this.#timeoutMs,
      });
      let responded = false;
      request.on('socket', (socket: Socket) => {
        if (!this.#seen.has(socket)) {
          this.#seen.add(socket);
          this.socketsOpened += 1;
        }
      });
      request.on('timeout', () => {
        const error: Error & { code?: string } = new Error(`no answer within ${this.#timeoutMs} ms`);
        error.code = 'ETIMEDOUT';
        request.destroy(error);
      });
      request.on('error', (error: Error & { code?: string }) => {
        const code = error.code ?? '';
        // A reused keep-alive connection that Herald had closed: the request was not read.
        const stale = request.reusedSocket && !responded && MAYBE_SENT.has(code) && code !== 'ETIMEDOUT';
        reject(new AttemptError(error, NOT_SENT.has(code) || stale));
      });
      request.on('response', (response) => {
        responded = true;
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', (error: Error & { code?: string }) => reject(new AttemptError(error, false)));
        response.on('end', () => {
          const header = response.headers['retry-after'];
          const retryAfter = header === undefined ? undefined : Number(header);
          resolveAnswer({
            status: response.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            retryAfter: retryAfter !== undefined && Number.isFinite(retryAfter) ? retryAfter : undefined,
          });
        });
      });
      request.end(payload);
    });
  }

  /** Closes the kept-alive connections (not those of an agent you passed in). */
  async close(): Promise<void> {
    if (this.#ownsAgent) this.agent.destroy();
  }
}
