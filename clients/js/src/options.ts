/**
 * The client's options, and their checks: a bad option throws a TypeError from the
 * constructor rather than surfacing later as a strange reconnect or timer.
 */

import { TYPING_TIMEOUT_MS } from './presence.js';
import type { BusEventType } from './protocol.js';
import { DEFAULT_RECONNECT, type ReconnectOptions, type ResolvedReconnectOptions } from './reconnect.js';
import type { WebSocketConstructor } from './socket.js';
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

/** {@link BusClientOptions} checked, with every default applied. */
export interface ResolvedOptions {
  url: string;
  token: string | undefined;
  getToken: (() => Promise<string> | string) | undefined;
  WebSocket: WebSocketConstructor;
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
  const Ctor =
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof Ctor !== 'function') {
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
  return {
    url: options.url,
    token: options.token,
    getToken: options.getToken,
    WebSocket: Ctor,
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

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`${name} must be a finite number >= 0`);
  }
  return v;
}
