/**
 * The connection: one WebSocket at a time, replaced when it ends. It owns the socket's
 * lifecycle (token, handshake, `welcome`, heartbeat, close) and the reconnect loop; what the
 * messages mean is the client's, reached through {@link ConnectionHost}.
 *
 * Every attempt has a generation number. Abandoning an attempt bumps it, so that the callbacks
 * of an old socket or timer, which may still fire, recognise themselves as stale and do
 * nothing: there is never more than one live attempt.
 */

import type { Emitter } from './events.js';
import type { ResolvedFallbackOptions, ResolvedOptions, Transport } from './options.js';
import type { ServerMessage, WelcomeMessage } from './protocol.js';
import { Backoff, isTerminalCloseCode, type ResolvedReconnectOptions } from './reconnect.js';
import {
  ABNORMAL_CLOSURE,
  NORMAL_CLOSURE,
  WS_OPEN,
  dispose,
  noop,
  withToken,
  type WebSocketConstructor,
  type WebSocketLike,
} from './socket.js';
import { SseSocket, type SseEndpoints } from './sse.js';
import { TokenSource } from './token.js';

// Runtime globals, declared so that the build needs neither the DOM nor the Node types.
type TimerHandle = unknown;
declare function setTimeout(handler: () => void, ms?: number): TimerHandle;
declare function clearTimeout(handle: TimerHandle | undefined): void;
declare function setInterval(handler: () => void, ms?: number): TimerHandle;
declare function clearInterval(handle: TimerHandle | undefined): void;
declare const Date: { now(): number };

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

