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
 */

// Timers and `atob` exist in every runtime this targets (browsers, Node >= 16, Deno, Bun);
// declared here so that the build needs neither the DOM nor the Node type definitions.
type TimerHandle = unknown;
declare function setTimeout(handler: () => void, ms?: number): TimerHandle;
declare function clearTimeout(handle: TimerHandle | undefined): void;
declare function setInterval(handler: () => void, ms?: number): TimerHandle;
declare function clearInterval(handle: TimerHandle | undefined): void;
declare function atob(data: string): string;

// ---------------------------------------------------------------------------------------------
// Protocol types
// ---------------------------------------------------------------------------------------------

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

const PRESENCE_STATUSES: readonly PresenceStatus[] = ['online', 'away', 'busy', 'offline'];

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

// ---------------------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// WebSocket abstraction
// ---------------------------------------------------------------------------------------------

/**
 * An event handler property. Checked bivariantly (as methods are) so that implementations whose
 * handlers take their own, richer event classes (the DOM's `MessageEvent`, `ws`'s) fit.
 */
export type EventHandlerProperty<E> = { bivarianceHack(event: E): void }['bivarianceHack'] | null;

/** The part of the standard WebSocket API the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: EventHandlerProperty<unknown>;
  onmessage: EventHandlerProperty<{ data: unknown }>;
  onclose: EventHandlerProperty<{ code: number; reason: string }>;
  onerror: EventHandlerProperty<unknown>;
  /** `ws` (Node) only: drop the connection without a closing handshake. */
  terminate?: () => void;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or the `ws` package's default export. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

const WS_OPEN = 1;

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

/** Reconnect settings. */
export interface ReconnectOptions {
  /** Reconnect after unexpected closes. Default true. */
  enabled?: boolean;
  /** The ceiling of the first delay. Default 1000 ms. */
  initialDelayMs?: number;
  /** The largest delay. Default 60000 ms. */
  maxDelayMs?: number;
  /** Full jitter: wait a uniformly random time in [0, ceiling). Default true. */
  jitter?: boolean;
}

/** {@link ReconnectOptions} with every default applied. */
export type ResolvedReconnectOptions = Required<ReconnectOptions>;

/** The defaults of {@link ReconnectOptions}. */
export const DEFAULT_RECONNECT: Readonly<ResolvedReconnectOptions> = Object.freeze({
  enabled: true,
  initialDelayMs: 1000,
  maxDelayMs: 60_000,
  jitter: true,
});

/**
 * The delay before reconnect attempt `attempt` (0 for the first): the ceiling
 * `min(maxDelayMs, initialDelayMs * 2^attempt)`, or with jitter a uniformly random whole
 * number of milliseconds in `[0, ceiling)` ("full jitter").
 *
 * @param random a source of numbers in [0, 1), `Math.random` by default.
 */
export function backoffDelay(
  attempt: number,
  options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs' | 'jitter'> = {},
  random: () => number = Math.random,
): number {
  const initial = Math.max(0, options.initialDelayMs ?? DEFAULT_RECONNECT.initialDelayMs);
  const max = Math.max(0, options.maxDelayMs ?? DEFAULT_RECONNECT.maxDelayMs);
  const jitter = options.jitter ?? DEFAULT_RECONNECT.jitter;
  const n = Math.max(0, Math.floor(attempt));
  // 2^n overflows to Infinity for large n, which min() caps.
  const ceiling = Math.min(max, initial * 2 ** n);
  if (!jitter) return ceiling;
  const r = random();
  const unit = r >= 0 && r < 1 ? r : 0;
  return Math.floor(unit * ceiling);
}

/** Successive reconnect delays; {@link Backoff.reset} starts over. */
export class Backoff {
  private attempts = 0;

  constructor(
    private readonly options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs' | 'jitter'> = {},
    private readonly random: () => number = Math.random,
  ) {}

  /** Attempts handed out since the last reset. */
  get attempt(): number {
    return this.attempts;
  }

  /** The delay of the next attempt. */
  next(): number {
    return backoffDelay(this.attempts++, this.options, this.random);
  }

