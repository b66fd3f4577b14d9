import { HeraldConfigError, HeraldConnectionError, HeraldNotDeliveredError } from './errors.js';
import type { PublishResult } from './result.js';

/** The part of a node-redis client this package uses (`redis` 4.6 or 5). */
export interface RedisLike {
  publish(channel: string, message: string): Promise<number>;
  connect?(): Promise<unknown>;
  quit?(): Promise<unknown>;
  close?(): Promise<unknown>;
  on?(event: string, listener: (...args: unknown[]) => void): unknown;
  isOpen?: boolean;
}

/** Options of the Redis transport. */
export interface RedisOptions {
  /** `redis://host:6379/0`; or pass `client`. */
  url?: string;
  /** Your own node-redis client, connected or not; left open by `close()`. */
  client?: RedisLike;
  /** Connection timeout in milliseconds (default 5000). */
  timeoutMs?: number;
  /** Throw `HeraldNotDeliveredError` when no Herald node was subscribed (0 receivers). */
  requireReceiver?: boolean;
}

/**
 * `PUBLISH` with node-redis (the `redis` package, an optional peer dependency: install it
 * yourself). The client is created and connected on the first publish. A publish while Redis is
 * unreachable fails at once with `HeraldConnectionError` (no offline queue): the event is not
 * held back to be delivered late.
 */
export class RedisTransport {
  readonly name = 'redis';
  readonly requireReceiver: boolean;
  readonly #url: string | undefined;
  readonly #timeoutMs: number;
  readonly #owned: boolean;
  #client: RedisLike | undefined;
  #connecting: Promise<RedisLike> | undefined;

  constructor(options: RedisOptions) {
    if (!options.client && !options.url) throw new HeraldConfigError('a Redis URL or client is required');
    this.#url = options.url;
    this.#client = options.client;
    this.#owned = options.client === undefined;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.requireReceiver = options.requireReceiver ?? false;
  }

  async #ready(): Promise<RedisLike> {
    if (this.#client !== undefined) {
      // A client passed in unconnected is connected here; one this transport opened reconnects
      // by itself.
      if (!this.#owned && this.#client.isOpen === false && this.#client.connect) await this.#client.connect();
      return this.#client;
    }
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<RedisLike> {
    let redis: { createClient(options: unknown): RedisLike };
    try {
      redis = (await import('redis')) as unknown as typeof redis;
    } catch (error) {
      throw new HeraldConfigError('the Redis transport needs the `redis` package: npm install redis', { cause: error });
    }
    let connected = false;
    const client = redis.createClient({
      url: this.#url,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: this.#timeoutMs,
        // Give up on the first connection (the publish fails with a clear error); after that,
        // reconnect in the background like any long-lived client.
        reconnectStrategy: (retries: number, cause: Error) => (connected ? Math.min(50 * 2 ** retries, 2000) : cause),
      },
    });
    // node-redis reports connection trouble as 'error' events; publishes report it to the caller.
    client.on?.('error', () => undefined);
    client.on?.('ready', () => {
      connected = true;
    });
    try {
      await client.connect?.();
    } catch (error) {
      throw new HeraldConnectionError(`Redis is unreachable: ${(error as Error).message}`, { cause: error });
    }
    this.#client = client;
    return client;
  }

  async publish(channel: string, message: string): Promise<PublishResult> {
    const client = await this.#ready();
    let receivers: number;
    try {
      receivers = Number(await client.publish(channel, message));
    } catch (error) {
      throw new HeraldConnectionError(`Redis is unreachable: ${(error as Error).message}`, { cause: error });
    }
    if (this.requireReceiver && receivers === 0) {
      throw new HeraldNotDeliveredError(`PUBLISH ${channel} reached no subscriber: is a Herald node listening on this prefix?`);
    }
    return { transport: 'redis', receivers };
  }

  /** Closes the connection this transport opened (not a client you passed in). */
  async close(): Promise<void> {
    const client = this.#client;
    if (!this.#owned || client === undefined) return;
    this.#client = undefined;
    if (client.isOpen === false) return;
    if (typeof client.close === 'function') await client.close();
    else if (typeof client.quit === 'function') await client.quit();
  }
}
