/** Base class of every error this package throws. */
export class HeraldError extends Error {
  override name = 'HeraldError';
}

/** The publisher is misconfigured: a missing URL, prefix or API key, or a missing optional dependency. */
export class HeraldConfigError extends HeraldError {
  override name = 'HeraldConfigError';
}

/** Herald or Redis could not be reached. */
export class HeraldConnectionError extends HeraldError {
  override name = 'HeraldConnectionError';
}

/**
 * Herald answered an API call with an error (4xx or 5xx).
 *
 * `code` is Herald's machine-readable code (`AUTHENTICATION_FAILED`, `INVALID_NAME`, `NO_TARGET`,
 * `INVALID_EVENT`, `UNAVAILABLE`, …), or `HTTP_<status>` when the body carried none.
 */
export class HeraldHTTPError extends HeraldError {
  override name = 'HeraldHTTPError';

  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly body?: Record<string, unknown>,
  ) {
    super(`Herald refused the request (${status} ${code}): ${detail}`);
  }

  /** Builds the error from a response body, which Herald sends as `{"success":false,"error":…,"code":…}`. */
  static fromResponse(status: number, text: string): HeraldHTTPError {
    let body: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = text ? JSON.parse(text) : undefined;
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
    } catch {
      // not JSON: the text is the message
    }
    const code = body?.code ? String(body.code) : `HTTP_${status}`;
    const detail = body?.error ? String(body.error) : text.trim() || `HTTP ${status}`;
    return new HeraldHTTPError(status, code, detail, body);
  }
}

/** `PUBLISH` reached no subscriber: no Herald node listens on that Redis channel (only with `requireReceiver`). */
export class HeraldNotDeliveredError extends HeraldError {
  override name = 'HeraldNotDeliveredError';
}

/**
 * The event cannot be routed: no target, an invalid name, or contradictory rooms.
 *
 * `code` uses Herald's codes where they exist (`NO_TARGET`, `INVALID_NAME`, `INVALID_EVENT`),
 * plus `CONFLICTING_TARGET`.
 */
export class HeraldTargetError extends HeraldError {
  override name = 'HeraldTargetError';

  constructor(
    readonly code: string,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
}
