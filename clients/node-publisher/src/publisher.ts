import { randomUUID } from 'node:crypto';

import { HeraldConfigError } from './errors.js';
import type { HeraldEvent } from './event.js';
import { HttpTransport, type HttpOptions } from './http.js';
import { RedisTransport, type RedisOptions } from './redis.js';
import type { PublishResult } from './result.js';
import { DEFAULT_ROUTING, httpPublishBody, redisMessage, type EventPayload, type Routing, type Target, type UserId } from './routing.js';

/** Options of {@link HeraldPublisher.http}. */
export interface HttpPublisherOptions extends HttpOptions {
  /** Herald's `redis.room_field` (default `room`): the event field that names its room. */
  roomField?: string;
  /** Herald's `redis.user_field` (default `user_id`). */
  userField?: string;
  /** Route by the room / user fields found in the event, as Herald's Redis ingest does (default true). */
  routeFromFields?: boolean;
}

/** Options of {@link HeraldPublisher.redis}. */
export interface RedisPublisherOptions extends RedisOptions {
  /** One of Herald's `redis.prefixes`: events go to `<prefix>:<channel>`. */
  prefix: string;
  /** The channel for room-only and user-only events (default `_direct`). */
  directChannel?: string;
  /** Herald's `redis.room_field` (default `room`). */
  roomField?: string;
  /** Herald's `redis.user_field` (default `user_id`). */
  userField?: string;
}

/** Options of {@link HeraldPublisher.postMessage}. */
export interface PostMessageOptions {
  /** `system` (default), `text`, `file` or `image`. */
  messageType?: string;
  /** The sender, for a message posted on a user's behalf. */
  userId?: UserId;
  username?: string;
  metadata?: Record<string, unknown>;
  /** Stored encrypted (needs Herald's encryption keys). */
  sensitive?: boolean;
  /** Herald stores a message once per (room, sender, key); a random one unless given. */
  idempotencyKey?: string;
}

/** Herald's answer to {@link HeraldPublisher.postMessage}. */
export interface PostedMessage {
  /** The stored message as Herald returns it (`id`, `room`, `content`, `created_at`, …). */
  message: Record<string, unknown>;
  /** True when the idempotency key had been used: nothing new was stored or delivered. */
  duplicate: boolean;
}

type Transport = HttpTransport | RedisTransport;

/** The environment variables {@link HeraldPublisher.fromEnv} reads. */
export type Environment = Record<string, string | undefined>;

/**
 * Publishes events to Herald from Node backends, through its HTTP API or Redis, with the method
 * names of the Python `herald-publisher` package: `publish`, `publishToRoom`, `notifyUser`,
 * `publishEvent`, `close`.
 *
 * ```ts
 * const publisher = HeraldPublisher.http('http://127.0.0.1:8000', { apiKey: process.env.HERALD_API_KEY });
 * await publisher.publish({ type: 'order:shipped', order_id: 7 }, { channel: 'orders', room: 'order:7' });
 * ```
 */
export class HeraldPublisher {
  readonly transport: Transport;
  readonly prefix: string | undefined;
  readonly routing: Routing;

  constructor(transport: Transport, options: { prefix?: string; routing?: Partial<Routing> } = {}) {
    if (transport instanceof RedisTransport && !options.prefix) {
      throw new HeraldConfigError('a Redis publisher needs the prefix Herald pattern-subscribes (redis.prefixes)');
    }
    this.transport = transport;
    this.prefix = options.prefix;
    this.routing = { ...DEFAULT_ROUTING, ...options.routing };
  }

  /** Publishes with `POST /api/publish` (`Authorization: Bearer <apiKey>`), over kept-alive connections. */
  static http(baseUrl: string, options: HttpPublisherOptions = {}): HeraldPublisher {
    const routing: Partial<Routing> = {};
    if (options.roomField !== undefined) routing.roomField = options.roomField;
    if (options.userField !== undefined) routing.userField = options.userField;
    if (options.routeFromFields !== undefined) routing.routeFromFields = options.routeFromFields;
    return new HeraldPublisher(new HttpTransport(baseUrl, options), { routing });
  }

  /** Publishes with `PUBLISH <prefix>:<channel>` on the Redis Herald reads. */
  static redis(options: RedisPublisherOptions): HeraldPublisher {
    const routing: Partial<Routing> = {};
    if (options.directChannel !== undefined) routing.directChannel = options.directChannel;
    if (options.roomField !== undefined) routing.roomField = options.roomField;
    if (options.userField !== undefined) routing.userField = options.userField;
    return new HeraldPublisher(new RedisTransport(options), { prefix: options.prefix, routing });
  }

