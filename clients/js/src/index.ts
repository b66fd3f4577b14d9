/**
 * `@herald/client`: a WebSocket client for Herald that stays connected.
 *
 * @packageDocumentation
 */
export {
  HeraldClient,
  LIFECYCLE_EVENTS,
  type CloseEvent,
  type EventMap,
  type GapEvent,
  type ConnectionState,
  type HeraldClientOptions,
  type HeraldLifecycleEvents,
  type OpenEvent,
  type OutgoingMessage,
  type ReadyEvent,
  type ReconnectingEvent,
  type RequestOptions,
  type ResumeOptions,
} from './client.js';
export {
  backoffCap,
  computeBackoffDelay,
  DEFAULT_RECONNECT,
  normalizeReconnect,
  type Jitter,
  type ReconnectOptions,
} from './backoff.js';
export { CloseCode, defaultShouldReconnect, NO_RECONNECT_CODES } from './close-codes.js';
export { ClientErrorCode, HeraldError } from './errors.js';
export {
  RoomSubscription,
  Subscription,
  type HistoryOptions,
  type HistoryResult,
  type PresenceEvent,
  type PresenceMember,
  type SubscriptionLifecycleEvents,
  type SubscriptionState,
} from './subscription.js';
export { defaultStreamOf, PositionTracker, type StreamOf } from './positions.js';
export { buildConnectUrl, nameProblem, MAX_NAME_BYTES, type ConnectUrl, type ConnectUrlParts } from './url.js';
export type {
  CloseInfo,
  HeraldMessage,
  StreamPosition,
  Transport,
  WebSocketConstructor,
  WebSocketLike,
  WelcomeMessage,
} from './types.js';
