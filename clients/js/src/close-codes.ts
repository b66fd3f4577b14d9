import type { CloseInfo } from './types.js';

/** Close codes Herald (and WebSocket in general) uses. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  /** Herald is shutting down (graceful restart, deploy): reconnect. */
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  /** No close frame: the network failed, the server died, or the handshake was refused. */
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
  /** Policy violation: authentication or origin refused. */
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  MANDATORY_EXTENSION: 1010,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  /** IANA-registered "Unauthorized". */
  UNAUTHORIZED: 3000,
  /** IANA-registered "Forbidden". */
  FORBIDDEN: 3003,
  /** Herald: nothing was received from the client for `websocket.idle_timeout`. */
  IDLE_TIMEOUT: 4000,
  /** Herald: an operator disconnected this connection (`DELETE /api/connections/{id}`). */
  DISCONNECTED_BY_ADMIN: 4001,
  /** Herald: the credentials expired and were not refreshed. */
  TOKEN_EXPIRED: 4003,
  /** Herald: the client did not read fast enough; its outbound queue filled. */
  SLOW_CONSUMER: 4008,
});

/**
 * Close codes after which the default rule does not reconnect: reconnecting would be refused
 * again, or would override a deliberate decision.
 *
 * - 1002, 1003, 1007, 1010: the two sides disagree about the protocol; a new connection would
 *   fail the same way.
 * - 1008, 3000, 3003: authentication or authorisation was refused.
 * - 4001: an operator disconnected this client on purpose.
 */
export const NO_RECONNECT_CODES: ReadonlySet<number> = new Set([
  CloseCode.PROTOCOL_ERROR,
  CloseCode.UNSUPPORTED_DATA,
  CloseCode.INVALID_PAYLOAD,
  CloseCode.POLICY_VIOLATION,
  CloseCode.MANDATORY_EXTENSION,
  CloseCode.UNAUTHORIZED,
  CloseCode.FORBIDDEN,
  CloseCode.DISCONNECTED_BY_ADMIN,
]);

/**
 * The default reconnect rule.
 *
 * Reconnect after every close except:
 * - the codes in {@link NO_RECONNECT_CODES};
 * - 4003 (token expired) when there is no `getToken` to fetch a fresh token: the same token
 *   would be refused again. With `getToken`, 4003 reconnects with a new token.
 *
 * Everything else reconnects with backoff: 1000 and 1001 (the server ended or is restarting),
 * 1006 (network failure, refused handshake, dead connection detected by the heartbeat watchdog),
 * 1009, 1011-1014, 4000 (idle), 4008 (slow consumer) and unknown codes.
 *
 * An explicit `close()` never reconnects, whatever the code.
 */
export function defaultShouldReconnect(info: Pick<CloseInfo, 'code'>, context: { canRefreshToken: boolean } = { canRefreshToken: false }): boolean {
  if (NO_RECONNECT_CODES.has(info.code)) return false;
  if (info.code === CloseCode.TOKEN_EXPIRED) return context.canRefreshToken;
  return true;
}
