/**
 * The client's options, and their checks: a bad option throws a TypeError from the
 * constructor rather than surfacing later as a strange reconnect or timer.
 */

import { TYPING_TIMEOUT_MS } from './presence.js';
import type { BusEventType } from './protocol.js';
import { DEFAULT_RECONNECT, type ReconnectOptions, type ResolvedReconnectOptions } from './reconnect.js';
import type { WebSocketConstructor } from './socket.js';
import { deriveSseUrls, sendUrlOf, type EventSourceConstructor, type FetchLike, type SseEndpoints } from './sse.js';
import { checkEventType, checkRoom } from './subscriptions.js';

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
  /**
   * The WebSocket implementation. Default `globalThis.WebSocket`. Not needed when `transports`
   * is `['sse']`.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * The transports to use, in order of preference. Default `['websocket', 'sse']`: WebSocket,
   * and Server-Sent Events + POST when the WebSocket keeps failing (see {@link FallbackOptions}).
   * One transport: that one only.
   */
  transports?: Transport[];
  /**
   * The SSE stream URL (`http(s)://HOST/ws/bus/sse`). Default: derived from `url` (ws→http,
   * wss→https, `/ws/bus` → `/ws/bus/sse`).
   */
  sseUrl?: string;
  /**
   * Where the SSE transport POSTs the client's messages. Default: next to `sseUrl`
   * (`.../sse` → `.../send`), or derived from `url` (`/ws/bus/send`).
   */
  sendUrl?: string;
  /** The `fetch` of the SSE transport (its POSTs, and its stream without EventSource). Default `globalThis.fetch`. */
  fetch?: FetchLike;
  /**
   * An `EventSource` for the SSE stream (the token then goes in its query). Default
   * `globalThis.EventSource` where there is one (browsers); without it (Node) the stream is
   * read with `fetch` and the token sent as `Authorization: Bearer`. `null`: always `fetch`.
   */
  EventSource?: EventSourceConstructor | null;
  /** When to fall back from the first transport to the second, and when to try the first again. */
  fallback?: FallbackOptions;
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

/** A way to carry the bus: a WebSocket, or Server-Sent Events with POSTs. */
export type Transport = 'websocket' | 'sse';

/**
 * The fallback rule, with `transports: [first, second]` (by default WebSocket, then SSE):
 *
 * 1. Attempts use the first transport until it has failed `after` times in a row; then the second.
 * 2. An attempt of the first transport fails when it ends abnormally (1006: refused, cut, no
 *    `welcome` in time, no pong) before its `welcome` or within `windowMs` after it. Any
 *    other end (a close code from the server, or a session that lasted `windowMs`) resets the count.
 * 3. On the second transport: a session that was welcomed and ended after lasting at least
 *    `retryAfterMs` makes the next attempt one of the first transport again, and a single
 *    failure of it returns to the second. An attempt of the second transport that fails before
 *    its `welcome` resets the count (the trouble is not the first transport's): the first is
 *    tried `after` times again.
 * 4. `connect()` after `close()` starts over with the first transport.
 */
export interface FallbackOptions {
  /** Failures of the first transport in a row before the second is used. Default 2. */
  after?: number;
  /** How soon after its `welcome` an abnormal close still counts as a failure. Default 3000 ms. */
  windowMs?: number;
  /** How long a session of the second transport must last for its end to try the first again. Default 60000 ms. */
  retryAfterMs?: number;
}

/** {@link FallbackOptions} with every default applied. */
export type ResolvedFallbackOptions = Required<FallbackOptions>;

/** {@link BusClientOptions} checked, with every default applied. */
export interface ResolvedOptions {
  url: string;
  token: string | undefined;
  getToken: (() => Promise<string> | string) | undefined;
  WebSocket: WebSocketConstructor | undefined;
  transports: Transport[];
  sse: SseEndpoints;
  fallback: ResolvedFallbackOptions;
  pingIntervalMs: number;
  pongTimeoutMs: number;
  connectTimeoutMs: number;
  reconnect: ResolvedReconnectOptions;
  random: () => number;
  typingTimeoutMs: number;
  events: BusEventType[];
  rooms: string[];
  resume: boolean;
  autoAck: boolean;
}