  /** The next delay is the first one again. */
  reset(): void {
    this.attempts = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Typing tracker
// ---------------------------------------------------------------------------------------------

/** How long an indicator lasts without a repeat, by the protocol. */
export const TYPING_TIMEOUT_MS = 5000;

/**
 * Who is typing where. {@link TypingTracker.indicate} starts or refreshes the indicator of
 * (user, conversation); it ends `timeoutMs` after the last refresh, or with
 * {@link TypingTracker.stop} / {@link TypingTracker.clear}, and `onStop` is called once.
 */
export class TypingTracker {
  private readonly active = new Map<string, { user: string; conversation: string; timer: TimerHandle }>();

  constructor(
    private readonly onStop: (event: TypingStoppedEvent) => void,
    readonly timeoutMs: number = TYPING_TIMEOUT_MS,
  ) {}

  private static key(user: string, conversation: string): string {
    return JSON.stringify([user, conversation]);
  }

  /** Starts or refreshes an indicator; true when it started (was not active). */
  indicate(user: string, conversation: string): boolean {
    const key = TypingTracker.key(user, conversation);
    const existing = this.active.get(key);
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => this.stop(user, conversation, 'timeout'), this.timeoutMs);
    this.active.set(key, { user, conversation, timer });
    return existing === undefined;
  }

  /** Ends an indicator; true when one was active. */
  stop(user: string, conversation: string, reason: TypingStopReason): boolean {
    const key = TypingTracker.key(user, conversation);
    const entry = this.active.get(key);
    if (!entry) return false;
    clearTimeout(entry.timer);
    this.active.delete(key);
    this.onStop({ type: 'typing_stopped', user, conversation_id: conversation, reason });
    return true;
  }

  /** Whether `user` is typing in `conversation`. */
  isTyping(user: string, conversation: string): boolean {
    return this.active.has(TypingTracker.key(user, conversation));
  }

  /** The users typing in `conversation`. */
  typingIn(conversation: string): string[] {
    const users: string[] = [];
    for (const e of this.active.values()) if (e.conversation === conversation) users.push(e.user);
    return users;
  }

  /** Ends every indicator. */
  clear(reason: TypingStopReason): void {
    for (const e of [...this.active.values()]) this.stop(e.user, e.conversation, reason);
  }

  /** Active indicators. */
  get size(): number {
    return this.active.size;
  }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/**
 * The `exp` claim (Unix seconds) of a JWT, or undefined when it cannot be read. The
 * signature is not checked: this only tells whether a token is worth presenting.
 */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (claims && typeof claims === 'object') {
      const exp = (claims as { exp?: unknown }).exp;
      if (typeof exp === 'number' && Number.isFinite(exp)) return exp;
    }
  } catch {
    // not a JWT we can read
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/** Options of {@link BusClient}. */
export interface BusClientOptions {
  /** `ws://HOST:PORT/ws/bus` (or `wss://`); the client appends `token=...`. */
  url: string;
  /** A token to connect with. Without `getToken`, the client cannot go on once it expires. */
  token?: string;
  /**
   * Fetches a fresh token (typically from your backend, which mints it with
   * `POST /apps/{id}/bus/tokens`). Called before the first connection when there is no `token`,
   * after close 4001, before reconnecting when the cached token's `exp` has passed, and before
   * retrying after a connection attempt that failed before the `welcome`.
   */
  getToken?: () => Promise<string> | string;
  /** The WebSocket implementation. Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Event types to subscribe to on every (re)connect. */
  events?: BusEventType[];
  /** Rooms to join on every (re)connect (allowed by the token's `channels`). */
  rooms?: string[];
  /** Interval of the `ping` messages while connected; 0 disables them. Default 30000. */
  pingIntervalMs?: number;
  /**
   * How long to wait for any server message after a `ping` before the connection is taken as
   * dead and replaced. Default 10000.
   */
  pongTimeoutMs?: number;
  /** How long a connection attempt may take up to the `welcome`. Default 10000. */
  connectTimeoutMs?: number;
  /** Reconnect settings, or `false` never to reconnect. */
  reconnect?: ReconnectOptions | false;
  /** How long a typing indicator lasts without a repeat. Default 5000 (the protocol's). */
  typingTimeoutMs?: number;
  /** A source of numbers in [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
  /**
   * Resume after reconnects: send the last event id of every stream as `since`, so that the
   * server replays what was missed. Default true; `false` subscribes without `since` (events
   * published while disconnected are then lost). Duplicates are dropped either way.
   */
  resume?: boolean;
  /**
   * Acknowledge `high` priority user events (notifications, messages, actions) as they are
   * delivered, so that the server does not deliver them again after a reconnect. Default
   * true; with `false`, call {@link BusClient.ack} once the app has handled them.
   */
  autoAck?: boolean;
}

/** Where the client is. */
export type BusClientState =
  /** Not started, or `close()`d, or stopped by a close code that forbids reconnecting. */
  | 'closed'
  /** Getting a token, opening the socket, waiting for the `welcome`. */
  | 'connecting'
  /** Welcomed: messages are sent at once. */
  | 'open'
  /** Waiting before the next attempt. */
  | 'reconnecting';

/** A close code after which the client does not reconnect by itself. */
export function isTerminalCloseCode(code: number, canRefreshToken: boolean): boolean {
  if (code === 4001) return !canRefreshToken;
  // 40xx: "do not reconnect unchanged" (4003 too many connections, 4009 terminated by the app).
  return code >= 4000 && code <= 4099;
}

const NORMAL_CLOSURE = 1000;
const ABNORMAL_CLOSURE = 1006;

/** Ids remembered per stream to drop duplicates (the last one is the resume point). */
const DEDUP_WINDOW = 32;
/** Most ids in one `ack` (the server's limit). */
const ACK_BATCH = 100;
/** How long acks wait to be sent together. */
const ACK_DELAY_MS = 50;

const USER_EVENT_TYPES: readonly BusEventType[] = ['notification', 'message', 'action'];
const ROOM_PREFIX = 'room:';

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`${name} must be a finite number >= 0`);
  }
  return v;
}

