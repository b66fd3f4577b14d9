/**
 * Publish events to Herald, the real-time WebSocket gateway, from Node backends: over its HTTP API
 * (kept-alive connections, safe retries) or Redis `PUBLISH`, with the API of the Python
 * `herald-publisher` package.
 *
 * @packageDocumentation
 */
export {
  HeraldConfigError,
  HeraldConnectionError,
  HeraldError,
  HeraldHTTPError,
  HeraldNotDeliveredError,
  HeraldTargetError,
} from './errors.js';
export { buildEvent, renderRoom, utcTimestamp, RESERVED_FIELDS, type BuildOptions, type HeraldEvent } from './event.js';
export { HttpTransport, type HttpOptions, type RetryInfo } from './http.js';
export {
  HeraldPublisher,
  type Environment,
  type HttpPublisherOptions,
  type PostMessageOptions,
  type PostedMessage,
  type RedisPublisherOptions,
} from './publisher.js';
export { RedisTransport, type RedisLike, type RedisOptions } from './redis.js';
export type { PublishResult } from './result.js';
export {
  DEFAULT_ROUTING,
  MAX_NAME_BYTES,
  checkName,
  httpPublishBody,
  redisMessage,
  type EventPayload,
  type Routing,
  type Target,
  type UserId,
} from './routing.js';
