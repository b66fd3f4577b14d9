import { ClientErrorCode, HeraldError } from './errors.js';

/** Longest channel or room name Herald accepts, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 200;

/** Longest `channels=` query value the client builds; further channels are subscribed by message. */
export const MAX_URL_CHANNELS_LENGTH = 2000;

const encoder = new TextEncoder();

/** Why Herald would refuse this channel or room name, or `undefined` if it is fine. */
export function nameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'must be a string';
  if (name.length === 0) return 'must not be empty';
  const bytes = encoder.encode(name).length;
  if (bytes > MAX_NAME_BYTES) return `is ${bytes} bytes; the limit is ${MAX_NAME_BYTES}`;
  // Herald refuses Unicode control characters (general category Cc).
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'must not contain control characters';
  return undefined;
}

/** Throws `INVALID_NAME` for a name Herald would refuse. */
export function assertName(kind: 'channel' | 'room', name: unknown): asserts name is string {
  const problem = nameProblem(name);
  if (problem !== undefined) {
    throw new HeraldError(ClientErrorCode.INVALID_NAME, `${kind} name ${JSON.stringify(name)} ${problem}`);
  }
}

/**
 * Whether a channel can travel in the `channels=a,b` query parameter: Herald splits that value on
 * commas and trims each part, so names with a comma or surrounding spaces must be subscribed
 * with a `subscribe` message instead.
 */
export function urlSafeChannel(name: string): boolean {
  return !name.includes(',') && name.trim() === name;
}

/** What goes into a connection URL. */
export interface ConnectUrlParts {
  /** Channels the application wants; those that fit go into `channels=`. */
  channels: Iterable<string>;
  token?: string | undefined;
  clientId?: string | undefined;
  userId?: string | undefined;
  /** Further query parameters (e.g. `campaign_id` for a dedicated endpoint, resume positions). */
  params?: Record<string, string> | undefined;
}

/** A connection URL and the channels it subscribes. */
export interface ConnectUrl {
  url: string;
  /** The channels carried by `channels=`; the rest must be subscribed by message. */
  urlChannels: string[];
}

/**
 * Builds the URL of one connection attempt: `base` plus `channels`, `client_id`, `user_id`,
 * `token` (URL-encoded) and `params`. Query parameters already in `base` are kept unless
 * overridden. `base` may be relative (`/ws`) in a browser; it is resolved against the page,
 * with `http(s)` turned into `ws(s)`.
 */
export function buildConnectUrl(base: string, parts: ConnectUrlParts): ConnectUrl {
  const url = toWebSocketUrl(base);
  const query = url.searchParams;
  const urlChannels: string[] = [];
  let length = 0;
  for (const channel of parts.channels) {
    if (!urlSafeChannel(channel)) continue;
    const added = encodeURIComponent(channel).length + (urlChannels.length > 0 ? 3 : 0);
    if (length + added > MAX_URL_CHANNELS_LENGTH) continue;
    urlChannels.push(channel);
    length += added;
  }
  query.delete('channels');
  if (urlChannels.length > 0) query.set('channels', urlChannels.join(','));
  if (parts.clientId !== undefined) query.set('client_id', parts.clientId);
  if (parts.userId !== undefined) query.set('user_id', parts.userId);
  for (const [key, value] of Object.entries(parts.params ?? {})) query.set(key, value);
  if (parts.token !== undefined) query.set('token', parts.token);
  return { url: url.toString(), urlChannels };
}

/** Parses `base`, resolving a relative URL against the page in a browser. */
export function toWebSocketUrl(base: string): URL {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    const page = (globalThis as { location?: { href?: string } }).location?.href;
    if (page === undefined) {
      throw new HeraldError(ClientErrorCode.INVALID_ARGUMENT, `not an absolute WebSocket URL: ${base}`);
    }
    url = new URL(base, page);
  }
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new HeraldError(ClientErrorCode.INVALID_ARGUMENT, `unsupported URL scheme ${url.protocol} in ${base}`);
  }
  return url;
}

/** The channels listed in `base`'s own `channels=` parameter, if any. */
export function channelsInUrl(base: string): string[] {
  const list = toWebSocketUrl(base).searchParams.get('channels');
  if (list === null) return [];
  return list
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c.length > 0);
}
