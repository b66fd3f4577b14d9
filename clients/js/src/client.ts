import { computeBackoffDelay, normalizeReconnect, type ReconnectOptions } from './backoff.js';
import { CloseCode, defaultShouldReconnect } from './close-codes.js';
import { ClientErrorCode, HeraldError } from './errors.js';
import { defaultStreamOf, PositionTracker, type StreamOf } from './positions.js';
import type {
  CloseInfo,
  HeraldMessage,
  StreamPosition,
  Transport,
  WebSocketConstructor,
  WebSocketLike,
  WelcomeMessage,
} from './types.js';
import { RoomSubscription, Subscription, type SubscriptionHost } from './subscription.js';
import { assertName, buildConnectUrl, channelsInUrl } from './url.js';

/**
 * Low-level hooks around reconnects, for protocols of your own. Herald's own resume needs none of
 * them: set `recover: true`.
 */
export interface ResumeOptions {
  /**
   * Extra query parameters for a connection URL, built from the positions seen so far. Called
   * before every connection attempt while at least one position is known.
   */
  params?: (positions: ReadonlyMap<string, StreamPosition>) => Record<string, string> | undefined;
  /**
   * Called when a connection opens while at least one position is known, before channels and
   * rooms are restored; it may send messages (`client.send`, `client.request`). The connection
   * becomes `ready` after the returned promise settles.
   */
  onOpen?: (context: {
    positions: ReadonlyMap<string, StreamPosition>;
    client: HeraldClient<any>;
    reconnect: boolean;
  }) => void | Promise<unknown>;
}

/** Options of {@link HeraldClient}. */
export interface HeraldClientOptions {
  /** The endpoint, e.g. `wss://example.com/ws` (relative URLs resolve against the page in browsers). */
  url: string;
  /** A token (a JWT), sent as `tokenIn` says. */
  token?: string;
  /**
   * Called before every connection attempt (its result wins over `token`), and when Herald
   * announces `token_expiring`: the new token then goes to Herald in band (`refresh_token`),
   * without a reconnect.
   */
  getToken?: () => string | Promise<string>;
  /**
   * How the token travels: `header` (`Authorization: Bearer`, for the `ws` package in Node),
   * `protocol` (a `herald.token.<jwt>` WebSocket subprotocol, for browsers) or `url` (the `token`
   * query parameter, where proxies log it: only for servers that read nothing else). Default:
   * `header` in Node with a `WebSocket` option other than the global one, else `protocol`.
   */
  tokenIn?: 'header' | 'protocol' | 'url';
  /** The same as `tokenIn: 'url'` (for servers that read only the `token` query parameter). */
  tokenInUrl?: boolean;
  /**
   * The decoder of binary frames when the server chose `herald.msgpack` (offer it with
   * `protocols: ['herald.msgpack']`): `decodeMsgpack` from `@herald/client/msgpack`, kept out of
   * the core to keep it small.
   */
  msgpack?: (bytes: Uint8Array) => unknown;
  /**
   * The transports to try, in order: `'websocket'`, and `sse` (Server-Sent Events) and `stream`
   * (chunked NDJSON) from `@herald/client/fallback` for networks whose proxies refuse WebSocket.
   * The client moves to the next one after `fallbackAfter` attempts in a row that never opened,
   * and keeps the one that works for the rest of the session. Default `['websocket']`.
   */
  transports?: ('websocket' | Transport)[];
  /** Attempts in a row that never opened before the next transport is tried. Default 2. */
  fallbackAfter?: number;
  /** Channels to subscribe to (restored on every reconnect, like later `subscribe` calls). */
  channels?: string[];
  /** Rooms to join (restored on every reconnect, like later `joinRoom` calls). */
  rooms?: string[];
  /** Sent as `client_id`. */
  clientId?: string;
  /** Sent as `user_id` (honoured by Herald while authentication is off). */
  userId?: string | number;
  /** Further query parameters, e.g. `{ campaign_id: '123' }` for a dedicated endpoint. */
  params?: Record<string, string>;
  /** WebSocket subprotocols to offer. */
  protocols?: string | string[];
  /** The WebSocket implementation; defaults to `globalThis.WebSocket` (pass `ws`'s in Node < 22). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect timing, or `false` to never reconnect. */
  reconnect?: Partial<ReconnectOptions> | false;
  /**
   * Decides whether to reconnect after a close. Receives the close and the default rule's answer
   * (see `defaultShouldReconnect`). Not consulted after an explicit `close()`.
   */
  shouldReconnect?: (info: CloseInfo, byDefault: boolean) => boolean;
  /**
   * Consider the connection dead when nothing arrives for this long. Default: 2.5 × the
   * `heartbeat_interval` the server announces in its welcome (30 s until then). 0 disables.
   */
  heartbeatTimeoutMs?: number;
  /**
   * Send `{"type":"ping"}` after half the heartbeat timeout of silence, so that a server that
   * sends no heartbeat messages (only ping frames, which browsers hide) still answers. Default true.
   */
  idlePing?: boolean;
  /** Give up on a connection attempt that has not opened after this long. Default 10 s. */
  connectTimeoutMs?: number;
  /** Reject a request that got no reply after this long. Default 10 s. */
  requestTimeoutMs?: number;
  /** Which stream a message belongs to, for position tracking. */
  streamOf?: StreamOf;
  /**
   * Follow channels and rooms with positions (Herald's `seq`/`epoch`, for streams covered by a
   * `[[history]]` entry) and, after a reconnect, ask Herald for exactly the events missed while
   * disconnected, in order, before live events resume. When Herald no longer has them
   * (`recovered: false`), a `gap` event tells the application to reload its state. Needs the
   * default `streamOf`. Default false: a plain client.
   */
  recover?: boolean;
  /** Low-level reconnect hooks (see {@link ResumeOptions}). */
  resume?: ResumeOptions;
  /** Random source for backoff jitter (tests replace it). Default `Math.random`. */
  random?: () => number;
}

