import { ClientErrorCode, HeraldError } from './errors.js';
import type { HeraldMessage, StreamPosition } from './types.js';

/**
 * A subscription's state:
 * - `unsubscribed`: not asked for (created, `unsubscribe()` called, or refused by the server);
 * - `subscribing`: asked for, not confirmed on the current connection yet (also while reconnecting);
 * - `subscribed`: the server confirmed it on the current connection.
 */
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** A member of a room, as Herald's `room_state` and `user_joined` report it. */
export interface PresenceMember {
  user_id: string;
  username?: string | null;
  [field: string]: unknown;
}

/** Payload of a subscription's `join` and `leave` events (Herald's `user_joined` / `user_left`). */
export interface PresenceEvent extends HeraldMessage {
  user_id: string;
  username?: string | null;
  room: string;
}

/** Options of {@link Subscription.history}. */
export interface HistoryOptions {
  /** At most this many of the newest events (1 to 100000). */
  limit?: number;
  /** Only events after this position. */
  since?: StreamPosition;
}

/** The reply to a history request: the stream's recent events, oldest first, each with its `seq`. */
export interface HistoryResult<T> extends HeraldMessage {
  stream: string;
  epoch: string;
  /** The stream's newest position. */
  seq: number;
  /** With `since`: whether every event after it was still there. */
  recovered?: boolean;
  events: T[];
}

/** A subscription's lifecycle events and their payloads. */
export interface SubscriptionLifecycleEvents<T> {
  /** Every event routed to this subscription (see README, "Subscriptions"). */
  event: T;
  subscribing: { reconnect: boolean };
  subscribed: HeraldMessage | undefined;
  unsubscribed: { error?: HeraldError };
  /** The server refused the subscription (its code in `code`), or a request of it failed. */
  error: HeraldError;
  /** Rooms: a user joined (first connection in the room). */
  join: PresenceEvent;
  /** Rooms: a user left (last connection in the room). */
  leave: PresenceEvent;
}

/** Subscription event names; server messages of these `type`s reach only `'event'` handlers. */
const RESERVED = new Set(['event', 'subscribing', 'subscribed', 'unsubscribed', 'error', 'join', 'leave']);

type Handler = (payload: any) => void;

/** What a subscription needs from its client (kept narrow so the client's internals stay private). */
export interface SubscriptionHost {
  request(message: { type: string; [field: string]: unknown }): Promise<HeraldMessage>;
  add(kind: 'channel' | 'room', name: string): Promise<HeraldMessage>;
  remove(kind: 'channel' | 'room', name: string): Promise<HeraldMessage>;
  timeoutMs: number;
  report(error: unknown): void;
}

/**
 * A channel subscription (from `client.channel(name)`): its state, its events, its history.
 * Restored after every reconnect (with resume of positions when the client has `recover: true`).
 */
export class Subscription<T = HeraldMessage> {
  /** `channel` or `room`. */
  readonly kind: 'channel' | 'room';
  readonly name: string;
  #state: SubscriptionState = 'unsubscribed';
  readonly #handlers = new Map<string, Set<Handler>>();
  /** @internal */
  protected readonly host: SubscriptionHost;

  /** @internal Use `client.channel()` or `client.room()`. */
  constructor(host: SubscriptionHost, kind: 'channel' | 'room', name: string) {
    this.host = host;
    this.kind = kind;
    this.name = name;
  }

  /** The current state (see {@link SubscriptionState}). */
  get state(): SubscriptionState {
    return this.#state;
  }

