import type { HeraldMessage, StreamPosition } from './types.js';

/**
 * Which stream a message belongs to, for position tracking: a key such as `channel:campaigns`
 * or `room:campaign:123`, or `undefined` when the message names no stream.
 *
 * The default reads, in order: a string `stream` field (used as is), a string `channel` field,
 * a string `room` field. Herald delivers events exactly as published, so this only finds what
 * publishers put into the event, or the `stream` (`c:<channel>`, `r:<room>`) Herald adds to events of
 * streams with history for connections that asked for positions.
 */
export type StreamOf = (message: HeraldMessage) => string | undefined;

export const defaultStreamOf: StreamOf = (message) => {
  if (typeof message.stream === 'string' && message.stream !== '') return message.stream;
  if (typeof message.channel === 'string' && message.channel !== '') return `channel:${message.channel}`;
  if (typeof message.room === 'string' && message.room !== '') return `room:${message.room}`;
  return undefined;
};

/**
 * The last `seq` (and `epoch`) seen per stream: the client half of resume-after-reconnect. With
 * the client's `recover` option they are sent back to Herald on every reconnect.
 *
 * A position only moves forward within an epoch; a new epoch (the stream was reset) replaces it.
 */
export class PositionTracker {
  readonly #positions = new Map<string, StreamPosition>();

  constructor(private readonly streamOf: StreamOf) {}

  /** Records the message's position if it carries a numeric `seq` and names a stream. */
  observe(message: HeraldMessage): void {
    const seq = message.seq;
    if (typeof seq !== 'number' || !Number.isFinite(seq)) return;
    const stream = this.streamOf(message);
    if (stream === undefined) return;
    const epoch = typeof message.epoch === 'string' || typeof message.epoch === 'number' ? message.epoch : undefined;
    const previous = this.#positions.get(stream);
    if (previous !== undefined && previous.epoch === epoch && previous.seq >= seq) return;
    this.#positions.set(stream, epoch === undefined ? { seq } : { seq, epoch });
  }

  /** Sets a stream's position as reported by the server (a fresh follow, or after a gap). */
  reset(stream: string, position: StreamPosition): void {
    const previous = this.#positions.get(stream);
    // A live event may already have moved past the report; never go back within an epoch.
    if (previous !== undefined && previous.epoch === position.epoch && previous.seq >= position.seq) return;
    this.#positions.set(stream, { ...position });
  }

  /** A copy of one stream's position. */
  get(stream: string): StreamPosition | undefined {
    const position = this.#positions.get(stream);
    return position === undefined ? undefined : { ...position };
  }

  /** Forgets one stream (unsubscribed, left). */
  delete(stream: string): void {
    this.#positions.delete(stream);
  }

  /** A copy of every stream's position. */
  snapshot(): Map<string, StreamPosition> {
    return new Map([...this.#positions].map(([k, v]) => [k, { ...v }]));
  }

  get size(): number {
    return this.#positions.size;
  }

  clear(): void {
    this.#positions.clear();
  }
}