/**
 * The application's events per channel or room name, for typed subscriptions:
 * `new HeraldClient<{ orders: OrderEvent; [room: `chat:${string}`]: ChatEvent }>(…)`.
 */
export type EventMap = object;

/**
 * The client's state:
 * - `idle`: created, `connect()` not called yet;
 * - `connecting`: a connection attempt is in progress;
 * - `open`: the socket is open and channels and rooms are being restored;
 * - `ready`: restored; requests are sent immediately;
 * - `reconnecting`: waiting for the backoff delay before the next attempt;
 * - `closed`: `close()` was called, or the server closed with a code that means "do not retry".
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'ready' | 'reconnecting' | 'closed';

/** Payload of the `open` lifecycle event. */
export interface OpenEvent {
  /** Whether an earlier connection of this client had opened. */
  reconnect: boolean;
  url: string;
  /** `websocket`, `sse` or `stream`. */
  transport: string;
}

/** Payload of the `ready` lifecycle event. */
export interface ReadyEvent {
  reconnect: boolean;
  /** The welcome of this connection, unless the server sends none. */
  welcome: WelcomeMessage | undefined;
  channels: string[];
  rooms: string[];
}

/** Payload of the `close` lifecycle event. */
export interface CloseEvent extends CloseInfo {
  /** Whether the client will reconnect. */
  willReconnect: boolean;
}

/** Payload of the `reconnecting` lifecycle event. */
export interface ReconnectingEvent {
  /** 1 for the first attempt after a connection was lost. */
  attempt: number;
  delayMs: number;
  /** Why the previous connection or attempt ended. */
  lastClose: CloseInfo;
}

/**
 * Payload of the `gap` lifecycle event: after a reconnect with `recover: true`, Herald could not
 * replay what this stream missed (history no longer reaches back, or the stream was reset, e.g. a
 * single node restarted). Events from `seq` on follow live; reload the state from the application.
 */
export interface GapEvent {
  /** `c:<channel>` or `r:<room>`. */
  stream: string;
  channel?: string;
  room?: string;
  /** The position the client asked to resume from. */
  from: StreamPosition | undefined;
  /** The stream's current position. */
  seq: number;
  epoch: string;
}

/** Lifecycle events and their payloads. */
export interface HeraldLifecycleEvents {
  open: OpenEvent;
  welcome: WelcomeMessage;
  ready: ReadyEvent;
  close: CloseEvent;
  reconnecting: ReconnectingEvent;
  gap: GapEvent;
  error: Error;
}

/** Lifecycle event names; server messages with these `type`s reach only `'*'` handlers. */
export const LIFECYCLE_EVENTS: ReadonlySet<string> = new Set([
  'open',
  'welcome',
  'ready',
  'close',
  'reconnecting',
  'gap',
  'error',
]);

/** Options of one request. */
export interface RequestOptions {
  /** Overrides the client's `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** A message to send: an object with a string `type`. */
export type OutgoingMessage = { type: string; [field: string]: unknown };

type Handler = (payload: any) => void;

interface Pending {
  key: string;
  message: HeraldMessage;
  resolve: (reply: HeraldMessage) => void;
  reject: (error: HeraldError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The socket generation it was sent on; `undefined` while queued. */
  sentOn: number | undefined;
}

const OPEN = 1;
const WELCOME_TYPES = new Set(['connection', 'connection_established']);
const noop = (): void => {};

function now(): number {
  return globalThis.performance?.now() ?? Date.now();
}

function idKey(id: unknown): string | undefined {
  if (typeof id === 'string') return `s:${id}`;
  if (typeof id === 'number') return `n:${id}`;
  return undefined;
}

function isMessage(value: unknown): value is HeraldMessage {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && typeof (value as HeraldMessage).type === 'string';
}

function toList(names: string | readonly string[]): string[] {
  return typeof names === 'string' ? [names] : [...names];
}

/**
 * A Herald connection that stays connected: it reconnects with backoff, restores the channels and
 * rooms the application asked for, watches heartbeats, and matches replies to requests.
 *
 * ```ts
 * const client = new HeraldClient({ url: 'wss://example.com/ws', channels: ['campaigns'] });
 * client.on('campaign:launched', (event) => console.log(event.campaign_name));
 * await client.connect();
 * await client.joinRoom('campaign:123');
 * ```
 */
export class HeraldClient<Events extends EventMap = Record<string, HeraldMessage>> {
  readonly #options: HeraldClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  readonly #reconnect: ReconnectOptions | false;
  readonly #requestTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #positions: PositionTracker;
  readonly #handlers = new Map<string, Set<Handler>>();
  /** Subscription objects by stream key (`c:<channel>`, `r:<room>`). */
  readonly #subs = new Map<string, Subscription<any>>();
  #host: SubscriptionHost | undefined;

  // What the application asked for, restored on every connection.
  readonly #channels = new Set<string>();
  readonly #rooms = new Set<string>();

  #state: ConnectionState = 'idle';
  /** Index into the transports; moves on after `fallbackAfter` failed attempts in a row. */
  #transport = 0;
  #failures = 0;
  #stopped = true;
  #ws: WebSocketLike | null = null;
  /** Incremented for every connection attempt and by close(); stale callbacks compare it. */
  #gen = 0;
  #opened = 0;
  #attempt = 0;
  #urlChannels = new Set<string>();
  #welcome: WelcomeMessage | undefined;
  #welcomeSeen = false;
  #heartbeatIntervalMs = 30_000;
  #lastReceived = 0;
  #pinged = false;

  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #watchdogTimer: ReturnType<typeof setTimeout> | undefined;

  readonly #pending = new Map<string, Pending>();
  #queue: Pending[] = [];
  #readyWaiters: { resolve: () => void; reject: (e: HeraldError) => void }[] = [];
  readonly #idPrefix = `hc${Math.random().toString(36).slice(2, 8)}-`;
  #nextId = 0;

