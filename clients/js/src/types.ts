/** Any message on a Herald connection: a JSON object with a string `type`. */
export interface HeraldMessage {
  type: string;
  [field: string]: unknown;
}

/** The welcome Herald sends first on every connection (`connection` or `connection_established`). */
export interface WelcomeMessage extends HeraldMessage {
  connection_id: string;
  client_id?: string;
  channels?: string[];
  rooms?: string[];
  /** Seconds between the server's heartbeats. */
  heartbeat_interval?: number;
  user_id?: string;
  node?: string;
}

/**
 * The part of the WebSocket API the client uses. Browsers' `WebSocket` and the `ws` package's
 * `WebSocket` both fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /** The negotiated subprotocol (`herald.msgpack` switches decoding to MessagePack). */
  readonly protocol?: string;
  /** Set to `arraybuffer` so that binary frames arrive as bytes in browsers. */
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor (`globalThis.WebSocket`, or `WebSocket` from the `ws` package in Node). */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  /** Node's `ws` package: `{ headers }` carries `Authorization` (see `tokenIn`). */
  options?: { headers?: Record<string, string> },
) => WebSocketLike;

/** How a connection ended. */
export interface CloseInfo {
  /** The WebSocket close code (1006 when the connection failed or was abandoned by the client). */
  code: number;
  /** The close reason (for abandoned connections: `connect timeout` or `heartbeat timeout`). */
  reason: string;
  /** Whether the closing handshake completed. */
  wasClean: boolean;
}

/** The last position seen on one stream (see `HeraldClient.positions`). */
export interface StreamPosition {
  seq: number;
  epoch?: string | number;
}

/**
 * A transport other than WebSocket (`sse` and `stream` from `@herald/client/fallback`): opens one
 * connection to the endpoint `url` (the token goes in a header, never in the URL).
 */
export interface Transport {
  readonly name: string;
  open(url: string, token: string | undefined): WebSocketLike;
}
