import type { EventPayload } from './routing.js';

/** Fields every helper sets itself; callers cannot pass them as `extra`. */
export const RESERVED_FIELDS: ReadonlySet<string> = new Set(['type', 'timestamp', 'room']);

/** One event ready to publish: the JSON object clients receive, and where it goes. */
export interface HeraldEvent {
  type: string;
  channel?: string;
  room?: string;
  payload: EventPayload;
}

/** ISO 8601 in UTC with milliseconds and a `Z`: `2024-01-15T10:30:00.123Z`. */
export function utcTimestamp(now: Date = new Date()): string {
  return now.toISOString();
}

/**
 * The first template whose placeholders all have a value in `fields` (not null or undefined),
 * filled in: `renderRoom(['lead:{lead_id}', 'conversation:{conversation_id}'], { conversation_id: 7 })`
 * is `'conversation:7'`.
 */
export function renderRoom(templates: readonly string[], fields: Record<string, unknown>): string | undefined {
  for (const template of templates) {
    const names = [...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string);
    if (names.every((name) => fields[name] !== undefined && fields[name] !== null)) {
      return template.replace(/\{(\w+)\}/g, (_, name: string) => String(fields[name]));
    }
  }
  return undefined;
}

type Derivation = (...values: unknown[]) => unknown;

const DERIVATIONS: Record<string, Derivation> = {
  percent: (current, total) => {
    if (!total) return 0;
    return Math.round((Number(current) / Number(total)) * 1000) / 10;
  },
};

/** Options of {@link buildEvent}. */
export interface BuildOptions {
  /** Fields set when the caller did not give them. */
  fixed?: Record<string, unknown>;
  /** `[field, rule, sources]`: a field computed from others (`['percent', 'percent', ['sent', 'total']]`). */
  derived?: ReadonlyArray<readonly [string, string, readonly string[]]>;
  /** More fields; they cannot replace one the helper set. */
  extra?: Record<string, unknown>;
  /** The timestamp's moment (default: now). */
  now?: Date;
}

/**
 * Builds an event: `type`, the given fields (null and undefined left out), fixed and derived
 * fields, `extra`, `room` (from the first room template whose fields are all given), then
 * `timestamp`. Throws a `TypeError` when `extra` would replace a field the helper sets.
 */
export function buildEvent(
  type: string,
  channel: string | undefined,
  rooms: readonly string[],
  fields: Record<string, unknown>,
  options: BuildOptions = {},
): HeraldEvent {
  const payload: EventPayload = { type };
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) payload[key] = value instanceof Date ? value.toISOString() : value;
  }
  for (const [key, value] of Object.entries(options.fixed ?? {})) {
    if (!(key in payload)) payload[key] = value;
  }
  for (const [name, rule, sources] of options.derived ?? []) {
    const derive = DERIVATIONS[rule];
    if (derive === undefined) throw new TypeError(`unknown derivation ${JSON.stringify(rule)}`);
    if (payload[name] === undefined || payload[name] === null) payload[name] = derive(...sources.map((s) => fields[s]));
  }
  for (const [key, value] of Object.entries(options.extra ?? {})) {
    if (RESERVED_FIELDS.has(key) || key in payload) {
      throw new TypeError(`extra field ${JSON.stringify(key)} would replace a field the helper sets`);
    }
    payload[key] = value;
  }
  const room = renderRoom(rooms, fields);
  if (room !== undefined) payload.room = room;
  payload.timestamp = utcTimestamp(options.now);
  const event: HeraldEvent = { type, payload };
  if (channel !== undefined) event.channel = channel;
  if (room !== undefined) event.room = room;
  return event;
}