function noop(): void {}

/**
 * A bus connection that survives network trouble.
 *
 * ```ts
 * const bus = new BusClient({ url: 'wss://rt.example.com/ws/bus', getToken, events: ['notification'] });
 * bus.on('notification', (n) => show(n.message));
 * await bus.connect();
 * ```
 */
export class BusClient {
  private readonly url: string;
  private readonly getToken: (() => Promise<string> | string) | undefined;
  private readonly Ctor: WebSocketConstructor;
  private readonly pingIntervalMs: number;
  private readonly pongTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly reconnectOptions: ResolvedReconnectOptions;
  private readonly backoff: Backoff;
  private readonly tracker: TypingTracker;
  private readonly handlers = new Map<BusClientEventName, Set<(event: never) => void>>();

  private readonly events = new Set<BusEventType>();
  private readonly rooms = new Set<string>();
  private presence: { status: PresenceStatus; activity?: string } | undefined;
  private readonly resume: boolean;
  private readonly autoAck: boolean;
  /** Ids waiting to be acknowledged (sent together, soon). */
  private pendingAcks: string[] = [];
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Per stream label (`room:<name>` for a kept room, `user`), the last ids delivered, oldest
   * first: the last one is where to resume; all of them are recognised as duplicates. One entry
   * per kept room plus one, each at most DEDUP_WINDOW ids.
   */
  private readonly seen = new Map<string, string[]>();
  /**
   * Per stream label with no delivered id yet, the head the server reported at subscribe: a
   * resume point only (events up to it may still arrive, e.g. from the offline queue, and are
   * not duplicates).
   */
  private readonly heads = new Map<string, string>();

  private token: string | undefined;
  private tokenStale = false;
  private ws: WebSocketLike | undefined;
  private currentState: BusClientState = 'closed';
  /** Bumped whenever the current attempt is abandoned; stale callbacks compare it. */
  private generation = 0;
  private welcome: WelcomeMessage | undefined;
  private ready: Deferred<WelcomeMessage> | undefined;

  private reconnectTimer: TimerHandle | undefined;
  private connectTimer: TimerHandle | undefined;
  private pingTimer: TimerHandle | undefined;
  private pongTimer: TimerHandle | undefined;