  /**
   * From `HERALD_URL` + `HERALD_API_KEY` (HTTP) or `REDIS_URL` / `HERALD_REDIS_URL` +
   * `HERALD_REDIS_PREFIX` (Redis); `HERALD_TRANSPORT` chooses when both are set. Also
   * `HERALD_DIRECT_CHANNEL`, `HERALD_ROOM_FIELD`, `HERALD_USER_FIELD`, `HERALD_TIMEOUT` (seconds).
   */
  static fromEnv(env: Environment = process.env): HeraldPublisher {
    let transport = (env.HERALD_TRANSPORT ?? '').trim().toLowerCase();
    const httpUrl = env.HERALD_URL;
    const redisUrl = env.HERALD_REDIS_URL || env.REDIS_URL;
    if (!transport) transport = httpUrl ? 'http' : redisUrl ? 'redis' : '';
    const routing = {
      roomField: env.HERALD_ROOM_FIELD ?? 'room',
      userField: env.HERALD_USER_FIELD ?? 'user_id',
      directChannel: env.HERALD_DIRECT_CHANNEL ?? '_direct',
    };
    const seconds = Number(env.HERALD_TIMEOUT ?? '5');
    if (!Number.isFinite(seconds) || seconds <= 0) {
      throw new HeraldConfigError(`HERALD_TIMEOUT must be a positive number of seconds, not ${JSON.stringify(env.HERALD_TIMEOUT)}`);
    }
    const timeoutMs = seconds * 1000;
    if (transport === 'http') {
      if (!httpUrl) throw new HeraldConfigError('HERALD_TRANSPORT=http needs HERALD_URL (e.g. http://127.0.0.1:8000)');
      const options: HttpOptions = { timeoutMs };
      if (env.HERALD_API_KEY) options.apiKey = env.HERALD_API_KEY;
      return new HeraldPublisher(new HttpTransport(httpUrl, options), { routing });
    }
    if (transport === 'redis') {
      if (!redisUrl) throw new HeraldConfigError('HERALD_TRANSPORT=redis needs REDIS_URL (or HERALD_REDIS_URL)');
      const prefix = env.HERALD_REDIS_PREFIX;
      if (!prefix) {
        throw new HeraldConfigError('publishing through Redis needs HERALD_REDIS_PREFIX: one of Herald\'s redis.prefixes (e.g. myapp)');
      }
      return new HeraldPublisher(new RedisTransport({ url: redisUrl, timeoutMs }), { prefix, routing });
    }
    if (transport) throw new HeraldConfigError(`HERALD_TRANSPORT must be 'redis' or 'http', not ${JSON.stringify(transport)}`);
    throw new HeraldConfigError(
      'set HERALD_URL (and HERALD_API_KEY) to publish over HTTP, or REDIS_URL and HERALD_REDIS_PREFIX for Redis',
    );
  }

  /**
   * Publishes `event` (a JSON object, delivered as is) to a channel's subscribers, a room's members
   * and a user's connections (any combination; each connection once).
   *
   * Throws `HeraldTargetError` (no target, an invalid name checked locally for Redis, or an explicit
   * room/user contradicting the event's own field), `HeraldHTTPError` (Herald refused, with its
   * `code`), `HeraldConnectionError` (Herald or Redis unreachable).
   */
  async publish(event: EventPayload, target: Target = {}): Promise<PublishResult> {
    if (this.transport instanceof RedisTransport) {
      const [channel, message] = redisMessage(event, this.prefix ?? '', this.routing, target);
      return this.transport.publish(channel, message);
    }
    return this.transport.publish('/api/publish', httpPublishBody(event, this.routing, target));
  }

  /** Publishes `event` to the members of `room` only. */
  publishToRoom(room: string, event: EventPayload): Promise<PublishResult> {
    return this.publish(event, { room });
  }

  /** Publishes `event` to every connection of `userId` only. */
  notifyUser(userId: UserId, event: EventPayload): Promise<PublishResult> {
    return this.publish(event, { userId });
  }

  /** Publishes a built event (see `buildEvent`) to its channel and room. */
  publishEvent(event: HeraldEvent): Promise<PublishResult> {
    const target: Target = {};
    if (event.channel !== undefined) target.channel = event.channel;
    if (event.room !== undefined) target.room = event.room;
    return this.publish(event.payload, target);
  }

  /**
   * HTTP only: posts a chat message to a room's history (`POST /api/rooms/{room}/messages`, a
   * system notice by default), answered once it is stored. It carries an `Idempotency-Key` (a
   * random one unless given), so it is retried after any transient failure, a lost answer
   * included, and stored once.
   */
  async postMessage(room: string, content: string, options: PostMessageOptions = {}): Promise<PostedMessage> {
    if (!(this.transport instanceof HttpTransport)) {
      throw new HeraldConfigError('postMessage needs the HTTP transport (Herald stores messages it receives over HTTP)');
    }
    const body: Record<string, unknown> = { content };
    if (options.messageType !== undefined) body.message_type = options.messageType;
    if (options.userId !== undefined) body.user_id = options.userId;
    if (options.username !== undefined) body.username = options.username;
    if (options.metadata !== undefined) body.metadata = options.metadata;
    if (options.sensitive !== undefined) body.sensitive = options.sensitive;
    const answer = await this.transport.postIdempotent(
      `/api/rooms/${encodeURIComponent(room)}/messages`,
      body,
      options.idempotencyKey ?? randomUUID(),
    );
    const message = answer.message;
    return {
      message: message !== null && typeof message === 'object' ? (message as Record<string, unknown>) : {},
      duplicate: answer.duplicate === true,
    };
  }

  /** Releases the connections the publisher opened. */
  close(): Promise<void> {
    return this.transport.close();
  }
}
