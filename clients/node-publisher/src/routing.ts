// Where an event goes, for each transport. Pure functions: no I/O.
//
// Herald routes an event to the union of a channel's subscribers, a room's members and a user's
// connections, each connection once.
//
// - Over Redis the target is encoded the way Herald's ingest reads it: `PUBLISH <prefix>:<channel>
//   <json>`, and the event's `room` / `user_id` fields (names configurable, matching Herald's
//   `redis.room_field` / `redis.user_field`) add the room and the user. A Redis message always names
//   a channel, so an event for a room or a user only goes to the direct channel (`_direct` by
//   default), which clients must not subscribe to.
// - Over HTTP the target is explicit in `POST /api/publish`. So that both transports deliver the
//   same event to the same connections, the routing fields are written into the event here too,
//   and (unless `routeFromFields` is off) fields already in the event route it as Redis would.

import { HeraldConfigError, HeraldTargetError } from './errors.js';

/** A JSON object: what Herald delivers to clients. */
export type EventPayload = Record<string, unknown>;

/** A user id: Herald accepts strings and numbers. */
export type UserId = string | number;

/** Longest channel, room or user name Herald accepts, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 200;

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** How events are routed; must match the Herald configuration. */
export interface Routing {
  /** Herald's `redis.room_field` (default `room`); empty disables room routing through Redis. */
  roomField: string;
  /** Herald's `redis.user_field` (default `user_id`); empty disables user routing through Redis. */
  userField: string;
  /** Redis only: the channel that carries room-only and user-only events (default `_direct`). */
  directChannel: string;
  /** HTTP only: route by `roomField` / `userField` found in the event, as Herald's Redis ingest does. */
  routeFromFields: boolean;
}

/** The defaults, matching Herald's. */
export const DEFAULT_ROUTING: Readonly<Routing> = Object.freeze({
  roomField: 'room',
  userField: 'user_id',
  directChannel: '_direct',
  routeFromFields: true,
});

/** Where one publish goes; any combination, each connection reached once. */
export interface Target {
  channel?: string;
  room?: string;
  userId?: UserId;
}

/** Returns the name as text, or throws `INVALID_NAME` for one Herald would refuse. */
export function checkName(kind: string, name: unknown): string {
  if (typeof name !== 'string' && typeof name !== 'number') {
    throw new HeraldTargetError('INVALID_NAME', `${kind} must be a string, not ${name === null ? 'null' : typeof name}`);
  }
  const text = String(name);
  if (text === '') throw new HeraldTargetError('INVALID_NAME', `${kind} name must not be empty`);
  const size = Buffer.byteLength(text, 'utf8');
  if (size > MAX_NAME_BYTES) {
    throw new HeraldTargetError('INVALID_NAME', `${kind} name is ${size} bytes; the limit is ${MAX_NAME_BYTES}`);
  }
  if (CONTROL.test(text)) throw new HeraldTargetError('INVALID_NAME', `${kind} name must not contain control characters`);
  return text;
}

/** The value of a routing field as Herald's ingest reads it: a non-empty string or a number. */
function fieldTarget(payload: EventPayload, field: string): string | number | undefined {
  if (!field) return undefined;
  const value = payload[field];
  if (typeof value === 'string' && value !== '') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  return undefined;
}

/** Writes an explicit target into the event, refusing to contradict what is already there. */
function withTarget(payload: EventPayload, field: string, value: UserId, kind: string): void {
  if (!field) throw new HeraldConfigError(`cannot route to a ${kind} through fields: its field name is empty`);
  const existing = payload[field];
  if (existing !== undefined && existing !== null && String(existing) !== String(value)) {
    throw new HeraldTargetError(
      'CONFLICTING_TARGET',
      `the event's ${JSON.stringify(field)} is ${JSON.stringify(existing)} but ${kind} ${JSON.stringify(value)} was given`,
    );
  }
  payload[field] = value;
}

function asObject(event: unknown): EventPayload {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    const kind = event === null ? 'null' : Array.isArray(event) ? 'array' : typeof event;
    throw new HeraldTargetError('INVALID_EVENT', `an event must be a JSON object, not ${kind}`);
  }
  return { ...(event as EventPayload) };
}

/** The Redis channel and message for an event: `["<prefix>:<channel>", json]`. */
export function redisMessage(event: EventPayload, prefix: string, routing: Routing, target: Target): [string, string] {
  const payload = asObject(event);
  if (target.room !== undefined) withTarget(payload, routing.roomField, checkName('room', target.room), 'room');
  if (target.userId !== undefined) {
    checkName('user', target.userId);
    withTarget(payload, routing.userField, target.userId, 'user');
  }
  const roomTarget = fieldTarget(payload, routing.roomField);
  const userTarget = fieldTarget(payload, routing.userField);
  if (roomTarget !== undefined) checkName('room', String(roomTarget));
  if (userTarget !== undefined) checkName('user', String(userTarget));
  let channel = target.channel;
  if (channel === undefined) {
    if (roomTarget === undefined && userTarget === undefined) {
      throw new HeraldTargetError('NO_TARGET', 'give at least one of channel, room or userId');
    }
    channel = routing.directChannel;
  }
  checkName('channel', channel);
  return [`${prefix}:${channel}`, JSON.stringify(payload)];
}

/** The body of `POST /api/publish` for an event. Names are left for Herald to check. */
export function httpPublishBody(event: EventPayload, routing: Routing, target: Target): Record<string, unknown> {
  const payload = asObject(event);
  let { room, userId } = target;
  if (room !== undefined && routing.roomField) withTarget(payload, routing.roomField, room, 'room');
  if (userId !== undefined && routing.userField) withTarget(payload, routing.userField, userId, 'user');
  if (routing.routeFromFields) {
    if (room === undefined) {
      const found = fieldTarget(payload, routing.roomField);
      room = found === undefined ? undefined : String(found);
    }
    if (userId === undefined) userId = fieldTarget(payload, routing.userField);
  }
  const body: Record<string, unknown> = {};
  if (target.channel !== undefined) body.channel = target.channel;
  if (room !== undefined) body.room = room;
  if (userId !== undefined) body.user_id = userId;
  body.event = payload;
  return body;
}