/** Checks `options` (in the order of the fields below) and applies the defaults. */
export function resolveOptions(options: BusClientOptions): ResolvedOptions {
  if (!options || typeof options.url !== 'string' || options.url === '') {
    throw new TypeError('options.url is required');
  }
  if (options.token === undefined && options.getToken === undefined) {
    throw new TypeError('options.token or options.getToken is required');
  }
  const transports = checkTransports(options.transports);
  const Ctor =
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (transports.includes('websocket') && typeof Ctor !== 'function') {
    throw new TypeError(
      'No WebSocket implementation: pass options.WebSocket (on Node 20, the "ws" package)',
    );
  }
  const pingIntervalMs = nonNegative(options.pingIntervalMs, 30_000, 'pingIntervalMs');
  const pongTimeoutMs = nonNegative(options.pongTimeoutMs, 10_000, 'pongTimeoutMs');
  const connectTimeoutMs = nonNegative(options.connectTimeoutMs, 10_000, 'connectTimeoutMs');
  const r = options.reconnect === false ? { enabled: false } : options.reconnect ?? {};
  const reconnect: ResolvedReconnectOptions = {
    enabled: r.enabled ?? DEFAULT_RECONNECT.enabled,
    initialDelayMs: nonNegative(r.initialDelayMs, DEFAULT_RECONNECT.initialDelayMs, 'reconnect.initialDelayMs'),
    maxDelayMs: nonNegative(r.maxDelayMs, DEFAULT_RECONNECT.maxDelayMs, 'reconnect.maxDelayMs'),
    jitter: r.jitter ?? DEFAULT_RECONNECT.jitter,
  };
  const derived = deriveSseUrls(options.url);
  const streamUrl = checkUrl(options.sseUrl, 'sseUrl') ?? derived.streamUrl;
  const sendUrl =
    checkUrl(options.sendUrl, 'sendUrl') ?? (options.sseUrl !== undefined ? sendUrlOf(streamUrl) : derived.sendUrl);
  const globals = globalThis as { fetch?: FetchLike; EventSource?: EventSourceConstructor };
  const fetchImpl = options.fetch ?? (typeof globals.fetch === 'function' ? globals.fetch.bind(globalThis) : undefined);
  const EventSourceImpl =
    options.EventSource === null ? undefined : options.EventSource ?? globals.EventSource ?? undefined;
  if (transports.includes('sse') && typeof fetchImpl !== 'function') {
    throw new TypeError('No fetch implementation for the SSE transport: pass options.fetch');
  }
  const f = options.fallback ?? {};
  const fallback: ResolvedFallbackOptions = {
    after: Math.max(1, Math.floor(nonNegative(f.after, 2, 'fallback.after'))),
    windowMs: nonNegative(f.windowMs, 3000, 'fallback.windowMs'),
    retryAfterMs: nonNegative(f.retryAfterMs, 60_000, 'fallback.retryAfterMs'),
  };
  return {
    url: options.url,
    token: options.token,
    getToken: options.getToken,
    WebSocket: typeof Ctor === 'function' ? Ctor : undefined,
    transports,
    sse: { streamUrl, sendUrl, fetch: fetchImpl, EventSource: EventSourceImpl },
    fallback,
    pingIntervalMs,
    pongTimeoutMs,
    connectTimeoutMs,
    reconnect,
    random: options.random ?? Math.random,
    typingTimeoutMs: nonNegative(options.typingTimeoutMs, TYPING_TIMEOUT_MS, 'typingTimeoutMs'),
    events: [...(options.events ?? [])].map(checkEventType),
    rooms: [...(options.rooms ?? [])].map(checkRoom),
    resume: options.resume ?? true,
    autoAck: options.autoAck ?? true,
  };
}

function checkTransports(value: Transport[] | undefined): Transport[] {
  if (value === undefined) return ['websocket', 'sse'];
  if (!Array.isArray(value) || value.length === 0 || value.length > 2) {
    throw new TypeError("transports must list 'websocket' and/or 'sse'");
  }
  for (const t of value) {
    if (t !== 'websocket' && t !== 'sse') throw new TypeError(`unknown transport: ${String(t)}`);
  }
  if (value.length === 2 && value[0] === value[1]) throw new TypeError('transports must not repeat');
  return [...value];
}

function checkUrl(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') {
    throw new TypeError(`${name} must be a URL`);
  }
  return value;
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`${name} must be a finite number >= 0`);
  }
  return v;
}
