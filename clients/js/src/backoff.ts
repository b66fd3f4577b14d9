/**
 * Reconnect delays: exponential backoff with jitter.
 *
 * The delay before reconnect attempt `n` (1-based) is drawn from a window that grows
 * geometrically and is capped:
 *
 * ```text
 * cap(n)   = min(maxDelayMs, initialDelayMs × multiplier^(n-1))
 * full:    delay = random() × cap(n)                  ("full jitter", the default)
 * equal:   delay = cap(n) / 2 + random() × cap(n) / 2
 * none:    delay = cap(n)
 * ```
 *
 * Full jitter spreads the reconnects of many clients that lost the same server at the same
 * moment over the whole window, so a restarted server is not hit by all of them at once.
 */

/** How a reconnect delay is randomised. */
export type Jitter = 'full' | 'equal' | 'none';

/** Reconnect timing. */
export interface ReconnectOptions {
  /** Upper bound of the first delay window, in milliseconds. */
  initialDelayMs: number;
  /** Largest delay window, in milliseconds. */
  maxDelayMs: number;
  /** Growth factor of the window per attempt (≥ 1). */
  multiplier: number;
  /** How the delay is drawn from the window. */
  jitter: Jitter;
  /** Give up after this many consecutive failed attempts (default: never). */
  maxAttempts: number;
}

/** The defaults: 0.5 s, doubling, up to 30 s, full jitter, unlimited attempts. */
export const DEFAULT_RECONNECT: Readonly<ReconnectOptions> = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  multiplier: 2,
  jitter: 'full',
  maxAttempts: Number.POSITIVE_INFINITY,
});

/** Fills in defaults and checks the values; throws a `RangeError` for nonsense. */
export function normalizeReconnect(options: Partial<ReconnectOptions> | undefined): ReconnectOptions {
  const merged: ReconnectOptions = { ...DEFAULT_RECONNECT, ...stripUndefined(options ?? {}) };
  if (!(merged.initialDelayMs >= 0)) throw new RangeError('reconnect.initialDelayMs must be ≥ 0');
  if (!(merged.maxDelayMs >= merged.initialDelayMs)) {
    throw new RangeError('reconnect.maxDelayMs must be ≥ reconnect.initialDelayMs');
  }
  if (!(merged.multiplier >= 1)) throw new RangeError('reconnect.multiplier must be ≥ 1');
  if (!['full', 'equal', 'none'].includes(merged.jitter)) {
    throw new RangeError("reconnect.jitter must be 'full', 'equal' or 'none'");
  }
  if (!(merged.maxAttempts >= 1)) throw new RangeError('reconnect.maxAttempts must be ≥ 1');
  return merged;
}

/** The upper bound of the delay window for attempt `attempt` (1-based), before jitter. */
export function backoffCap(attempt: number, options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs' | 'multiplier'>): number {
  const exponent = Math.max(0, Math.floor(attempt) - 1);
  // Computed in a way that cannot overflow to Infinity × 0 = NaN for huge attempt numbers.
  const grown = options.initialDelayMs * Math.pow(options.multiplier, exponent);
  return Math.min(options.maxDelayMs, Number.isFinite(grown) ? grown : options.maxDelayMs);
}

/**
 * The delay before reconnect attempt `attempt` (1-based). A pure function: `random` defaults to
 * `Math.random` and may be replaced (tests pass a fixed value).
 */
export function computeBackoffDelay(
  attempt: number,
  options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs' | 'multiplier' | 'jitter'>,
  random: () => number = Math.random,
): number {
  const cap = backoffCap(attempt, options);
  switch (options.jitter) {
    case 'none':
      return cap;
    case 'equal':
      return Math.round(cap / 2 + clamp01(random()) * (cap / 2));
    case 'full':
    default:
      return Math.round(clamp01(random()) * cap);
  }
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [key, v] of Object.entries(value)) {
    if (v !== undefined) (out as Record<string, unknown>)[key] = v;
  }
  return out;
}
