/**
 * A React hook over `HeraldClient`, equivalent to the campaign document's `useWebSocket(url,
 * channels)`: it returns `{ connected, messages, sendMessage }`, plus room and subscription
 * helpers. Unlike a bare WebSocket it reconnects with backoff and restores channels and rooms,
 * so `joinRoom` is called once, not on every reconnect.
 *
 * This file is an example, not part of the package (the package has no React dependency); copy
 * it into an application. It is type-checked by `npm run typecheck:examples`.
 */
import { useCallback, useEffect, useRef, useState } from 'react';

import { HeraldClient, type HeraldClientOptions, type HeraldMessage, type OutgoingMessage } from '@herald/client';

export interface UseHeraldOptions extends Omit<HeraldClientOptions, 'url' | 'channels'> {
  /** Keep at most this many messages in `messages` (oldest dropped). Default 500. */
  maxMessages?: number;
}

export interface UseHeraldResult {
  /** True while the connection is ready (open, channels and rooms restored). */
  connected: boolean;
  /** Messages received so far (heartbeats excluded), oldest first. */
  messages: HeraldMessage[];
  /** Sends a message if connected; returns whether it was sent. */
  sendMessage: (message: OutgoingMessage) => boolean;
  /** Joins a room, kept across reconnects. */
  joinRoom: (room: string) => Promise<HeraldMessage> | undefined;
  /** Leaves a room. */
  leaveRoom: (room: string) => Promise<HeraldMessage> | undefined;
  /** The underlying client (undefined before the first effect runs). */
  client: HeraldClient | undefined;
}

/**
 * Connects to `url` subscribed to `channels`. A new connection is made only when `url` or the
 * channel list's contents change (not its identity, so inline arrays are fine). `options` are
 * read when the connection is created.
 */
export function useHerald(url: string, channels?: string[], options: UseHeraldOptions = {}): UseHeraldResult {
  const [connected, setConnected] = useState(false);
  const [messages, setMessages] = useState<HeraldMessage[]>([]);
  const [client, setClient] = useState<HeraldClient | undefined>(undefined);
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const channelKey = JSON.stringify(channels ?? []);

  useEffect(() => {
    const { maxMessages = 500, ...clientOptions } = optionsRef.current;
    const herald = new HeraldClient({ ...clientOptions, url, channels: JSON.parse(channelKey) as string[] });
    const unsubscribe = [
      herald.on('ready', () => setConnected(true)),
      herald.on('close', () => setConnected(false)),
      herald.on('reconnecting', () => setConnected(false)),
      herald.on('*', (message) => {
        if (message.type === 'heartbeat') return;
        setMessages((previous) => [...previous, message].slice(-maxMessages));
      }),
    ];
    setClient(herald);
    // Failures are reported through 'close'; the promise only signals the first ready.
    herald.connect().catch(() => undefined);
    return () => {
      for (const off of unsubscribe) off();
      herald.close();
      setClient(undefined);
      setConnected(false);
    };
  }, [url, channelKey]);

  const sendMessage = useCallback((message: OutgoingMessage) => client?.send(message) ?? false, [client]);
  const joinRoom = useCallback((room: string) => client?.joinRoom(room), [client]);
  const leaveRoom = useCallback((room: string) => client?.leaveRoom(room), [client]);

  return { connected, messages, sendMessage, joinRoom, leaveRoom, client };
}
