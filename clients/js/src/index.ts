/**
 * A client for switchboard's native bus protocol (`ws://HOST:PORT/ws/bus?token=JWT`).
 *
 * - event-type and room subscriptions, re-sent after every reconnect;
 * - presence declarations (re-declared after every reconnect) and typing indicators, with a
 *   tracker that clears an indicator 5 s after the last repeat;
 * - an application-level ping every 30 s, and a dead-connection check on its answer;
 * - reconnects with exponential backoff and full jitter, token refresh on close 4001;
 * - automatic resume: the last event id of every stream is sent back as `since` after a
 *   reconnect, so that the server replays what was missed (each event delivered once).
 *
 * No dependencies and no DOM types: any WebSocket implementation with the standard
 * `onopen`/`onmessage`/`onclose`/`onerror` properties works (browsers, Deno, Bun, Node 22+,
 * or the `ws` package on Node 20).
 *
 * This file is the package's public surface and nothing else: every name is listed, so that a
 * helper exported between modules does not become API by accident. The modules, and the order
 * they import each other in (no cycles), are listed in ../README.md.
 */

export { BusClient } from './client.js';
export type { BusClientState } from './connection.js';
export type {
  BusClientEventMap,
  BusClientEventName,
  BusClientHandler,
  CloseEvent,
  GapEvent,
  OpenEvent,
  ReconnectingEvent,
  TypingStopReason,
  TypingStoppedEvent,
} from './events.js';
export type { BusClientOptions, FallbackOptions, ResolvedFallbackOptions, Transport } from './options.js';
export { deriveSseUrls, type EventSourceConstructor, type EventSourceLike, type FetchLike, type FetchResponseLike } from './sse.js';
export { TYPING_TIMEOUT_MS, TypingTracker } from './presence.js';
export {
  EVENT_TYPES,
  USER_STREAM,
  roomStream,
  streamLabel,
  type AckedMessage,
  type ActionMessage,
  type BusEventType,
  type ClientErrorCode,
  type DirectMessage,
  type EnvelopeFields,
  type ErrorMessage,
  type EventPriority,
  type NotificationMessage,
  type PongMessage,
  type PresenceMessage,
  type PresenceStatus,
  type PushPlatform,
  type PushRegisteredMessage,
  type PushUnregisteredMessage,
  type ReplayMessage,
  type RoomEventMessage,
  type ServerMessage,
  type ServerMessageBase,
  type SubscribedMessage,
  type TypingMessage,
  type WebPushSubscriptionJSON,
  type WelcomeMessage,
} from './protocol.js';
export {
  Backoff,
  DEFAULT_RECONNECT,
  backoffDelay,
  isTerminalCloseCode,
  type ReconnectOptions,
  type ResolvedReconnectOptions,
} from './reconnect.js';
export type { EventHandlerProperty, WebSocketConstructor, WebSocketLike } from './socket.js';
export { tokenExpiry } from './token.js';
