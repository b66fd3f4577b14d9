/**
 * `@herald/client/react`: React hooks over {@link HeraldClient}. React is an optional peer
 * dependency of the package; only this entry point imports it.
 *
 * @packageDocumentation
 */
import { useEffect, useRef, useState } from 'react';

import { HeraldClient, type ConnectionState, type EventMap, type HeraldClientOptions } from './client.js';
import type { HeraldError } from './errors.js';
import type { PresenceMember, Subscription, SubscriptionState } from './subscription.js';
import type { HeraldMessage } from './types.js';

/** What {@link useHerald} returns. */
export interface UseHeraldResult<Events extends EventMap> {
  /** The client (the same object for the component's life, or until `url` changes). */
  client: HeraldClient<Events> | undefined;
  /** The connection state, re-rendered on every change. */
  state: ConnectionState;
}

const STATE_EVENTS = ['open', 'ready', 'close', 'reconnecting'] as const;

/** How many mounted hooks hold each subscription: the last one to unmount unsubscribes. */
const holders = new WeakMap<Subscription<unknown>, number>();

function hold(sub: Subscription<unknown>, onError: (e: HeraldError) => void): void {
  holders.set(sub, (holders.get(sub) ?? 0) + 1);
  sub.subscribe().catch(onError);
}

function release(sub: Subscription<unknown>): void {
  const left = (holders.get(sub) ?? 1) - 1;
  holders.set(sub, left);
  if (left === 0) sub.unsubscribe().catch(() => undefined);
}

/**
 * Creates a client for `options.url`, connects it, and closes it on unmount (a new client when
 * `url` changes; other options are read when the client is created). Or pass a client the
 * application made: it is followed, not connected or closed.
 */
export function useHerald<Events extends EventMap = Record<string, HeraldMessage>>(
  options: HeraldClientOptions | HeraldClient<Events>,
): UseHeraldResult<Events> {
  // Not `instanceof`: the CommonJS build of this entry carries its own copy of the class.
  const given = typeof (options as HeraldClient<Events>).connect === 'function' ? (options as HeraldClient<Events>) : undefined;
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const url = given === undefined ? (options as HeraldClientOptions).url : undefined;
  const [client, setClient] = useState<HeraldClient<Events> | undefined>(given);
  const [state, setState] = useState<ConnectionState>(given?.state ?? 'idle');

  useEffect(() => {
    const herald = given ?? new HeraldClient<Events>(optionsRef.current as HeraldClientOptions);
    setClient(herald);
    setState(herald.state);
    const offs = STATE_EVENTS.map((type) => herald.on(type, () => setState(herald.state)));
    if (given === undefined) herald.connect().catch(() => setState(herald.state));
    return () => {
      for (const off of offs) off();
      if (given === undefined) herald.close();
    };
  }, [given, url]);

  return { client, state };
}

/** What {@link useSubscription} returns. */
export interface UseSubscriptionResult<T> {
  state: SubscriptionState;
  /** The latest event of the subscription. */
  last: T | undefined;
  /** The last refusal or failure. */
  error: HeraldError | undefined;
}

/**
 * Subscribes `client` to a channel (or, with `{ room: true }`, joins a room) while the component
 * is mounted, and re-renders with its state and latest event. `onEvent` sees every event.
 */
export function useSubscription<Events extends EventMap, K extends keyof Events & string>(
  client: HeraldClient<Events> | undefined,
  name: K,
  options: { room?: boolean; onEvent?: (event: Events[K]) => void } = {},
): UseSubscriptionResult<Events[K]> {
  const [state, setState] = useState<SubscriptionState>('unsubscribed');
  const [last, setLast] = useState<Events[K] | undefined>(undefined);
  const [error, setError] = useState<HeraldError | undefined>(undefined);
  const onEvent = useRef(options.onEvent);
  onEvent.current = options.onEvent;
  const room = options.room === true;

  useEffect(() => {
    if (client === undefined) return undefined;
    const sub = room ? client.room(name) : client.channel(name);
    setState(sub.state);
    const offs = [
      ...(['subscribing', 'subscribed', 'unsubscribed'] as const).map((type) => sub.on(type, () => setState(sub.state))),
      sub.on('error', (e) => setError(e)),
      sub.on('event', (e) => {
        setLast(e as Events[K]);
        onEvent.current?.(e as Events[K]);
      }),
    ];
    hold(sub, setError);
    return () => {
      for (const off of offs) off();
      release(sub);
    };
  }, [client, name, room]);

  return { state, last, error };
}

/**
 * The members of a room (joined while the component is mounted), re-rendered on every
 * `join`, `leave` and `room_state`. `undefined` until Herald reports them.
 */
export function usePresence<Events extends EventMap>(
  client: HeraldClient<Events> | undefined,
  room: keyof Events & string,
): PresenceMember[] | undefined {
  const [members, setMembers] = useState<PresenceMember[] | undefined>(undefined);
  useEffect(() => {
    if (client === undefined) return undefined;
    const sub = client.room(room);
    const update = (): void => setMembers(sub.members);
    const offs = [sub.on('event', update), sub.on('subscribing', update), sub.on('unsubscribed', update)];
    update();
    hold(sub, () => undefined);
    return () => {
      for (const off of offs) off();
      release(sub);
    };
  }, [client, room]);
  return members;
}