  constructor(options: BusClientOptions) {
    if (!options || typeof options.url !== 'string' || options.url === '') {
      throw new TypeError('options.url is required');
    }
    if (options.token === undefined && options.getToken === undefined) {
      throw new TypeError('options.token or options.getToken is required');
    }
    const Ctor =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof Ctor !== 'function') {
      throw new TypeError(
        'No WebSocket implementation: pass options.WebSocket (on Node 20, the "ws" package)',
      );
    }
    this.url = options.url;
    this.token = options.token;
    this.getToken = options.getToken;
    this.Ctor = Ctor;
    this.pingIntervalMs = nonNegative(options.pingIntervalMs, 30_000, 'pingIntervalMs');
    this.pongTimeoutMs = nonNegative(options.pongTimeoutMs, 10_000, 'pongTimeoutMs');
    this.connectTimeoutMs = nonNegative(options.connectTimeoutMs, 10_000, 'connectTimeoutMs');
    const r = options.reconnect === false ? { enabled: false } : options.reconnect ?? {};
    this.reconnectOptions = {
      enabled: r.enabled ?? DEFAULT_RECONNECT.enabled,
      initialDelayMs: nonNegative(r.initialDelayMs, DEFAULT_RECONNECT.initialDelayMs, 'reconnect.initialDelayMs'),
      maxDelayMs: nonNegative(r.maxDelayMs, DEFAULT_RECONNECT.maxDelayMs, 'reconnect.maxDelayMs'),
      jitter: r.jitter ?? DEFAULT_RECONNECT.jitter,
    };
    this.backoff = new Backoff(this.reconnectOptions, options.random ?? Math.random);
    this.tracker = new TypingTracker(
      (e) => this.emit('typing_stopped', e),
      nonNegative(options.typingTimeoutMs, TYPING_TIMEOUT_MS, 'typingTimeoutMs'),
    );
    for (const e of options.events ?? []) this.events.add(checkEventType(e));
    for (const room of options.rooms ?? []) this.rooms.add(checkRoom(room));
    this.resume = options.resume ?? true;
    this.autoAck = options.autoAck ?? true;
  }

  // ------------------------------------------------------------------ public API

  /** Where the client is. */
  get state(): BusClientState {
    return this.currentState;
  }

  /** The `welcome` of the current connection, if welcomed. */
  get session(): WelcomeMessage | undefined {
    return this.currentState === 'open' ? this.welcome : undefined;
  }

  /** The event types and rooms the client keeps subscribed. */
  get subscriptions(): { events: BusEventType[]; rooms: string[] } {
    return { events: [...this.events], rooms: [...this.rooms] };
  }

  /**
   * The id of the last event delivered per stream (`room:<name>`, `user`): where the next
   * connection resumes from. Only streams still subscribed are kept.
   */
  get lastEventIds(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [label, id] of this.heads) out[label] = id;
    for (const [label, ids] of this.seen) out[label] = ids[ids.length - 1]!;
    return out;
  }

  /**
   * Starts connecting (and reconnecting). Resolves with the first `welcome`; rejects when the
   * client stops for good before that (`close()`, a terminal close code, no usable token).
   * Calling it while started returns the same promise (or the current `welcome`).
   */
  connect(): Promise<WelcomeMessage> {
    if (this.currentState === 'open' && this.welcome) return Promise.resolve(this.welcome);
    if (!this.ready) {
      this.ready = deferred<WelcomeMessage>();
      // A caller who ignores the promise must not get an unhandled rejection.
      this.ready.promise.catch(noop);
    }
    const { promise } = this.ready;
    if (this.currentState === 'closed') {
      this.backoff.reset();
      void this.attempt();
    }
    return promise;
  }

  /**
   * Closes the connection and stops reconnecting. Emits `close` (code 1000) if the client was
   * started. Subscriptions, the declared presence and the last event ids are kept for a later
   * `connect()` (which then resumes).
   */
  close(): void {
    const wasStarted = this.currentState !== 'closed';
    this.generation++;
    this.clearTimers();
    const ws = this.ws;
    this.ws = undefined;
    if (ws) dispose(ws, false, 'client closed');
    this.setState('closed');
    this.tracker.clear('closed');
    this.failReady(new Error('BusClient closed'));
    if (wasStarted) {
      this.emit('close', { type: 'close', code: NORMAL_CLOSURE, reason: 'client closed', willReconnect: false });
    }
  }

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

  /**
   * Subscribes to event types and rooms, now if connected and again after every reconnect.
   * The server answers with `subscribed` (the full set), and an `error` for a room the token
   * does not allow.
   */
  subscribe(events: BusEventType[] = [], rooms: string[] = []): void {
    const ev = events.map(checkEventType);
    const rm = rooms.map(checkRoom);
    if (ev.length === 0 && rm.length === 0) return;
    for (const e of ev) this.events.add(e);
    for (const r of rm) this.rooms.add(r);
    this.send({ type: 'subscribe', events: ev, rooms: rm });
  }

  /**
   * Unsubscribes from event types and rooms (now if connected; forgotten for reconnects, with
   * their resume points: a room subscribed again later starts from live events).
   */
  unsubscribe(events: BusEventType[] = [], rooms: string[] = []): void {
    const ev = events.map(checkEventType);
    const rm = rooms.map(checkRoom);
    if (ev.length === 0 && rm.length === 0) return;
    for (const e of ev) this.events.delete(e);
    for (const r of rm) {
      this.rooms.delete(r);
      this.seen.delete(roomStream(r));
      this.heads.delete(roomStream(r));
    }
    if (!this.hasUserEvents()) {
      this.seen.delete(USER_STREAM);
      this.heads.delete(USER_STREAM);
    }
    this.send({ type: 'unsubscribe', events: ev, rooms: rm });
  }

  /**
   * Declares this user's status (`offline` = invisible) with an optional activity; sent now if
   * connected and re-declared after every reconnect.
   */
  updatePresence(status: PresenceStatus, activity?: string): void {
    if (!PRESENCE_STATUSES.includes(status)) {
      throw new TypeError(`status must be one of ${PRESENCE_STATUSES.join(', ')}`);
    }
    if (activity !== undefined && typeof activity !== 'string') {
      throw new TypeError('activity must be a string');
    }
    this.presence = activity === undefined ? { status } : { status, activity };
    this.send({ type: 'presence', ...this.presence });
  }

  /**
   * Tells `recipient` that this user is typing in `conversationId`. Returns false, and sends
   * nothing, when not connected: a late typing indicator would be wrong, so none is buffered.
   * Call it on keystrokes; the server drops repeats within a second.
   */
  sendTyping(recipient: string, conversationId: string): boolean {
    if (typeof recipient !== 'string' || recipient === '') throw new TypeError('recipient is required');
    if (typeof conversationId !== 'string' || conversationId === '') {
      throw new TypeError('conversationId is required');
    }
    return this.send({ type: 'typing', recipient, conversation_id: conversationId });
  }

  /**
   * Acknowledges user events by id: the server stops keeping them for redelivery (only
   * `high` priority events are kept). Sent together with other pending acks, within 50 ms.
   * Unsent acks are dropped on disconnect: the events are then delivered again, which the
   * client recognises as duplicates and acknowledges once more.
   */
  ack(...ids: string[]): void {
    for (const id of ids) {
      if (typeof id === 'string' && id !== '' && !this.pendingAcks.includes(id)) this.pendingAcks.push(id);
    }
    if (this.pendingAcks.length >= ACK_BATCH) this.flushAcks();
    else if (this.pendingAcks.length > 0 && this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
    }
  }

  private flushAcks(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    while (this.pendingAcks.length > 0) {
      const ids = this.pendingAcks.slice(0, ACK_BATCH);
      if (!this.send({ type: 'ack', ids })) {
        this.pendingAcks = [];
        return;
      }
      this.pendingAcks = this.pendingAcks.slice(ids.length);
    }
  }

  /**
   * Registers this device for push notifications while the user is offline: an FCM or APNs
   * token (`android`, `ios`), or the browser's Web Push subscription (`web`). The server keeps
   * the registration (answering `push_registered` with its id) until the push service says
   * the device is gone or the app deletes it; registering the same device again replaces it.
   * Resolves with the answer; rejects on an `error` answer or when not connected.
   */
  registerPush(platform: PushPlatform, token: string | WebPushSubscriptionJSON): Promise<PushRegisteredMessage> {
    return this.request({ type: 'register_push', platform, token }, 'push_registered', () => true, ['E-WS-INVALID']);
  }

  /**
   * Forgets a push registration of this user (the id {@link registerPush} resolved with), e.g.
   * when the user signs out on this device. Resolves with whether it existed.
   */
  unregisterPush(id: string): Promise<PushUnregisteredMessage> {
    return this.request({ type: 'unregister_push', id }, 'push_unregistered', (m) => m.id === id, [
      'E-WS-INVALID',
      'E-WS-UNAVAILABLE',
    ]);
  }

  /**
   * Sends `msg` and resolves with the first `answer` event that `matches`; rejects on a server
   * `error` with one of `codes`, or at once when not connected.
   */
  private request<K extends 'push_registered' | 'push_unregistered'>(
    msg: Record<string, unknown>,
    answer: K,
    matches: (m: BusClientEventMap[K]) => boolean,
    codes: string[],
  ): Promise<BusClientEventMap[K]> {
    return new Promise((resolve, reject) => {
      let offOk: () => void = () => {};
      let offErr: () => void = () => {};
      const done = () => {
        offOk();
        offErr();
      };
      offOk = this.on(answer, ((m: BusClientEventMap[K]) => {
        if (!matches(m)) return;
        done();
        resolve(m);
      }) as BusClientHandler<K>);
      offErr = this.on('error', (e) => {
        if (!codes.includes(e.code)) return;
        done();
        reject(new Error(e.message));
      });
      if (!this.send(msg)) {
        done();
        reject(new Error('not connected'));
      }
    });
  }

  /** Sends a `ping` now; false when not connected. The client pings by itself as well. */
  ping(): boolean {
    const sent = this.send({ type: 'ping' });
    if (sent) this.armPongTimer();
    return sent;
  }

  /** Whether `user` is typing in `conversationId` (by the tracker). */
  isTyping(user: string, conversationId: string): boolean {
    return this.tracker.isTyping(user, conversationId);
  }

  /** The users typing in `conversationId` (by the tracker). */
  typingIn(conversationId: string): string[] {
    return this.tracker.typingIn(conversationId);
  }

  // ------------------------------------------------------------------ connection

  private setState(state: BusClientState): void {
    this.currentState = state;
  }

  private async attempt(): Promise<void> {
    const gen = ++this.generation;
    this.setState('connecting');
    let welcomed = false;
    // The whole attempt (token, handshake, welcome) is bounded: a hung getToken or a server
    // that accepts TCP but never answers must not leave the client waiting forever.
    if (this.connectTimeoutMs > 0) {
      this.connectTimer = setTimeout(() => {
        this.connectTimer = undefined;
        if (gen !== this.generation || welcomed) return;
        this.abandon('No welcome in time', false);
      }, this.connectTimeoutMs);
    }
    let token: string | undefined;
    try {
      token = await this.currentToken();
    } catch (cause) {
      if (gen !== this.generation) return;
      this.emitError('E-CLIENT-TOKEN', `getToken failed: ${describe(cause)}`, cause);
      this.afterFailure(ABNORMAL_CLOSURE, 'getToken failed', false);
      return;
    }
    if (gen !== this.generation) return;
    if (token === undefined) {
      this.emitError('E-CLIENT-TOKEN-EXPIRED', 'The token expired and there is no getToken to renew it');
      this.stop(4001, 'Token expired');
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new this.Ctor(withToken(this.url, token));
    } catch (cause) {
      this.emitError('E-CLIENT-SOCKET', `Cannot open a WebSocket: ${describe(cause)}`, cause);
      this.stop(ABNORMAL_CLOSURE, 'Cannot open a WebSocket');
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.emit('open', { type: 'open' });
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      const msg = this.parse(ev.data);
      if (!msg) return;
      if (msg.type === 'welcome') welcomed = true;
      this.handle(msg);
    };
    ws.onerror = noop; // a close event follows; browsers tell nothing more
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      this.ws = undefined;
      this.onClosed(ev.code || ABNORMAL_CLOSURE, ev.reason || '', welcomed);
    };
  }

  /** The token for the next attempt, refreshed when needed; undefined when none is usable. */
  private async currentToken(): Promise<string | undefined> {
    const cached = this.token;
    const expired = cached !== undefined && isExpired(cached);
    if (cached !== undefined && !this.tokenStale && !expired) return cached;
    if (!this.getToken) {
      // A static token: use it until it is known to be expired.
      return cached !== undefined && !expired && !this.tokenStale ? cached : undefined;
    }
    const fresh = await this.getToken();
    if (typeof fresh !== 'string' || fresh === '') throw new Error('getToken returned no token');
    this.token = fresh;
    this.tokenStale = false;
    return fresh;
  }

  /** Drops the current socket as dead (no welcome, no pong) and goes on as after a close. */
  private abandon(reason: string, welcomed: boolean): void {
    const ws = this.ws;
    this.ws = undefined;
    this.generation++;
    if (ws) dispose(ws, true, reason);
    this.onClosed(ABNORMAL_CLOSURE, reason, welcomed);
  }

  private onClosed(code: number, reason: string, welcomed: boolean): void {
    this.clearTimers();
    if (code === 4001) this.tokenStale = true;
    // A refused upgrade (bad or expired token) looks like any lost connection to a browser:
    // renew the token before retrying an attempt that never got its welcome.
    if (!welcomed && this.getToken) this.tokenStale = true;
    if (code === 4200) this.backoff.reset(); // "reconnect now"
    this.afterFailure(code, reason, true);
  }

  /** Reconnects, or stops for good when the code or the settings say so. */
  private afterFailure(code: number, reason: string, emitClose: boolean): void {
    this.clearTimers();
    const terminal = isTerminalCloseCode(code, this.getToken !== undefined);
    const willReconnect = this.reconnectOptions.enabled && !terminal;
    if (code === 4001 && !this.getToken) {
      this.emitError('E-CLIENT-TOKEN-EXPIRED', 'The token expired and there is no getToken to renew it');
    }
    if (!willReconnect) {
      this.stop(code, reason);
      return;
    }
    this.setState('reconnecting');
    if (emitClose) this.emit('close', { type: 'close', code, reason, willReconnect });
    if (this.currentState !== 'reconnecting') return; // a handler called close()
    const delayMs = this.backoff.next();
    const attempt = this.backoff.attempt;
    const gen = this.generation;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (gen !== this.generation || this.currentState !== 'reconnecting') return;
      void this.attempt();
    }, delayMs);
    this.emit('reconnecting', { type: 'reconnecting', attempt, delayMs, code });
  }

  /** Stops for good: no reconnect, `connect()` promise rejected, then `close` emitted. */
  private stop(code: number, reason: string): void {
    this.clearTimers();
    this.generation++;
    this.setState('closed');
    this.failReady(new Error(`BusClient stopped: close ${code}${reason ? ` (${reason})` : ''}`));
    this.emit('close', { type: 'close', code, reason, willReconnect: false });
  }

  private failReady(err: Error): void {
    const ready = this.ready;
    this.ready = undefined;
    ready?.reject(err);
  }

  private clearTimers(): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.ackTimer);
    this.reconnectTimer = this.connectTimer = this.pingTimer = this.pongTimer = this.ackTimer = undefined;
    // Unsent acks go: those events are delivered again and acknowledged then.
    this.pendingAcks = [];
  }

  // ------------------------------------------------------------------ messages

  private send(msg: Record<string, unknown>): boolean {
    const ws = this.ws;
    if (this.currentState !== 'open' || !ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(msg));
      return true;
    } catch {
      return false; // closing under our feet; the close event follows
    }
  }

  private parse(data: unknown): ServerMessage | undefined {
    if (typeof data !== 'string') {
      this.emitError('E-CLIENT-PROTOCOL', 'Binary frame from the server');
      return undefined;
    }
    try {
      const msg: unknown = JSON.parse(data);
      if (msg && typeof msg === 'object' && typeof (msg as { type?: unknown }).type === 'string') {
        return msg as ServerMessage;
      }
    } catch {
      // reported below
    }
    this.emitError('E-CLIENT-PROTOCOL', `Unreadable frame from the server: ${data.slice(0, 100)}`);
    return undefined;
  }

  private handle(msg: ServerMessage): void {
    // Any message proves the connection alive.
    clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
    switch (msg.type) {
      case 'welcome':
        this.onWelcome(msg);
        return;
      case 'typing':
        this.tracker.indicate(msg.user, msg.conversation_id);
        this.emit('typing', msg);
        return;
      case 'message':
        this.autoAcknowledge(msg);
        if (!this.firstDelivery(msg)) return;
        if (msg.conversation_id !== undefined) this.tracker.stop(msg.sender, msg.conversation_id, 'message');
        this.emit('message', msg);
        return;
      case 'notification':
      case 'action':
      case 'event':
        if (msg.type !== 'event') this.autoAcknowledge(msg);
        if (!this.firstDelivery(msg)) return;
        this.emit(msg.type, msg as never);
        return;
      case 'replay':
        this.emit('replay', msg);
        if (msg.complete === false) {
          const gap: GapEvent = { type: 'gap', stream: msg.stream, since: msg.since ?? null, count: msg.count };
          if (typeof msg.dropped === 'number' && msg.dropped > 0) gap.dropped = msg.dropped;
          if (typeof msg.stream === 'string' && msg.stream.startsWith(ROOM_PREFIX)) {
            gap.room = msg.stream.slice(ROOM_PREFIX.length);
          }
          this.emit('gap', gap);
        }
        return;
      case 'error':
        if (msg.code === 'E-WS-AUTH') this.tokenStale = true;
        this.emit('error', msg);
        return;
      case 'subscribed':
        this.adoptHeads(msg.heads);
        this.emit('subscribed', msg);
        return;
      case 'acked':
      case 'push_registered':
      case 'push_unregistered':
      case 'pong':
      case 'presence':
        this.emit(msg.type, msg as never);
        return;
      default:
        // A message type newer than this client: ignored.
        return;
    }
  }

  private onWelcome(msg: WelcomeMessage): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.welcome = msg;
    this.setState('open');
    this.backoff.reset();
    if (this.events.size > 0 || this.rooms.size > 0) {
      const subscribe: Record<string, unknown> = { type: 'subscribe', events: [...this.events], rooms: [...this.rooms] };
      // Resume every stream with an id, each from its own (ids are ordered within a stream
      // only): the server replays what was missed, then goes live without duplicates.
      const since = this.resume ? this.lastEventIds : {};
      if (Object.keys(since).length > 0) subscribe.since = since;
      this.send(subscribe);
    }
    if (this.presence) this.send({ type: 'presence', ...this.presence });
    if (this.pingIntervalMs > 0) {
      const gen = this.generation;
      this.pingTimer = setInterval(() => {
        if (gen === this.generation) this.ping();
      }, this.pingIntervalMs);
    }
    const ready = this.ready;
    this.ready = undefined;
    this.emit('welcome', msg);
    ready?.resolve(msg);
  }

  /** Acknowledges a `high` user event (a duplicate too: the server kept it for a reason). */
  private autoAcknowledge(msg: ServerMessage): void {
    const env = msg as EnvelopeFields;
    if (this.autoAck && env.priority === 'high' && typeof env.id === 'string') this.ack(env.id);
  }

  /** Streams with no id yet resume from the head the server reported. */
  private adoptHeads(heads: Record<string, string> | undefined): void {
    if (heads === null || typeof heads !== 'object') return;
    for (const [label, id] of Object.entries(heads)) {
      if (typeof id !== 'string' || id === '' || this.seen.has(label)) continue;
      const kept = label === USER_STREAM ? this.hasUserEvents() : label.startsWith(ROOM_PREFIX) && this.rooms.has(label.slice(ROOM_PREFIX.length));
      if (kept) this.heads.set(label, id);
    }
  }

  private hasUserEvents(): boolean {
    return USER_EVENT_TYPES.some((e) => this.events.has(e));
  }

  /**
   * Whether `msg` is new for its stream (remembering its id as the stream's resume point), or
   * a duplicate of one already delivered. Events without an id, and events of a stream the
   * client no longer keeps (in flight after an unsubscribe), are delivered and not remembered.
   */
  private firstDelivery(msg: ServerMessage): boolean {
    const id = (msg as EnvelopeFields).id;
    if (typeof id !== 'string' || id === '') return true;
    const label = streamLabel(msg);
    if (label === undefined) return true;
    const kept = label === USER_STREAM ? this.hasUserEvents() : this.rooms.has((msg as RoomEventMessage).room);
    if (!kept) return true;
    let ids = this.seen.get(label);
    if (ids === undefined) {
      ids = [];
      this.seen.set(label, ids);
    } else if (ids.includes(id)) {
      return false;
    }
    ids.push(id);
    if (ids.length > DEDUP_WINDOW) ids.shift();
    return true;
  }

  private armPongTimer(): void {
    if (this.pongTimeoutMs === 0 || this.pongTimer !== undefined) return;
    const gen = this.generation;
    this.pongTimer = setTimeout(() => {
      this.pongTimer = undefined;
      if (gen === this.generation && this.currentState === 'open') this.abandon('No pong in time', true);
    }, this.pongTimeoutMs);
  }

  // ------------------------------------------------------------------ events

  private emit<K extends BusClientEventName>(type: K, event: BusClientEventMap[K]): void {
    const set = this.handlers.get(type);
    if (!set || set.size === 0) return;
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

  private emitError(code: ClientErrorCode, message: string, cause?: unknown): void {
    const err: ErrorMessage = { type: 'error', code, message, timestamp: Math.floor(Date.now() / 1000) };
    if (cause !== undefined) err.cause = cause;
    this.emit('error', err);
  }
}

function checkEventType(e: BusEventType): BusEventType {
  if (!EVENT_TYPES.includes(e)) {
    throw new TypeError(`Unknown event type ${JSON.stringify(e)}: one of ${EVENT_TYPES.join(', ')}`);
  }
  return e;
}

function checkRoom(room: string): string {
  if (typeof room !== 'string' || room === '') throw new TypeError('A room is a non-empty string');
  return room;
}

function isExpired(token: string): boolean {
  const exp = tokenExpiry(token);
  return exp !== undefined && exp * 1000 <= Date.now();
}

function withToken(url: string, token: string): string {
  const hash = url.indexOf('#');
  const base = hash === -1 ? url : url.slice(0, hash);
  return `${base}${base.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/**
 * Detaches a socket's handlers and closes it without waiting for anything; `dead`: the peer
 * is not answering, so `ws` sockets are terminated rather than closed with a handshake.
 */
function dispose(ws: WebSocketLike, dead: boolean, reason: string): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = noop; // `ws` emits an error when closed while connecting
  try {
    if (typeof ws.terminate === 'function' && (dead || ws.readyState !== WS_OPEN)) ws.terminate();
    else ws.close(NORMAL_CLOSURE, reason);
  } catch {
    // already closed
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
