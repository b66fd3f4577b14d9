import type { HeraldMessage } from './types.js';

/**
 * Error codes the client itself produces. Errors refused by the server carry the server's code
 * instead (`UNKNOWN_MESSAGE_TYPE`, `INVALID_MESSAGE`, `INVALID_NAME`, `LIMIT_EXCEEDED`, …) and
 * the server's reply in {@link HeraldError.reply}.
 */
export const ClientErrorCode = Object.freeze({
  /** No reply arrived within the request timeout. */
  TIMEOUT: 'TIMEOUT',
  /** The connection was lost while the request was in flight; it was not retried. */
  DISCONNECTED: 'DISCONNECTED',
  /** The client was closed (by `close()`, or for good after a close code that means "do not retry"). */
  CLOSED: 'CLOSED',
  /** A channel or room name the server would refuse (empty, over 200 bytes, control characters). */
  INVALID_NAME: 'INVALID_NAME',
  /** A malformed argument (a message without a string `type`, …). */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** A WebSocket-level failure (the browser reports no details). */
  SOCKET_ERROR: 'SOCKET_ERROR',
  /** A frame that is not a JSON object. */
  INVALID_FRAME: 'INVALID_FRAME',
  /** `getToken` threw or rejected. */
  TOKEN_ERROR: 'TOKEN_ERROR',
  /** An application handler threw. */
  HANDLER_ERROR: 'HANDLER_ERROR',
});

/** An error with a machine-readable `code`. */
export class HeraldError extends Error {
  /** The server's code (e.g. `UNKNOWN_MESSAGE_TYPE`) or one of {@link ClientErrorCode}. */
  readonly code: string;
  /** The server's `{"type":"error",…}` reply, when the server refused something. */
  readonly reply?: HeraldMessage;
  /** The WebSocket close code, for `CLOSED` and `DISCONNECTED`. */
  readonly closeCode?: number;

  constructor(code: string, message: string, extra: { reply?: HeraldMessage; closeCode?: number; cause?: unknown } = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'HeraldError';
    this.code = code;
    if (extra.reply !== undefined) this.reply = extra.reply;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
  }

  /** Whether the server refused the request (as opposed to a timeout or a lost connection). */
  get isServerError(): boolean {
    return this.reply !== undefined;
  }

  /** Builds the error for a server `{"type":"error"}` message. */
  static fromReply(reply: HeraldMessage): HeraldError {
    const code = typeof reply.code === 'string' ? reply.code : 'ERROR';
    const text =
      typeof reply.error === 'string' ? reply.error : typeof reply.message === 'string' ? reply.message : code;
    return new HeraldError(code, text, { reply });
  }
}
