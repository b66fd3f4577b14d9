/**
 * `@herald/client/fallback`: Server-Sent Events and HTTP streaming, for networks whose proxies
 * refuse WebSocket: `new HeraldClient({ url, transports: ['websocket', sse, stream] })`.
 *
 * @packageDocumentation
 */
import type { Transport, WebSocketLike } from './types.js';

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

/**
 * A Herald session over Server-Sent Events (`sse`) or chunked NDJSON (`stream`), shaped like a
 * WebSocket so the client runs unchanged on it: server messages arrive on one long `fetch` GET of
 * the endpoint (the token in `Authorization`, never in the URL), commands go as POSTs to the
 * session (`<endpoint>/sessions/<id>` with `X-Herald-Session-Key`), batched as NDJSON while one
 * is in flight so that they arrive in order. `fetch` rather than `EventSource`: it can send the
 * header, so no ticket is needed.
 */
export class HttpStreamSocket implements WebSocketLike {
  readyState = CONNECTING;
  readonly protocol = '';
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  readonly #abort = new AbortController();
  readonly #base: URL;
  readonly #headers: Record<string, string>;
  #session: { url: string; key: string } | undefined;
  #outbox: string[] = [];
  #posting = false;

  constructor(url: string, kind: 'sse' | 'stream', token: string | undefined) {
    const base = new URL(url);
    base.protocol = base.protocol === 'wss:' ? 'https:' : 'http:';
    this.#base = new URL(base);
    this.#base.search = '';
    base.searchParams.set('transport', kind);
    this.#headers = token === undefined ? {} : { Authorization: `Bearer ${token}` };
    void this.#read(base.toString(), kind);
  }

  send(data: string): void {
    if (this.readyState !== OPEN) throw new Error('not open');
    this.#outbox.push(data);
    if (!this.#posting) void this.#post();
  }

  close(code = 1000, reason = ''): void {
    this.#end(code, reason, true);
  }

  async #read(url: string, kind: 'sse' | 'stream'): Promise<void> {
    let ended = { code: 1006, reason: 'stream ended', clean: false };
    try {
      const accept = kind === 'sse' ? 'text/event-stream' : 'application/x-ndjson';
      const response = await fetch(url, { headers: { ...this.#headers, Accept: accept }, signal: this.#abort.signal });
      if (!response.ok || response.body === null) {
        // Refused credentials are not retried (1008), like a WebSocket closed for policy.
        const code = response.status === 401 || response.status === 403 ? 1008 : response.status === 429 ? 1013 : 1006;
        ended = { code, reason: `${kind} request answered ${response.status}`, clean: false };
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let data: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let newline: number;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, '');
          buffer = buffer.slice(newline + 1);
          if (kind === 'stream') {
            if (line !== '') this.#message(line);
          } else if (line === '') {
            if (data.length > 0) this.#message(data.join('\n'));
            data = [];
          } else if (line.startsWith('data:')) {
            data.push(line.slice(line[5] === ' ' ? 6 : 5));
          }
          if ((this.readyState as number) === CLOSED) return;
        }
      }
    } catch (cause) {
      if (this.readyState !== CLOSED) this.onerror?.({ error: cause });
    } finally {
      this.#end(ended.code, ended.reason, ended.clean);
    }
  }

  #message(text: string): void {
    if (this.#session === undefined) {
      // The first message names the session that commands are posted to.
      try {
        const first = JSON.parse(text) as { type?: unknown; id?: unknown; key?: unknown };
        if (first.type === 'session' && typeof first.id === 'string' && typeof first.key === 'string') {
          this.#session = { url: new URL(`${this.#base.pathname.replace(/\/$/, '')}/sessions/${encodeURIComponent(first.id)}`, this.#base).toString(), key: first.key };
          this.readyState = OPEN;
          this.onopen?.({});
          return;
        }
      } catch {
        // Not a session message: fall through to the error below.
      }
      this.#end(1002, 'the stream did not start with a session', false);
      return;
    }
    // The server's last message says how the session ended, as a WebSocket close would.
    if (text.startsWith('{"type":"close"')) {
      try {
        const close = JSON.parse(text) as { code?: unknown; reason?: unknown };
        if (typeof close.code === 'number') {
          this.#end(close.code, typeof close.reason === 'string' ? close.reason : '', true);
          return;
        }
      } catch {
        // Not the close message after all: deliver it.
      }
    }
    this.onmessage?.({ data: text });
  }

  async #post(): Promise<void> {
    this.#posting = true;
    while (this.#outbox.length > 0 && this.readyState === OPEN && this.#session !== undefined) {
      const many = this.#outbox.length > 1;
      const body = this.#outbox.join('\n');
      this.#outbox = [];
      try {
        const response = await fetch(this.#session.url, {
          method: 'POST',
          headers: { ...this.#headers, 'Content-Type': many ? 'application/x-ndjson' : 'application/json', 'X-Herald-Session-Key': this.#session.key },
          body,
          signal: this.#abort.signal,
        });
        // The session is gone (404) or not ours (403): this connection is over.
        if (response.status === 404 || response.status === 403) this.#end(1006, `session answered ${response.status}`, false);
        else if (!response.ok) this.onerror?.({ status: response.status });
      } catch (cause) {
        if ((this.readyState as number) !== CLOSED) this.#end(1006, `posting failed: ${String(cause)}`, false);
      }
    }
    this.#posting = false;
  }

  #end(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.#abort.abort();
    this.onclose?.({ code, reason, wasClean });
  }
}

/** Server-Sent Events: the endpoint's messages as SSE events over one GET. */
export const sse: Transport = { name: 'sse', open: (url, token) => new HttpStreamSocket(url, 'sse', token) };

/** HTTP streaming: the endpoint's messages as NDJSON lines over one chunked GET. */
export const stream: Transport = { name: 'stream', open: (url, token) => new HttpStreamSocket(url, 'stream', token) };