  /**
   * Asks for the subscription (kept across reconnects) and resolves once the server confirmed
   * it. Rejects with the server's code when refused (the state becomes `unsubscribed` and an
   * `error` event fires).
   */
  async subscribe(): Promise<this> {
    if (this.#state === 'unsubscribed') this.setState('subscribing', { reconnect: false });
    let reply: HeraldMessage;
    try {
      reply = await this.host.add(this.kind, this.name);
    } catch (error) {
      if (error instanceof HeraldError && error.isServerError) this.refused(error);
      throw error;
    }
    this.setState('subscribed', reply);
    return this;
  }

  /** Drops the subscription and tells the server (when connected). */
  async unsubscribe(): Promise<void> {
    if (this.#state === 'unsubscribed') return;
    this.setState('unsubscribed', {});
    await this.host.remove(this.kind, this.name).catch((error: unknown) => {
      // The server forgets it anyway when the connection is gone.
      if (error instanceof HeraldError && error.isServerError) throw error;
    });
  }

  /** The stream's recent events (for channels and rooms with `[[history]]` on the server). */
  history(options: HistoryOptions = {}): Promise<HistoryResult<T>> {
    const message: { type: string; [field: string]: unknown } = { type: 'history', [this.kind]: this.name };
    if (options.limit !== undefined) message.limit = options.limit;
    if (options.since !== undefined) {
      message.since = { seq: options.since.seq, epoch: options.since.epoch === undefined ? '' : String(options.since.epoch) };
    }
    return this.host.request(message) as Promise<HistoryResult<T>>;
  }

  /**
   * Registers a handler: `'event'` for every event of this subscription, a message `type`, or a
   * lifecycle event (`subscribing`, `subscribed`, `unsubscribed`, `error`; rooms also `join`,
   * `leave`). Returns a function that removes it.
   */
  on<K extends keyof SubscriptionLifecycleEvents<T>>(
    type: K,
    handler: (payload: SubscriptionLifecycleEvents<T>[K]) => void,
  ): () => void;
  on(type: string, handler: (message: T) => void): () => void;
  on(type: string, handler: Handler): () => void {
    let set = this.#handlers.get(type);
    if (set === undefined) this.#handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => this.off(type, handler);
  }

  /** Removes a handler registered with {@link on}. */
  off(type: string, handler: Handler): void {
    this.#handlers.get(type)?.delete(handler);
  }

  /** @internal */
  emit(type: string, payload: unknown): void {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        handler(payload);
      } catch (cause) {
        this.host.report(new HeraldError(ClientErrorCode.HANDLER_ERROR, `a "${type}" handler of ${this.name} threw`, { cause }));
      }
    }
  }

  /** @internal A server message routed to this subscription. */
  deliver(message: HeraldMessage): void {
    this.emit('event', message);
    if (!RESERVED.has(message.type)) this.emit(message.type, message);
  }

  /** @internal */
  setState(state: SubscriptionState, payload: unknown): void {
    if (state === this.#state) return;
    this.#state = state;
    this.emit(state, payload);
  }

  /** @internal The server refused it (now or while restoring). */
  refused(error: HeraldError): void {
    this.emit('error', error);
    this.setState('unsubscribed', { error });
  }
}

/**
 * A room (from `client.room(name)`): a {@link Subscription} with presence (`presence()`,
 * `join` and `leave` events) and `publish()` (Herald's persisted chat messages).
 */
export class RoomSubscription<T = HeraldMessage> extends Subscription<T> {
  #members: Map<string, PresenceMember> | undefined;
  #waiters: (() => void)[] = [];

  /** The room's members as last reported, or `undefined` before the first `room_state`. */
  get members(): PresenceMember[] | undefined {
    return this.#members === undefined ? undefined : [...this.#members.values()];
  }

  /**
   * The room's members: at once when known, otherwise after the `room_state` Herald sends a
   * connection with a user when it joins. Rejects with `TIMEOUT` when none arrives.
   */
  presence(): Promise<PresenceMember[]> {
    if (this.#members !== undefined) return Promise.resolve(this.members as PresenceMember[]);
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(this.members as PresenceMember[]);
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        reject(new HeraldError(ClientErrorCode.TIMEOUT, `no room_state for ${this.name} (Herald sends one to connections with a user)`));
      }, this.host.timeoutMs);
      this.#waiters.push(done);
    });
  }

  /**
   * Sends a chat message to the room (`chat_message`: stored, then delivered to its members).
   * Resolves with the `chat_message_ack` once it is durable.
   */
  publish(content: string, options: { messageType?: string; idempotencyKey?: string } = {}): Promise<HeraldMessage> {
    const message: { type: string; [field: string]: unknown } = { type: 'chat_message', room: this.name, content };
    if (options.messageType !== undefined) message.message_type = options.messageType;
    if (options.idempotencyKey !== undefined) message.idempotency_key = options.idempotencyKey;
    return this.host.request(message);
  }

  /** @internal */
  override deliver(message: HeraldMessage): void {
    if (message.type === 'room_state' && Array.isArray(message.users)) {
      this.#members = new Map();
      for (const user of message.users as PresenceMember[]) {
        if (typeof user?.user_id === 'string') this.#members.set(user.user_id, user);
      }
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const waiter of waiters) waiter();
    } else if (message.type === 'user_joined' && typeof message.user_id === 'string') {
      const user = typeof message.user === 'object' && message.user !== null ? (message.user as PresenceMember) : undefined;
      this.#members?.set(message.user_id, user ?? { user_id: message.user_id, username: message.username as string });
      this.emit('join', message);
    } else if (message.type === 'user_left' && typeof message.user_id === 'string') {
      this.#members?.delete(message.user_id);
      this.emit('leave', message);
    }
    super.deliver(message);
  }

  /** @internal */
  override setState(state: SubscriptionState, payload: unknown): void {
    // A fresh join (after a reconnect too) brings a fresh room_state.
    if (state !== 'subscribed') this.#members = undefined;
    super.setState(state, payload);
  }
}
