/**
 * The wire protocol of `/ws/bus`: the messages the server sends, and the stream labels that
 * order its event ids. Types and pure functions only, so that every other module can depend on
 * it without pulling in any client state.
 */

/** The event types a connection can subscribe to. */
export type BusEventType = 'action' | 'presence' | 'typing' | 'notification' | 'message';

/** Every event type, in the server's order. */
export const EVENT_TYPES: readonly BusEventType[] = Object.freeze([
  'action',
  'presence',
  'typing',
  'notification',
  'message',
]);

/** A user's status. `offline` declared by a user means "invisible". */
export type PresenceStatus = 'online' | 'away' | 'busy' | 'offline';

/** Fields of every server message. */
export interface ServerMessageBase {
  /** Unix seconds, from the server's clock. */
  timestamp: number;
}

/** The first message of every connection. */
export interface WelcomeMessage extends ServerMessageBase {
  type: 'welcome';
  session_id: string;
  user: string;
}

/** The connection's full set of event types and rooms, after every (un)subscribe. */
export interface SubscribedMessage extends ServerMessageBase {
  type: 'subscribed';
  events: BusEventType[];
  rooms: string[];
  /**
   * The latest event id of each stream this subscribe added (`room:<name>`, `user`), when it
   * has one: where to resume from before any event of the stream arrived.
   */
  heads?: Record<string, string>;
}

/** The answer to `register_push`: the registration's id (for the HTTP API's delete). */
export interface PushRegisteredMessage extends ServerMessageBase {
  type: 'push_registered';
  id: string;
  platform: PushPlatform;
}

/** The answer to `unregister_push`: whether the registration existed. */
export interface PushUnregisteredMessage extends ServerMessageBase {
  type: 'push_unregistered';
  id: string;
  removed: boolean;
}

/** The device family of a push registration. */
export type PushPlatform = 'web' | 'android' | 'ios';

/** A browser's Web Push subscription, as `PushSubscription.toJSON()` gives it. */
export interface WebPushSubscriptionJSON {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** The answer to an `ack`: how many of the ids were still queued. */
export interface AckedMessage extends ServerMessageBase {
  type: 'acked';
  count: number;
}

/** The answer to a `ping`. */
export interface PongMessage extends ServerMessageBase {
  type: 'pong';
}

/** A watched user's status. */
export interface PresenceMessage extends ServerMessageBase {
  type: 'presence';
  user: string;
  status: PresenceStatus;
  activity?: string;
}

/** `user` is typing in `conversation_id`. */
export interface TypingMessage extends ServerMessageBase {
  type: 'typing';
  user: string;
  conversation_id: string;
}

/** An event's priority, set by its publisher; frames carry it only when not `normal`. */
export type EventPriority = 'high' | 'normal' | 'low';

/**
 * The envelope of an event that is kept in history (room events and the user's own
 * notifications, messages and actions).
 */
export interface EnvelopeFields {
  /**
   * Server-assigned, unique and ordered within the event's stream only (see
   * {@link streamLabel}); opaque otherwise. Absent from servers without history.
   */
  id?: string;
  /** Present when not `normal`. */
  priority?: EventPriority;
}

/** A direct-message notification (`preview` = the first 100 characters). */
export interface DirectMessage extends ServerMessageBase, EnvelopeFields {
  type: 'message';
  message_id: string;
  sender: string;
  preview: string;
  conversation_id?: string;
}

/** A notification published with `POST /apps/{id}/bus/notifications`. */
export interface NotificationMessage extends ServerMessageBase, EnvelopeFields {
  type: 'notification';
  notification_type: string;
  from?: string;
  message: string;
  action_url?: string;
}

/** An action published with `POST /apps/{id}/bus/actions`. */
export interface ActionMessage extends ServerMessageBase, EnvelopeFields {
  type: 'action';
  action_type: string;
  action_id: string;
  issuer: string;
  content: unknown;
  source: 'local' | 'federated' | string;
}

/** An event triggered on a room (a channel), `data` as the publisher sent it. */
export interface RoomEventMessage extends ServerMessageBase, EnvelopeFields {
  type: 'event';
  room: string;
  event: string;
  data: unknown;
}

/**
 * The header of a replay: the `count` events of `stream` after `since` follow, in order, then
 * live events. `complete: false`: history no longer reaches back to `since` (trimmed, aged out,
 * or an id from before a server restart), so events were lost: refetch from the application.
 */
export interface ReplayMessage extends ServerMessageBase {
  type: 'replay';
  /** `room:<name>` or `user` (see {@link streamLabel}). */
  stream: string;
  /** The id the client resumed from; `null` for the user's offline queue alone. */
  since: string | null;
  /** How many events follow. */
  count: number;
  complete: boolean;
  /** Events the offline queue dropped (its per-user limits) since the last connection. */
  dropped?: number;
}

/**
 * An error. Server codes: `E-WS-INVALID`, `E-WS-PERMISSION`, `E-WS-RATE`, `E-WS-AUTH`.
 * The client reports its own problems with the same shape and `E-CLIENT-*` codes
 * (see {@link ClientErrorCode}); those have `cause` when there is one.
 */
export interface ErrorMessage extends ServerMessageBase {
  type: 'error';
  code: string;
  message: string;
  cause?: unknown;
}

/** Codes of the errors the client reports itself. */
export type ClientErrorCode =
  /** `getToken` failed or returned no token; the client retries with backoff. */
  | 'E-CLIENT-TOKEN'
  /** No usable token: the static token expired, or the server closed with 4001 and there is no `getToken`. */
  | 'E-CLIENT-TOKEN-EXPIRED'
  /** A server frame was not a JSON object with a `type`. */
  | 'E-CLIENT-PROTOCOL'
  /** The WebSocket could not be created (e.g. an invalid URL). */
  | 'E-CLIENT-SOCKET';

/** Any message the server sends. */
export type ServerMessage =
  | WelcomeMessage
  | SubscribedMessage
  | PongMessage
  | PresenceMessage
  | TypingMessage
  | DirectMessage
  | NotificationMessage
  | ActionMessage
  | RoomEventMessage
  | ReplayMessage
  | AckedMessage
  | PushRegisteredMessage
  | PushUnregisteredMessage
  | ErrorMessage;

/** The prefix of a room's stream label; `user` is the only other stream. */
export const ROOM_PREFIX = 'room:';

/** The stream label of the user's own events (notifications, messages, actions). */
export const USER_STREAM = 'user';

/** The stream label of a room's events. */
export function roomStream(room: string): string {
  return `room:${room}`;
}

/**
 * The stream whose ids order `msg`: `room:<name>` for a room event, `user` for a
 * notification, message or action; undefined for messages outside history (presence, typing,
 * ...). Ids are comparable only within one stream.
 */
export function streamLabel(msg: ServerMessage): string | undefined {
  switch (msg.type) {
    case 'event':
      return roomStream(msg.room);
    case 'notification':
    case 'message':
    case 'action':
      return USER_STREAM;
    default:
      return undefined;
  }
}