/** What the connection asks of the client, at fixed points of its lifecycle. */
export interface ConnectionHost {
  /** Every server message but `welcome`, after the connection's own bookkeeping. */
  dispatch(msg: ServerMessage): void;
  /** Welcomed (state `open`), before `welcome` is emitted: send the kept state again. */
  restore(): void;
  /** The connection's timers are cleared: drop what must not outlive the connection. */
  teardown(): void;
  /** `close()` was called; the socket is gone, `close` not emitted yet. */
  closing(): void;
}

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

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Connection {
  private readonly url: string;
  private readonly Ctor: WebSocketConstructor | undefined;
  private readonly transports: Transport[];
  private readonly sse: SseEndpoints;
  private readonly fallback: ResolvedFallbackOptions;
  /** Failures in a row of the first transport (see `FallbackOptions`). */
  private firstFailures = 0;
  /** The transport of the current (or last) attempt. */
  private attemptTransport: Transport | undefined;
  /** When the current attempt was welcomed. */
  private welcomedAt: number | undefined;
  private readonly pingIntervalMs: number;
  private readonly pongTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly reconnectOptions: ResolvedReconnectOptions;
  private readonly backoff: Backoff;
  private readonly tokens: TokenSource;

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

  constructor(
    options: ResolvedOptions,
    private readonly emitter: Emitter,
    private readonly host: ConnectionHost,
  ) {
    this.url = options.url;
    this.Ctor = options.WebSocket;
    this.transports = options.transports;
    this.sse = options.sse;
    this.fallback = options.fallback;
    this.pingIntervalMs = options.pingIntervalMs;
    this.pongTimeoutMs = options.pongTimeoutMs;
    this.connectTimeoutMs = options.connectTimeoutMs;
    this.reconnectOptions = options.reconnect;
    this.backoff = new Backoff(this.reconnectOptions, options.random);
    this.tokens = new TokenSource(options.token, options.getToken);
  }

  get state(): BusClientState {
    return this.currentState;
  }

  /** The `welcome` of the current connection, if welcomed. */
  get session(): WelcomeMessage | undefined {
    return this.currentState === 'open' ? this.welcome : undefined;
  }

  /** The transport of the current attempt (or of the last one, once closed). */
  get transport(): Transport | undefined {
    return this.attemptTransport;
  }

  /** See `BusClient.connect`. */
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
      this.firstFailures = 0;
      void this.attempt();
    }
    return promise;
  }

  /** See `BusClient.close`. */
  close(): void {
    const wasStarted = this.currentState !== 'closed';
    this.generation++;
    this.clearTimers();
    const ws = this.ws;
    this.ws = undefined;
    if (ws) dispose(ws, false, 'client closed');
    this.setState('closed');
    this.host.closing();
    this.failReady(new Error('BusClient closed'));
    if (wasStarted) {
      this.emitter.emit('close', { type: 'close', code: NORMAL_CLOSURE, reason: 'client closed', willReconnect: false });
    }
  }

  /** Sends `msg` if welcomed; false otherwise (nothing is queued). */
  send(msg: Record<string, unknown>): boolean {
    const ws = this.ws;
    if (this.currentState !== 'open' || !ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(msg));
      return true;
    } catch {
      return false; // closing under our feet; the close event follows
    }
  }

  /** Sends a `ping` and expects an answer within `pongTimeoutMs`; false when not connected. */
  ping(): boolean {
    const sent = this.send({ type: 'ping' });
    if (sent) this.armPongTimer();
    return sent;
  }

  // ------------------------------------------------------------------ attempts

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
      token = await this.tokens.current();
    } catch (cause) {
      if (gen !== this.generation) return;
      this.emitter.emitError('E-CLIENT-TOKEN', `getToken failed: ${describe(cause)}`, cause);
      this.afterFailure(ABNORMAL_CLOSURE, 'getToken failed', false);
      return;
    }
    if (gen !== this.generation) return;
    if (token === undefined) {
      this.emitter.emitError('E-CLIENT-TOKEN-EXPIRED', 'The token expired and there is no getToken to renew it');
      this.stop(4001, 'Token expired');
      return;
    }
    const transport = this.pickTransport();
    this.attemptTransport = transport;
    this.welcomedAt = undefined;
    let ws: WebSocketLike;
    try {
      if (transport === 'sse') ws = new SseSocket(this.sse, token);
      else if (this.Ctor) ws = new this.Ctor(withToken(this.url, token));
      else throw new TypeError('No WebSocket implementation');
    } catch (cause) {
      const what = transport === 'sse' ? 'an SSE stream' : 'a WebSocket';
      this.emitter.emitError('E-CLIENT-SOCKET', `Cannot open ${what}: ${describe(cause)}`, cause);
      this.stop(ABNORMAL_CLOSURE, `Cannot open ${what}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.emitter.emit('open', { type: 'open', transport });
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      const msg = this.parse(ev.data);
      if (!msg) return;
      if (msg.type === 'welcome') welcomed = true;
      this.receive(msg);
    };
    ws.onerror = noop; // a close event follows; browsers tell nothing more
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      this.ws = undefined;
      this.onClosed(ev.code || ABNORMAL_CLOSURE, ev.reason || '', welcomed);
    };
  }

  /** Drops the current socket as dead (no welcome, no pong) and goes on as after a close. */
  private abandon(reason: string, welcomed: boolean): void {
    const ws = this.ws;
    this.ws = undefined;
    this.generation++;
    if (ws) dispose(ws, true, reason);
    this.onClosed(ABNORMAL_CLOSURE, reason, welcomed);
  }

  /**
   * The transport of the next attempt: the first listed, unless it has failed
   * `fallback.after` times in a row (the rule is documented on `FallbackOptions`).
   */
  private pickTransport(): Transport {
    const [first, second] = this.transports as [Transport, Transport | undefined];
    if (second === undefined) return first;
    return this.firstFailures >= this.fallback.after ? second : first;
  }

  /** Counts how the attempt of `attemptTransport` ended, for the fallback rule. */
  private noteEnd(code: number): void {
    const [first, second] = this.transports as [Transport, Transport | undefined];
    if (second === undefined) return;
    const lived = this.welcomedAt === undefined ? undefined : Date.now() - this.welcomedAt;
    if (this.attemptTransport === first) {
      const failed = code === ABNORMAL_CLOSURE && (lived === undefined || lived < this.fallback.windowMs);
      this.firstFailures = failed ? this.firstFailures + 1 : 0;
    } else if (lived === undefined) {
      // The second transport failed as well: not the first one's fault, try it again.
      this.firstFailures = 0;
    } else if (lived >= this.fallback.retryAfterMs) {
      // A later reconnect: one more try of the first transport, one failure to come back.
      this.firstFailures = this.fallback.after - 1;
    }
  }

  private onClosed(code: number, reason: string, welcomed: boolean): void {
    this.noteEnd(code);
    this.clearTimers();
    if (code === 4001) this.tokens.markStale();
    // A refused upgrade (bad or expired token) looks like any lost connection to a browser:
    // renew the token before retrying an attempt that never got its welcome.
    if (!welcomed && this.tokens.getToken) this.tokens.markStale();
    if (code === 4200) this.backoff.reset(); // "reconnect now"
    this.afterFailure(code, reason, true);
  }

  /** Reconnects, or stops for good when the code or the settings say so. */
  private afterFailure(code: number, reason: string, emitClose: boolean): void {
    this.clearTimers();
    const terminal = isTerminalCloseCode(code, this.tokens.getToken !== undefined);
    const willReconnect = this.reconnectOptions.enabled && !terminal;
    if (code === 4001 && !this.tokens.getToken) {
      this.emitter.emitError('E-CLIENT-TOKEN-EXPIRED', 'The token expired and there is no getToken to renew it');
    }
    if (!willReconnect) {
      this.stop(code, reason);
      return;
    }
    this.setState('reconnecting');
    if (emitClose) this.emitter.emit('close', { type: 'close', code, reason, willReconnect });
    if (this.currentState !== 'reconnecting') return; // a handler called close()
    const delayMs = this.backoff.next();
    const attempt = this.backoff.attempt;
    const gen = this.generation;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (gen !== this.generation || this.currentState !== 'reconnecting') return;
      void this.attempt();
    }, delayMs);
    this.emitter.emit('reconnecting', { type: 'reconnecting', attempt, delayMs, code });
  }

  /** Stops for good: no reconnect, `connect()` promise rejected, then `close` emitted. */
  private stop(code: number, reason: string): void {
    this.clearTimers();
    this.generation++;
    this.setState('closed');
    this.failReady(new Error(`BusClient stopped: close ${code}${reason ? ` (${reason})` : ''}`));
    this.emitter.emit('close', { type: 'close', code, reason, willReconnect: false });
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
    this.reconnectTimer = this.connectTimer = this.pingTimer = this.pongTimer = undefined;
    this.host.teardown();
  }

  // ------------------------------------------------------------------ messages

  private parse(data: unknown): ServerMessage | undefined {
    if (typeof data !== 'string') {
      this.emitter.emitError('E-CLIENT-PROTOCOL', 'Binary frame from the server');
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
    this.emitter.emitError('E-CLIENT-PROTOCOL', `Unreadable frame from the server: ${data.slice(0, 100)}`);
    return undefined;
  }

  private receive(msg: ServerMessage): void {
    // Any message proves the connection alive.
    clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
    if (msg.type === 'welcome') {
      this.onWelcome(msg);
      return;
    }
    if (msg.type === 'error' && msg.code === 'E-WS-AUTH') this.tokens.markStale();
    this.host.dispatch(msg);
  }

  private onWelcome(msg: WelcomeMessage): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.welcome = msg;
    this.welcomedAt = Date.now();
    this.setState('open');
    this.backoff.reset();
    this.host.restore();
    if (this.pingIntervalMs > 0) {
      const gen = this.generation;
      this.pingTimer = setInterval(() => {
        if (gen === this.generation) this.ping();
      }, this.pingIntervalMs);
    }
    const ready = this.ready;
    this.ready = undefined;
    this.emitter.emit('welcome', msg);
    ready?.resolve(msg);
  }

  private armPongTimer(): void {
    if (this.pongTimeoutMs === 0 || this.pongTimer !== undefined) return;
    const gen = this.generation;
    this.pongTimer = setTimeout(() => {
      this.pongTimer = undefined;
      if (gen === this.generation && this.currentState === 'open') this.abandon('No pong in time', true);
    }, this.pongTimeoutMs);
  }
}