  constructor(options: HeraldClientOptions) {
    if (typeof options?.url !== 'string') {
      throw new HeraldError(ClientErrorCode.INVALID_ARGUMENT, 'options.url is required');
    }
    const Ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Ctor === undefined) {
      throw new HeraldError(
        ClientErrorCode.INVALID_ARGUMENT,
        'no WebSocket implementation: pass options.WebSocket (e.g. WebSocket from the "ws" package)',
      );
    }
    this.#options = { ...options };
    this.#WebSocket = Ctor;
    this.#reconnect = options.reconnect === false ? false : normalizeReconnect(options.reconnect);
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#positions = new PositionTracker(options.streamOf ?? defaultStreamOf);
    // Channels given in the URL itself become part of the desired set (so they can be unsubscribed).
    for (const channel of [...channelsInUrl(options.url), ...(options.channels ?? [])]) {
      assertName('channel', channel);
      this.#channels.add(channel);
    }
    for (const room of options.rooms ?? []) {
      assertName('room', room);
      this.#rooms.add(room);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Public API
  // ------------------------------------------------------------------------------------------

  /** The current state (see {@link ConnectionState}). */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The welcome of the current connection, if one arrived. */
  get welcome(): WelcomeMessage | undefined {
    return this.#welcome;
  }

  /** The subprotocol the server chose for the current connection (`herald.json`, `herald.msgpack`), if any. */
  get protocol(): string | undefined {
    return this.#ws?.protocol || undefined;
  }

  /** The name of the transport of the current (or next) connection. */
  get transport(): string {
    const t = this.#transports()[this.#transport] ?? 'websocket';
    return typeof t === 'string' ? t : t.name;
  }

  /** The server's id for the current connection. */
  get connectionId(): string | undefined {
    return this.#welcome?.connection_id;
  }

  /** The channels the application asked for (restored on reconnect). */
  get channels(): string[] {
    return [...this.#channels];
  }

  /** The rooms the application asked for (restored on reconnect). */
  get rooms(): string[] {
    return [...this.#rooms];
  }

  /** The last `seq`/`epoch` seen per stream (for resume; see README). */
  get positions(): Map<string, StreamPosition> {
    return this.#positions.snapshot();
  }

  /** Forgets every stream position. */
  resetPositions(): void {
    this.#positions.clear();
  }

  /**
   * Starts connecting (if not already) and resolves once the connection is `ready`: open, with
   * channels and rooms restored. Rejects with `CLOSED` if the client is closed first (by
   * `close()` or a close code that means "do not retry"). Calling it on a closed client starts
   * it again.
   */
  connect(): Promise<void> {
    if (this.#state === 'ready') return Promise.resolve();
    const ready = new Promise<void>((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
    ready.catch(noop); // a caller that does not await must not cause an unhandled rejection
    if (this.#stopped) {
      this.#stopped = false;
      this.#attempt = 0;
      void this.#openSocket();
    }
    return ready;
  }

  /**
   * Closes the connection for good: no reconnect. Pending requests reject with `CLOSED`. The
   * desired channels and rooms are kept, so a later `connect()` restores them.
   */
  close(code: number = CloseCode.NORMAL, reason = 'client closed'): void {
    const previous = this.#state;
    this.#stopped = true;
    this.#gen += 1;
    this.#clearTimer('reconnect');
    this.#clearTimer('connect');
    this.#clearTimer('watchdog');
    const ws = this.#ws;
    this.#ws = null;
    const validCode = code === CloseCode.NORMAL || (code >= 3000 && code <= 4999) ? code : CloseCode.NORMAL;
    if (ws !== null) {
      detach(ws);
      try {
        ws.close(validCode, reason);
      } catch {
        // Already closing; nothing to do.
      }
    }
    this.#state = 'closed';
    this.#subsLost();
    const error = new HeraldError(ClientErrorCode.CLOSED, 'client closed', { closeCode: validCode });
    this.#rejectAll(error, () => true);
    this.#rejectReadyWaiters(error);
    if (previous !== 'closed' && previous !== 'idle') {
      this.#emit('close', { code: validCode, reason, wasClean: true, willReconnect: false });
    }
  }

  /** During a backoff wait, reconnects at once (e.g. when the browser reports it is online again). */
  reconnectNow(): void {
    if (this.#state !== 'reconnecting') return;
    this.#clearTimer('reconnect');
    void this.#openSocket();
  }

  /**
   * Registers a handler. `type` is a message type (`'campaign:launched'`, `'heartbeat'`,
   * `'subscribed'`, …), `'*'` for every server message, or a lifecycle event (`open`, `welcome`,
   * `ready`, `close`, `reconnecting`, `error`). Returns a function that removes the handler.
   */
  on<K extends keyof HeraldLifecycleEvents>(type: K, handler: (event: HeraldLifecycleEvents[K]) => void): () => void;
  on<T extends HeraldMessage = HeraldMessage>(type: string, handler: (message: T) => void): () => void;
  on(type: string, handler: Handler): () => void {
    let set = this.#handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.#handlers.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  /** Removes a handler registered with {@link on}. */
  off(type: string, handler: (payload: any) => void): void {
    const set = this.#handlers.get(type);
    if (set === undefined) return;
    set.delete(handler);
    if (set.size === 0) this.#handlers.delete(type);
  }

  /**
   * Sends a message now if the connection is open; returns whether it was sent. Nothing is
   * queued or retried (use {@link request} for that).
   */
  send(message: OutgoingMessage): boolean {
    if (!isMessage(message)) {
      throw new HeraldError(ClientErrorCode.INVALID_ARGUMENT, 'a message must be an object with a string "type"');
    }
    const ws = this.#ws;
    if (ws === null || ws.readyState !== OPEN || (this.#state !== 'open' && this.#state !== 'ready')) return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Sends `message` with an `id` (generated unless the message has one) and resolves with the
   * server's reply carrying that `id`. Rejects with a {@link HeraldError}: the server's code for
   * an `error` reply, `TIMEOUT`, `DISCONNECTED` (the connection dropped while it was in flight;
   * requests are not re-sent), or `CLOSED`. Before the connection is ready the request waits in
   * a queue (the timeout runs from this call).
   */
  request<R extends HeraldMessage = HeraldMessage>(message: OutgoingMessage, options: RequestOptions = {}): Promise<R> {
    if (!isMessage(message)) {
      return Promise.reject(
        new HeraldError(ClientErrorCode.INVALID_ARGUMENT, 'a request must be an object with a string "type"'),
      );
    }
    if (this.#state === 'closed') {
      return Promise.reject(new HeraldError(ClientErrorCode.CLOSED, 'client closed'));
    }
    return this.#enqueue(message, options.timeoutMs ?? this.#requestTimeoutMs, false) as Promise<R>;
  }

  /**
   * Subscribes to channels: remembers them (restored on every reconnect) and asks the server.
   * Resolves with the `subscribed` reply. If the server refuses, the channels this call added
   * are forgotten again and the promise rejects with the server's code. A promise nobody awaits
   * does not cause an unhandled rejection.
   */
  subscribe(channels: string | readonly string[]): Promise<HeraldMessage> {
    const names = this.#checkNames('channel', channels);
    const added = names.filter((c) => !this.#channels.has(c));
    for (const c of names) this.#channels.add(c);
    return this.#intent({ type: 'subscribe', channels: names, ...this.#seqField() }, () => {
      for (const c of added) this.#channels.delete(c);
      // A refusal part-way may have subscribed the first names; undo them on the server too.
      if (added.length > 0) this.#fireAndForget({ type: 'unsubscribe', channels: added });
    });
  }

  /**
   * The subscription object of a channel (one per name): `subscribe()` it, listen to its events
   * (`sub.on('event', …)` or by message type), read its `history()`. Events reach it when they
   * name it (see README, "Subscriptions").
   */
  channel<K extends keyof Events & string>(name: K): Subscription<Events[K]>;
  channel(name: string): Subscription<HeraldMessage>;
  channel(name: string): Subscription<unknown> {
    return this.#sub('channel', name);
  }

  /** The subscription object of a room: a channel's API plus `presence()`, `join`/`leave` and `publish()`. */
  room<K extends keyof Events & string>(name: K): RoomSubscription<Events[K]>;
  room(name: string): RoomSubscription<HeraldMessage>;
  room(name: string): RoomSubscription<unknown> {
    return this.#sub('room', name) as RoomSubscription<unknown>;
  }

  /**
   * Drops a subscription object (after unsubscribing it): `channel()` / `room()` then make a new
   * one. Objects are otherwise kept, so one can be subscribed again with its handlers.
   */
  removeSubscription(sub: Subscription<any>): void {
    if (sub.state !== 'unsubscribed') void sub.unsubscribe().catch(noop);
    const key = `${sub.kind[0]}:${sub.name}`;
    if (this.#subs.get(key) === sub) this.#subs.delete(key);
  }

  /** Unsubscribes from channels: forgets them and tells the server. Resolves with `unsubscribed`. */
  unsubscribe(channels: string | readonly string[]): Promise<HeraldMessage> {
    const names = this.#checkNames('channel', channels);
    for (const c of names) {
      this.#channels.delete(c);
      this.#positions.delete(`c:${c}`);
      this.#subs.get(`c:${c}`)?.setState('unsubscribed', {});
    }
    return this.#intent({ type: 'unsubscribe', channels: names }, noop);
  }

  /** Joins a room (restored on every reconnect). Resolves with `room_joined`. */
  joinRoom(room: string): Promise<HeraldMessage> {
    const [name] = this.#checkNames('room', room) as [string];
    const added = !this.#rooms.has(name);
    this.#rooms.add(name);
    return this.#intent({ type: 'join_room', room: name, ...this.#seqField() }, () => {
      if (added) this.#rooms.delete(name);
    });
  }

  /** Leaves a room: forgets it and tells the server. Resolves with `room_left`. */
  leaveRoom(room: string): Promise<HeraldMessage> {
    const [name] = this.#checkNames('room', room) as [string];
    this.#rooms.delete(name);
    this.#positions.delete(`r:${name}`);
    this.#subs.get(`r:${name}`)?.setState('unsubscribed', {});
    return this.#intent({ type: 'leave_room', room: name }, noop);
  }

  #sub(kind: 'channel' | 'room', name: string): Subscription<unknown> {
    assertName(kind, name);
    const key = `${kind[0]}:${name}`;
    let sub = this.#subs.get(key);
    if (sub === undefined) {
      this.#host ??= {
        request: (message) => this.request(message),
        add: (k, n) => (k === 'channel' ? this.subscribe(n) : this.joinRoom(n)),
        remove: (k, n) => (k === 'channel' ? this.unsubscribe(n) : this.leaveRoom(n)),
        timeoutMs: this.#requestTimeoutMs,
        report: (error) => this.#emit('error', error),
      };
      sub = kind === 'channel' ? new Subscription(this.#host, kind, name) : new RoomSubscription(this.#host, kind, name);
      this.#subs.set(key, sub);
    }
    return sub;
  }

  /** Subscription objects that are confirmed go back to `subscribing` (the connection is gone). */
  #subsLost(): void {
    for (const sub of this.#subs.values()) {
      if (sub.state === 'subscribed') sub.setState('subscribing', { reconnect: true });
    }
  }

  /** Refreshes the token in band after `token_expiring`, before the server's deadline. */
  async #refreshToken(gen: number, message: HeraldMessage): Promise<void> {
    const getToken = this.#options.getToken;
    if (getToken === undefined) return;
    try {
      const token = await getToken();
      if (gen !== this.#gen) return;
      const type = typeof message.refresh_with === 'string' ? message.refresh_with : 'refresh_token';
      await this.#enqueue({ type, token }, this.#requestTimeoutMs, true);
    } catch (cause) {
      if (gen !== this.#gen) return;
      this.#emit(
        'error',
        cause instanceof HeraldError ? cause : new HeraldError(ClientErrorCode.TOKEN_ERROR, 'getToken failed', { cause }),
      );
    }
  }

  #transports(): ('websocket' | Transport)[] {
    return this.#options.transports ?? ['websocket'];
  }

  /** How the token travels on this client (see `tokenIn`). */
  #tokenIn(): 'header' | 'protocol' | 'url' {
    if (this.#options.tokenInUrl === true) return 'url';
    if (this.#options.tokenIn !== undefined) return this.#options.tokenIn;
    const g = globalThis as { process?: { versions?: { node?: string } }; WebSocket?: unknown };
    return typeof g.process?.versions?.node === 'string' && this.#WebSocket !== g.WebSocket ? 'header' : 'protocol';
  }

  // ------------------------------------------------------------------------------------------
  // Connections
  // ------------------------------------------------------------------------------------------

  async #openSocket(): Promise<void> {
    const gen = ++this.#gen;
    this.#state = 'connecting';
    this.#welcome = undefined;
    this.#welcomeSeen = false;
    // The timeout covers the whole attempt: fetching the token and opening the socket.
    if (this.#connectTimeoutMs > 0) {
      this.#connectTimer = setTimeout(() => {
        this.#connectTimer = undefined;
        if (gen === this.#gen && this.#state === 'connecting') this.#abandon(gen, 'connect timeout', false);
      }, this.#connectTimeoutMs);
    }
    let token = this.#options.token;
    if (this.#options.getToken !== undefined) {
      try {
        token = await this.#options.getToken();
      } catch (cause) {
        if (gen !== this.#gen) return;
        this.#emit('error', new HeraldError(ClientErrorCode.TOKEN_ERROR, 'getToken failed', { cause }));
        this.#socketEnded(gen, { code: CloseCode.ABNORMAL, reason: 'getToken failed', wasClean: false }, false);
        return;
      }
      if (gen !== this.#gen) return; // closed, timed out or superseded while waiting
    }
    let params = this.#options.params;
    const resumeParams = this.#options.resume?.params;
    if (resumeParams !== undefined && this.#positions.size > 0) {
      params = { ...params, ...resumeParams(this.#positions.snapshot()) };
    }
    let ws: WebSocketLike;
    let url: string;
    try {
      // With positions to recover, channels go in `subscribe` requests (which can carry them),
      // not in the URL (which cannot).
      const recovering = this.#options.recover === true && this.#positions.size > 0;
      const tokenIn = this.#tokenIn();
      const built = buildConnectUrl(this.#options.url, {
        channels: recovering ? new Set<string>() : this.#channels,
        token: tokenIn === 'url' ? token : undefined,
        clientId: this.#options.clientId,
        userId: this.#options.userId === undefined ? undefined : String(this.#options.userId),
        params: this.#options.recover === true ? { ...params, seq: '1' } : params,
      });
      url = built.url;
      this.#urlChannels = new Set(built.urlChannels);
      let protocols = this.#options.protocols;
      if (token !== undefined && tokenIn === 'protocol') {
        // The server must pick one of the offered protocols, so a real one goes first.
        protocols = [...toList(protocols ?? 'herald.json'), `herald.token.${token}`];
      }
      const transport = this.#transports()[this.#transport] ?? 'websocket';
      ws =
        transport !== 'websocket'
          ? transport.open(url, token)
          : token !== undefined && tokenIn === 'header'
            ? new this.#WebSocket(url, protocols, { headers: { Authorization: `Bearer ${token}` } })
            : new this.#WebSocket(url, protocols);
      if ('binaryType' in ws) ws.binaryType = 'arraybuffer';
    } catch (cause) {
      // A URL the WebSocket implementation refuses will be refused every time: stop.
      const error =
        cause instanceof HeraldError
          ? cause
          : new HeraldError(ClientErrorCode.INVALID_ARGUMENT, `cannot open a WebSocket: ${String(cause)}`, { cause });
      this.#emit('error', error);
      this.#stopForGood({ code: CloseCode.ABNORMAL, reason: error.message, wasClean: false }, error);
      return;
    }
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (gen !== this.#gen) return;
      opened = true;
      this.#clearTimer('connect');
      this.#opened += 1;
      this.#state = 'open';
      this.#lastReceived = now();
      this.#pinged = false;
      this.#armWatchdog(gen);
      const reconnect = this.#opened > 1;
      this.#failures = 0;
      this.#emit('open', { reconnect, url, transport: this.transport });
      if (gen === this.#gen) void this.#restore(gen, reconnect);
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (gen !== this.#gen) return;
      this.#lastReceived = now();
      this.#pinged = false;
      this.#receive(event.data);
    };
    ws.onerror = () => {
      if (gen !== this.#gen) return;
      this.#emit('error', new HeraldError(ClientErrorCode.SOCKET_ERROR, `WebSocket error on ${redact(url)}`));
    };
    ws.onclose = (event: { code?: number; reason?: string; wasClean?: boolean }) => {
      this.#socketEnded(
        gen,
        { code: event.code ?? CloseCode.ABNORMAL, reason: event.reason ?? '', wasClean: event.wasClean ?? false },
        opened,
      );
    };
  }

  /** Restores the desired channels and rooms on a fresh connection, then becomes ready. */
  async #restore(gen: number, reconnect: boolean): Promise<void> {
    const onOpen = this.#options.resume?.onOpen;
    if (onOpen !== undefined && this.#positions.size > 0) {
      try {
        await onOpen({ positions: this.#positions.snapshot(), client: this, reconnect });
      } catch (cause) {
        this.#emit('error', new HeraldError(ClientErrorCode.HANDLER_ERROR, 'resume.onOpen failed', { cause }));
      }
      if (gen !== this.#gen) return;
    }
    const steps: Promise<void>[] = [];
    const missing = [...this.#channels].filter((c) => !this.#urlChannels.has(c));
    const extra = [...this.#urlChannels].filter((c) => !this.#channels.has(c));
    if (missing.length > 0) {
      const recover = this.#recoverFor('c', missing);
      const subscribe: OutgoingMessage = { type: 'subscribe', channels: missing, ...this.#seqField() };
      if (recover !== undefined) subscribe.recover = recover;
      steps.push(this.#restoreStep(gen, subscribe, (error) => {
        for (const c of missing) {
          this.#channels.delete(c);
          this.#subs.get(`c:${c}`)?.refused(error);
        }
      }));
    }
    if (extra.length > 0) steps.push(this.#restoreStep(gen, { type: 'unsubscribe', channels: extra }, noop));
    for (const room of this.#rooms) {
      const join: OutgoingMessage = { type: 'join_room', room, ...this.#seqField() };
      const recover = this.#recoverFor('r', [room]);
      if (recover !== undefined) join.recover = recover[room];
      steps.push(this.#restoreStep(gen, join, (error) => {
        this.#rooms.delete(room);
        this.#subs.get(`r:${room}`)?.refused(error);
      }));
    }
    // Without other requests, a ping: its reply proves the server has registered the connection
    // (and its URL subscriptions), so events published after `ready` reach it.
    if (steps.length === 0) steps.push(this.#restoreStep(gen, { type: 'ping' }, noop));
    await Promise.all(steps);
    if (gen !== this.#gen || this.#state !== 'open') return;
    this.#state = 'ready';
    this.#attempt = 0;
    const queued = this.#queue;
    this.#queue = [];
    for (const pending of queued) this.#transmit(pending);
    const ready: ReadyEvent = { reconnect, welcome: this.#welcome, channels: this.channels, rooms: this.rooms };
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const waiter of waiters) waiter.resolve();
    for (const [key, sub] of this.#subs) {
      const wanted = key[0] === 'c' ? this.#channels.has(sub.name) : this.#rooms.has(sub.name);
      if (wanted && sub.state === 'subscribing') sub.setState('subscribed', undefined);
    }
    this.#emit('ready', ready);
  }

  /** `{seq: true}` for subscribe and join requests when the client follows positions. */
  #seqField(): { seq?: true } {
    return this.#options.recover === true ? { seq: true } : {};
  }

  /** The known positions of these channels (`c`) or rooms (`r`), as Herald's `recover` map. */
  #recoverFor(kind: 'c' | 'r', names: readonly string[]): Record<string, { seq: number; epoch: string }> | undefined {
    if (this.#options.recover !== true) return undefined;
    const recover: Record<string, { seq: number; epoch: string }> = {};
    let any = false;
    for (const name of names) {
      const position = this.#positions.get(`${kind}:${name}`);
      if (position === undefined) continue;
      recover[name] = { seq: position.seq, epoch: position.epoch === undefined ? '' : String(position.epoch) };
      any = true;
    }
    return any ? recover : undefined;
  }

  /**
   * Reads the position reports of `subscribed` (`streams: {channel: {seq, epoch, recovered?}}`)
   * and `room_joined` (`stream: {…}`): reports a gap, and starts a stream's position at the
   * reported one unless a replay (`recovered: true`) is about to advance it event by event.
   */
  #readStreamReports(message: HeraldMessage): void {
    if (this.#options.recover !== true) return;
    const reports: [string, { channel?: string; room?: string }, unknown][] = [];
    if (message.type === 'subscribed' && typeof message.streams === 'object' && message.streams !== null) {
      for (const [channel, report] of Object.entries(message.streams as Record<string, unknown>)) {
        reports.push([`c:${channel}`, { channel }, report]);
      }
    } else if (message.type === 'room_joined' && typeof message.room === 'string') {
      reports.push([`r:${message.room}`, { room: message.room }, message.stream]);
    }
    for (const [stream, names, report] of reports) {
      if (typeof report !== 'object' || report === null) continue;
      const { seq, epoch, recovered } = report as { seq?: unknown; epoch?: unknown; recovered?: unknown };
      if (typeof seq !== 'number' || typeof epoch !== 'string') continue;
      if (recovered === true) continue;
      const from = this.#positions.get(stream);
      this.#positions.reset(stream, { seq, epoch });
      if (recovered === false) this.#emit('gap', { stream, ...names, from, seq, epoch });
    }
  }

  /** One restore request; a server refusal drops the name from the desired set and is reported. */
  async #restoreStep(gen: number, message: OutgoingMessage, forget: (error: HeraldError) => void): Promise<void> {
    try {
      await this.#enqueue(message, this.#requestTimeoutMs, true);
    } catch (error) {
      if (gen !== this.#gen) return;
      if (error instanceof HeraldError && error.isServerError) {
        forget(error);
        this.#emit(
          'error',
          new HeraldError(error.code, `restoring ${JSON.stringify(message)} was refused: ${error.message}`, {
            reply: error.reply as HeraldMessage,
          }),
        );
      } else if (error instanceof HeraldError && error.code === ClientErrorCode.TIMEOUT) {
        // Herald answers every request; no answer means the connection is not healthy.
        this.#abandon(gen, 'restore timeout', true);
      }
    }
  }

  /** A socket closed (or an attempt failed): reconnect or stop. */
  #socketEnded(gen: number, info: CloseInfo, opened: boolean): void {
    if (gen !== this.#gen) return;
    const ws = this.#ws;
    this.#ws = null;
    if (ws !== null) detach(ws);
    this.#clearTimer('connect');
    this.#clearTimer('watchdog');
    this.#rejectAll(
      new HeraldError(ClientErrorCode.DISCONNECTED, `connection closed (${info.code}) before the reply arrived`, {
        closeCode: info.code,
      }),
      (p) => p.sentOn === gen,
    );
    // Nothing from this attempt (a late getToken, a stale socket callback) may act any more.
    const current = ++this.#gen;
    const transports = this.#transports();
    // A token service that fails says nothing about the transport.
    const transportFailed = !opened && info.reason !== 'getToken failed';
    if (transportFailed && transports.length > 1 && ++this.#failures >= (this.#options.fallbackAfter ?? 2)) {
      this.#failures = 0;
      this.#transport = (this.#transport + 1) % transports.length;
    }
    this.#subsLost();
    if (this.#stopped) return;
    const byDefault = defaultShouldReconnect(info, { canRefreshToken: this.#options.getToken !== undefined });
    let retry = this.#reconnect !== false && (this.#options.shouldReconnect?.(info, byDefault) ?? byDefault);
    if (retry && this.#reconnect !== false && this.#attempt >= this.#reconnect.maxAttempts) retry = false;
    if (!retry) {
      const reason = `connection closed (${info.code} ${info.reason}) and not retried`;
      this.#stopForGood(info, new HeraldError(ClientErrorCode.CLOSED, reason, { closeCode: info.code }));
      return;
    }
    this.#state = 'reconnecting';
    if (opened) this.#emit('close', { ...info, willReconnect: true });
    if (this.#stopped || current !== this.#gen) return; // a handler closed or reconnected
    this.#scheduleReconnect(info);
  }

  #stopForGood(info: CloseInfo, error: HeraldError): void {
    this.#stopped = true;
    this.#gen += 1;
    this.#clearTimer('reconnect');
    this.#clearTimer('connect');
    this.#clearTimer('watchdog');
    this.#state = 'closed';
    this.#rejectAll(error, () => true);
    this.#rejectReadyWaiters(error);
    this.#emit('close', { ...info, willReconnect: false });
  }

  #scheduleReconnect(lastClose: CloseInfo): void {
    const options = this.#reconnect as ReconnectOptions;
    this.#attempt += 1;
    const delayMs = computeBackoffDelay(this.#attempt, options, this.#options.random);
    this.#state = 'reconnecting';
    const gen = this.#gen;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (!this.#stopped && gen === this.#gen) void this.#openSocket();
    }, delayMs);
    this.#emit('reconnecting', { attempt: this.#attempt, delayMs, lastClose });
  }

  /** Gives up on a socket the client considers dead and proceeds as if it had closed. */
  #abandon(gen: number, reason: string, opened: boolean): void {
    const ws = this.#ws;
    if (ws !== null) {
      detach(ws);
      try {
        ws.close(CloseCode.NORMAL, reason);
      } catch {
        // Closing a socket that never opened may throw in some implementations.
      }
    }
    this.#socketEnded(gen, { code: CloseCode.ABNORMAL, reason, wasClean: false }, opened);
  }

  // ------------------------------------------------------------------------------------------
  // Heartbeat watchdog
  // ------------------------------------------------------------------------------------------

  #heartbeatTimeoutMs(): number {
    return this.#options.heartbeatTimeoutMs ?? 2.5 * this.#heartbeatIntervalMs;
  }

  #armWatchdog(gen: number): void {
    this.#clearTimer('watchdog');
    const timeout = this.#heartbeatTimeoutMs();
    if (!(timeout > 0)) return;
    const pingAt = this.#lastReceived + timeout / 2;
    const deadAt = this.#lastReceived + timeout;
    const idlePing = this.#options.idlePing ?? true;
    const t = now();
    const next = idlePing && !this.#pinged && t < pingAt ? pingAt : deadAt;
    this.#watchdogTimer = setTimeout(() => this.#checkWatchdog(gen), Math.max(0, next - t));
  }

  #checkWatchdog(gen: number): void {
    this.#watchdogTimer = undefined;
    if (gen !== this.#gen) return;
    const timeout = this.#heartbeatTimeoutMs();
    const silent = now() - this.#lastReceived;
    if (silent >= timeout) {
      this.#abandon(gen, 'heartbeat timeout', true);
      return;
    }
    if ((this.#options.idlePing ?? true) && !this.#pinged && silent >= timeout / 2) {
      this.#pinged = true;
      this.send({ type: 'ping' });
    }
    this.#armWatchdog(gen);
  }

  // ------------------------------------------------------------------------------------------
  // Messages
  // ------------------------------------------------------------------------------------------

  #receive(data: unknown): void {
    let message: unknown;
    try {
      if (typeof data === 'string') message = JSON.parse(data);
      else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        // Binary frames are MessagePack when `herald.msgpack` was negotiated, JSON otherwise.
        if (this.#ws?.protocol !== 'herald.msgpack') message = JSON.parse(new TextDecoder().decode(bytes));
        else if (this.#options.msgpack !== undefined) message = this.#options.msgpack(bytes);
        else throw new Error('herald.msgpack was negotiated but no `msgpack` decoder was given');
      } else throw new Error('not text or binary');
    } catch (cause) {
      this.#emit('error', new HeraldError(ClientErrorCode.INVALID_FRAME, 'received a frame that could not be decoded', { cause }));
      return;
    }
    if (!isMessage(message)) {
      this.#emit('error', new HeraldError(ClientErrorCode.INVALID_FRAME, 'received JSON without a string "type"'));
      return;
    }
    this.#positions.observe(message);
    this.#readStreamReports(message);

    if (!this.#welcomeSeen && WELCOME_TYPES.has(message.type) && typeof message.connection_id === 'string') {
      this.#welcomeSeen = true;
      this.#welcome = message as WelcomeMessage;
      const interval = (message as WelcomeMessage).heartbeat_interval;
      if (typeof interval === 'number' && interval > 0) {
        this.#heartbeatIntervalMs = interval * 1000;
        this.#armWatchdog(this.#gen);
      }
      this.#emit('welcome', message as WelcomeMessage);
    }

    const key = idKey(message.id);
    const pending = key === undefined ? undefined : this.#pending.get(key);
    if (pending !== undefined && pending.sentOn === this.#gen) {
      this.#settle(pending);
      if (message.type === 'error') pending.reject(HeraldError.fromReply(message));
      else pending.resolve(message);
    } else if (message.type === 'error') {
      // An error that answers no request of ours (e.g. for a message sent with `send`).
      this.#emit('error', HeraldError.fromReply(message));
    }
    if (message.type === 'token_expiring') void this.#refreshToken(this.#gen, message);
    if (message.type !== 'error' && !LIFECYCLE_EVENTS.has(message.type)) this.#emit(message.type, message);
    this.#emit('*', message);
    // Replies to requests are not events of a subscription.
    if (pending === undefined && message.type !== 'error') {
      const stream = typeof message.stream === 'string' && /^[cr]:/.test(message.stream) ? message.stream : undefined;
      const room = typeof message.room === 'string' ? message.room : message.room_id;
      const key =
        stream ??
        (typeof message.channel === 'string' ? `c:${message.channel}` : typeof room === 'string' ? `r:${room}` : undefined);
      if (key !== undefined) this.#subs.get(key)?.deliver(message);
    }
  }

  /** Creates a request; sends it now if possible, otherwise queues it until ready. */
  #enqueue(message: OutgoingMessage, timeoutMs: number, internal: boolean): Promise<HeraldMessage> {
    const id = message.id ?? `${this.#idPrefix}${++this.#nextId}`;
    const key = idKey(id);
    if (key === undefined) {
      return Promise.reject(new HeraldError(ClientErrorCode.INVALID_ARGUMENT, 'a request id must be a string or a number'));
    }
    if (this.#pending.has(key)) {
      return Promise.reject(new HeraldError(ClientErrorCode.INVALID_ARGUMENT, `request id ${String(id)} is already in flight`));
    }
    return new Promise<HeraldMessage>((resolve, reject) => {
      const pending: Pending = { key, message: { ...message, id }, resolve, reject, timer: undefined, sentOn: undefined };
      this.#pending.set(key, pending);
      if (timeoutMs > 0) {
        pending.timer = setTimeout(() => {
          pending.timer = undefined;
          this.#settle(pending);
          reject(new HeraldError(ClientErrorCode.TIMEOUT, `no reply to ${message.type} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      if (internal || this.#state === 'ready') this.#transmit(pending);
      else this.#queue.push(pending);
    });
  }

  #transmit(pending: Pending): void {
    const ws = this.#ws;
    if (ws === null || ws.readyState !== OPEN) {
      // Lost between the caller's check and now: keep it for the next connection.
      this.#queue.push(pending);
      return;
    }
    pending.sentOn = this.#gen;
    try {
      ws.send(JSON.stringify(pending.message));
    } catch (cause) {
      this.#settle(pending);
      pending.reject(new HeraldError(ClientErrorCode.DISCONNECTED, 'could not send', { cause }));
    }
  }

  /** Removes a request from the books (its promise is settled by the caller). */
  #settle(pending: Pending): void {
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    pending.timer = undefined;
    this.#pending.delete(pending.key);
    const i = this.#queue.indexOf(pending);
    if (i >= 0) this.#queue.splice(i, 1);
  }

  #rejectAll(error: HeraldError, which: (p: Pending) => boolean): void {
    for (const pending of [...this.#pending.values()]) {
      if (!which(pending)) continue;
      this.#settle(pending);
      pending.reject(error);
    }
  }

  #rejectReadyWaiters(error: HeraldError): void {
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  /** A subscription change: its promise never causes an unhandled rejection; refusals undo it. */
  #intent(message: OutgoingMessage, undo: () => void): Promise<HeraldMessage> {
    const promise =
      this.#state === 'closed'
        ? Promise.reject(new HeraldError(ClientErrorCode.CLOSED, 'client closed; the change applies on the next connect()'))
        : this.#enqueue(message, this.#requestTimeoutMs, false);
    promise.catch((error: unknown) => {
      if (error instanceof HeraldError && error.isServerError) undo();
    });
    return promise;
  }

  #fireAndForget(message: OutgoingMessage): void {
    if (this.#state === 'ready') this.#enqueue(message, this.#requestTimeoutMs, false).catch(noop);
  }

  #checkNames(kind: 'channel' | 'room', names: string | readonly string[]): string[] {
    const list = toList(names);
    if (list.length === 0) throw new HeraldError(ClientErrorCode.INVALID_ARGUMENT, `no ${kind} given`);
    for (const name of list) assertName(kind, name);
    return [...new Set(list)];
  }

  // ------------------------------------------------------------------------------------------
  // Events and timers
  // ------------------------------------------------------------------------------------------

  #emit(type: string, payload: unknown): void {
    const set = this.#handlers.get(type);
    if (set === undefined) return;
    for (const handler of [...set]) {
      try {
        handler(payload);
      } catch (cause) {
        if (type === 'error') {
          // Nowhere left to report it without looping.
          console.error('HeraldClient: an error handler threw', cause);
        } else {
          this.#emit('error', new HeraldError(ClientErrorCode.HANDLER_ERROR, `a "${type}" handler threw`, { cause }));
        }
      }
    }
  }

  #clearTimer(which: 'reconnect' | 'connect' | 'watchdog'): void {
    const field = which === 'reconnect' ? this.#reconnectTimer : which === 'connect' ? this.#connectTimer : this.#watchdogTimer;
    if (field !== undefined) clearTimeout(field);
    if (which === 'reconnect') this.#reconnectTimer = undefined;
    else if (which === 'connect') this.#connectTimer = undefined;
    else this.#watchdogTimer = undefined;
  }
}

/** Stops a socket from calling back into the client (errors are swallowed: `ws` throws on unhandled ones). */
function detach(ws: WebSocketLike): void {
  ws.onopen = noop;
  ws.onmessage = noop;
  ws.onclose = noop;
  ws.onerror = noop;
}

/** The URL without its `token`, for messages. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.searchParams.has('token')) parsed.searchParams.set('token', '…');
    return parsed.toString();
  } catch {
    return '(invalid URL)';
  }
}
