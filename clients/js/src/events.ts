/**
 * The client's events: what `BusClient.on` hands to handlers (server messages by type,
 * plus the client's own lifecycle events), and the emitter that calls the handlers.
 */

import type {
  AckedMessage,
  ActionMessage,
  ClientErrorCode,
  DirectMessage,
  ErrorMessage,
  NotificationMessage,
  PongMessage,
  PresenceMessage,
  PushRegisteredMessage,
  PushUnregisteredMessage,
  ReplayMessage,
  RoomEventMessage,
  SubscribedMessage,
  TypingMessage,
  WelcomeMessage,
} from './protocol.js';

// A runtime global, declared so that the build needs neither the DOM nor the Node types.
declare function setTimeout(handler: () => void, ms?: number): unknown;

/** Why a typing indicator ended. */
export type TypingStopReason = 'timeout' | 'message' | 'closed';

/** A typing indicator ended: no repeat for `typingTimeoutMs`, a message arrived, or `close()`. */
export interface TypingStoppedEvent {
  type: 'typing_stopped';
  user: string;
  conversation_id: string;
  reason: TypingStopReason;
}

/** The transport opened (the `welcome` follows). */
export interface OpenEvent {
  type: 'open';
  /** The transport that opened. */
  transport: 'websocket' | 'sse';
}

/** The connection ended. */
export interface CloseEvent {
  type: 'close';
  /**
   * The WebSocket close code: the server's (4001, 4003, 4009, 4100, 4200, 4201, 1000, ...),
   * 1006 for a connection lost or refused before any close frame, 1000 for `close()`.
   */
  code: number;
  reason: string;
  /** Whether a reconnect is scheduled (a `reconnecting` event follows). */
  willReconnect: boolean;
}

/** A reconnect is scheduled. */
export interface ReconnectingEvent {
  type: 'reconnecting';
  /** 1 for the first attempt after a successful connection, then 2, 3, ... */
  attempt: number;
  /** The wait before this attempt. */
  delayMs: number;
  /** The close code that caused it. */
  code: number;
}

/**
 * A replay could not carry everything missed in a stream (the `replay` header said
 * `complete: false`): refetch that stream's state from the application. Emitted right after
 * the `replay` event and before the replayed events (what history still had).
 */
export interface GapEvent {
  type: 'gap';
  /** `room:<name>` or `user`. */
  stream: string;
  /** The room, for a room stream. */
  room?: string;
  /** The id the client resumed from; `null` for the user's offline queue alone. */
  since: string | null;
  /** How many events follow (the part of the gap that history still had). */
  count: number;
  /** Events the offline queue dropped, when that caused the gap. */
  dropped?: number;
}

/** The events of {@link BusClient.on}: server messages by type, and lifecycle events. */
export interface BusClientEventMap {
  welcome: WelcomeMessage;
  subscribed: SubscribedMessage;
  pong: PongMessage;
  presence: PresenceMessage;
  typing: TypingMessage;
  typing_stopped: TypingStoppedEvent;
  message: DirectMessage;
  notification: NotificationMessage;
  action: ActionMessage;
  event: RoomEventMessage;
  replay: ReplayMessage;
  gap: GapEvent;
  acked: AckedMessage;
  push_registered: PushRegisteredMessage;
  push_unregistered: PushUnregisteredMessage;
  error: ErrorMessage;
  open: OpenEvent;
  close: CloseEvent;
  reconnecting: ReconnectingEvent;
}

/** A name of {@link BusClientEventMap}. */
export type BusClientEventName = keyof BusClientEventMap;

/** A handler of one client event. */
export type BusClientHandler<K extends BusClientEventName> = (event: BusClientEventMap[K]) => void;


/** The handlers of a client, by event. */
export class Emitter {
  private readonly handlers = new Map<BusClientEventName, Set<(event: never) => void>>();

  /** Adds a handler; returns a function that removes it. */
  on<K extends BusClientEventName>(type: K, handler: BusClientHandler<K>): () => void {
    let set = this.handlers.get(type);
    if (!set) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler as (event: never) => void);
    return () => this.off(type, handler);
  }

  /** Adds a handler called once. */
  once<K extends BusClientEventName>(type: K, handler: BusClientHandler<K>): () => void {
    const off = this.on(type, (event) => {
      off();
      handler(event);
    });
    return off;
  }

  /** Removes a handler. */
  off<K extends BusClientEventName>(type: K, handler: BusClientHandler<K>): void {
    this.handlers.get(type)?.delete(handler as (event: never) => void);
  }

  emit<K extends BusClientEventName>(type: K, event: BusClientEventMap[K]): void {
    const set = this.handlers.get(type);
    if (!set || set.size === 0) return;
    // A copy: a handler may add or remove handlers of this very event.
    for (const handler of [...set]) {
      try {
        (handler as BusClientHandler<K>)(event);
      } catch (err) {
        // Like an EventTarget: a throwing handler neither breaks the client nor the others.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }

  /** Reports a problem of the client itself, shaped like a server `error`. */
  emitError(code: ClientErrorCode, message: string, cause?: unknown): void {
    const err: ErrorMessage = { type: 'error', code, message, timestamp: Math.floor(Date.now() / 1000) };
    if (cause !== undefined) err.cause = cause;
    this.emit('error', err);
  }
}
