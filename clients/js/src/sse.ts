/**
 * The bus over Server-Sent Events, for networks that break WebSocket upgrades: a
 * {@link WebSocketLike} made of a `text/event-stream` (`GET /ws/bus/sse`, the same frames as the
 * WebSocket) and POSTs of the client's messages (`POST /ws/bus/send?session=`), so that the
 * connection drives it exactly as it drives a WebSocket.
 *
 * - The stream is read with `fetch` (Node 20+, and browsers), parsing the SSE format here; the
 *   token goes as `Authorization: Bearer`. Where an `EventSource` is given or global (browsers),
 *   it is used instead, with the token in the query (an EventSource cannot set headers).
 * - `send()` before the `welcome` (no `session_id` yet) waits for it; what is sent within one
 *   tick goes in one POST (an array, in order, at most 20 per POST); one POST at a time, so
 *   the order holds across POSTs. A 429 is retried after a short wait.
 * - The stream's `event: close` is the close (its code and reason); a stream that ends or
 *   fails otherwise, or a POST answered 404 (the session is gone), is an abnormal close (1006).
 */

import { ABNORMAL_CLOSURE, type EventHandlerProperty, type WebSocketLike } from './socket.js';

// Runtime globals, declared so that the build needs neither the DOM nor the Node types.
type TimerHandle = unknown;
declare function setTimeout(handler: () => void, ms?: number): TimerHandle;
declare function clearTimeout(handle: TimerHandle | undefined): void;
declare class TextDecoder {
  constructor(label?: string);
  decode(input?: Uint8Array, options?: { stream?: boolean }): string;
}
declare class AbortController {
  readonly signal: unknown;
  abort(): void;
}

/** The part of a `fetch` response the transport reads. */
export interface FetchResponseLike {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  readonly body: {
    getReader(): { read(): Promise<{ done: boolean; value?: Uint8Array }>; cancel(reason?: unknown): Promise<void> };
  } | null;
  text(): Promise<string>;
}

/** A `fetch` implementation: `globalThis.fetch` by default. */
export type FetchLike = (
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string; signal?: unknown },
) => Promise<FetchResponseLike>;

/** The part of the standard `EventSource` the transport uses. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: EventHandlerProperty<unknown>;
  onmessage: EventHandlerProperty<{ data: unknown }>;
  onerror: EventHandlerProperty<unknown>;
  addEventListener(type: string, listener: (event: { data: unknown }) => void): void;
  close(): void;
}

/** An `EventSource` constructor (browsers' global). */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** Most messages in one POST (the server's limit). */
export const MAX_BATCH = 20;
/** Waits before retrying a POST answered 429, then each retry doubles it. */
const RETRY_429_MS = 100;
const MAX_429_RETRIES = 5;

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

/** Where the SSE transport goes, and with what. */
export interface SseEndpoints {
  /** `http(s)://HOST/ws/bus/sse`. */
  streamUrl: string;
  /** `http(s)://HOST/ws/bus/send`. */
  sendUrl: string;
  fetch: FetchLike | undefined;
  EventSource: EventSourceConstructor | undefined;
}

/** The SSE and send URLs of a bus WebSocket URL: ws→http, wss→https, `/ws/bus` → `/ws/bus/sse`, `/ws/bus/send`. */
export function deriveSseUrls(wsUrl: string): { streamUrl: string; sendUrl: string } {
  const base = httpBase(wsUrl);
  return { streamUrl: `${base}/sse`, sendUrl: `${base}/send` };
}

/** The send URL next to a stream URL (`.../sse` → `.../send`). */
export function sendUrlOf(streamUrl: string): string {
  const cut = stripQuery(streamUrl);
  return /\/sse$/.test(cut) ? `${cut.slice(0, -4)}/send` : `${cut.replace(/\/$/, '')}/send`;
}

function stripQuery(url: string): string {
  const i = url.search(/[?#]/);
  return i === -1 ? url : url.slice(0, i);
}

function httpBase(wsUrl: string): string {
  const url = stripQuery(wsUrl).replace(/^ws(s?):/i, 'http$1:');
  return url.replace(/\/$/, '');
}

function withParam(url: string, key: string, value: string): string {
  const hash = url.indexOf('#');
  const base = hash === -1 ? url : url.slice(0, hash);
  return `${base}${base.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** One SSE session, shaped like a WebSocket. */
export class SseSocket implements WebSocketLike {
  readyState = CONNECTING;
  onopen: EventHandlerProperty<unknown> = null;
  onmessage: EventHandlerProperty<{ data: unknown }> = null;
  onclose: EventHandlerProperty<{ code: number; reason: string }> = null;
  onerror: EventHandlerProperty<unknown> = null;

  private session: string | undefined;
  private readonly pending: string[] = [];
  private flushScheduled = false;
  private posting = false;
  private readonly abort: AbortController | undefined;
  private es: EventSourceLike | undefined;

  constructor(
    private readonly endpoints: SseEndpoints,
    private readonly token: string,
  ) {
    if (endpoints.EventSource) {
      this.abort = undefined;
      this.openEventSource(endpoints.EventSource);
    } else {
      if (typeof endpoints.fetch !== 'function') {
        throw new TypeError('No fetch implementation for the SSE transport: pass options.fetch');
      }
      this.abort = new AbortController();
      void this.readStream(endpoints.fetch);
    }
  }

  /** Queues `data` (one client message, JSON text) for the next POST. */
  send(data: string): void {
    if (this.readyState === CLOSED) throw new Error('SSE session closed');
    this.pending.push(data);
    this.scheduleFlush();
  }

  close(code?: number, reason?: string): void {
    this.finish(code ?? 1000, reason ?? '', false);
  }

  /** As `close`: there is no closing handshake to skip. */
  terminate(): void {
    this.finish(ABNORMAL_CLOSURE, 'terminated', false);
  }

  // ------------------------------------------------------------------ the stream

  private openEventSource(Ctor: EventSourceConstructor): void {
    const es = new Ctor(withParam(this.endpoints.streamUrl, 'token', this.token));
    this.es = es;
    es.onopen = () => this.opened();
    es.onmessage = (ev) => this.frame(typeof ev.data === 'string' ? ev.data : String(ev.data));
    es.addEventListener('close', (ev) => this.closeEvent(String(ev.data)));
    // An EventSource retries by itself after an error: the connection decides instead.
    es.onerror = () => this.finish(ABNORMAL_CLOSURE, 'SSE stream failed', true);
  }

  private async readStream(fetchImpl: FetchLike): Promise<void> {
    let res: FetchResponseLike;
    try {
      res = await fetchImpl(this.endpoints.streamUrl, {
        method: 'GET',
        headers: { accept: 'text/event-stream', authorization: `Bearer ${this.token}` },
        signal: this.abort?.signal,
      });
    } catch (err) {
      this.finish(ABNORMAL_CLOSURE, `SSE request failed: ${describe(err)}`, true);
      return;
    }
    if (this.readyState === CLOSED) {
      void res.body?.getReader().cancel().catch(() => {});
      return;
    }
    const type = res.headers.get('content-type') ?? '';
    if (res.status !== 200 || !type.startsWith('text/event-stream') || !res.body) {
      const body = await res.text().catch(() => '');
      this.finish(ABNORMAL_CLOSURE, `SSE refused: HTTP ${res.status}${body ? ` ${body.slice(0, 200)}` : ''}`, true);
      return;
    }
    this.opened();
    const reader = res.body.getReader();
    const decoder = new TextDecoder('utf-8');
    const parser = new SseParser((event, data) => {
      if (event === 'close') this.closeEvent(data);
      else if (event === 'message') this.frame(data);
    });
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.readyState === CLOSED) break;
        if (done) {
          parser.push(decoder.decode());
          break;
        }
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      this.finish(ABNORMAL_CLOSURE, `SSE stream cut: ${describe(err)}`, true);
      return;
    }
    reader.cancel().catch(() => {});
    this.finish(ABNORMAL_CLOSURE, 'SSE stream ended', true);
  }

  private opened(): void {
    if (this.readyState !== CONNECTING) return;
    this.readyState = OPEN;
    this.onopen?.({ type: 'open' });
  }

  private frame(data: string): void {
    if (this.readyState !== OPEN) return;
    if (this.session === undefined && data.includes('"welcome"')) {
      try {
        const msg = JSON.parse(data) as { type?: unknown; session_id?: unknown };
        if (msg.type === 'welcome' && typeof msg.session_id === 'string') {
          this.session = msg.session_id;
          // Sends made in the welcome's handlers go out together with those that waited.
          this.scheduleFlush();
        }
      } catch {
        // the connection reports unreadable frames
      }
    }
    this.onmessage?.({ data });
  }

  private closeEvent(data: string): void {
    let code = ABNORMAL_CLOSURE;
    let reason = '';
    try {
      const msg = JSON.parse(data) as { code?: unknown; reason?: unknown };
      if (typeof msg.code === 'number') code = msg.code;
      if (typeof msg.reason === 'string') reason = msg.reason;
    } catch {
      reason = 'unreadable close event';
    }
    this.finish(code, reason, true);
  }

  /** Ends the session once; `notify`: tell `onclose` (a close the client did not ask for). */
  private finish(code: number, reason: string, notify: boolean): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.pending.length = 0;
    try {
      this.abort?.abort();
    } catch {
      // already done
    }
    this.es?.close();
    const onclose = this.onclose;
    if (notify && onclose) onclose({ code, reason });
    else if (onclose) setTimeout(() => onclose({ code, reason }), 0); // as a WebSocket does
  }

  // ------------------------------------------------------------------ POSTs

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // A macrotask: everything sent in this tick (and its microtasks) goes in one POST.
    setTimeout(() => {
      this.flushScheduled = false;
      void this.flush();
    }, 0);
  }

  private async flush(): Promise<void> {
    if (this.posting || this.session === undefined || this.readyState !== OPEN) return;
    const fetchImpl = this.endpoints.fetch;
    if (typeof fetchImpl !== 'function') {
      this.finish(ABNORMAL_CLOSURE, 'No fetch implementation to send with', true);
      return;
    }
    this.posting = true;
    try {
      while (this.pending.length > 0 && this.readyState === OPEN) {
        const batch = this.pending.splice(0, MAX_BATCH);
        const ok = await this.post(fetchImpl, batch);
        if (!ok) return;
      }
    } finally {
      this.posting = false;
    }
  }

  /** POSTs one batch; false when the session is over. */
  private async post(fetchImpl: FetchLike, batch: string[]): Promise<boolean> {
    const url = withParam(this.endpoints.sendUrl, 'session', this.session ?? '');
    const body = batch.length === 1 ? batch[0] : `[${batch.join(',')}]`;
    for (let retry = 0; ; retry++) {
      let status: number;
      try {
        const res = await fetchImpl(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
          body,
        });
        status = res.status;
        await res.text().catch(() => '');
      } catch (err) {
        this.finish(ABNORMAL_CLOSURE, `SSE send failed: ${describe(err)}`, true);
        return false;
      }
      if (this.readyState !== OPEN) return false;
      if (status >= 200 && status < 300) return true;
      if (status === 429 && retry < MAX_429_RETRIES) {
        await new Promise<void>((resolve) => setTimeout(resolve, RETRY_429_MS * 2 ** retry));
        if (this.readyState !== OPEN) return false;
        continue;
      }
      if (status === 404 || status === 429) {
        // The session is gone (or cannot keep up): as a lost connection.
        this.finish(ABNORMAL_CLOSURE, `SSE send refused: HTTP ${status}`, true);
        return false;
      }
      // 400, 413: the messages are refused and dropped; the session goes on.
      this.onerror?.({ type: 'error', status });
      return true;
    }
  }
}

/**
 * The `text/event-stream` format (WHATWG HTML, "Server-sent events"): lines of `field: value`,
 * an event at each blank line, `:` comments, `\n`, `\r\n` or `\r` line ends.
 */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private event = '';
  /** The last `id:` (what an `EventSource` would send back as `Last-Event-ID`). */
  lastEventId = '';

  constructor(private readonly dispatch: (event: string, data: string) => void) {}

  push(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) return;
      // A lone `\r` at the end may be the start of `\r\n`: wait for the next chunk.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) this.dispatch(this.event || 'message', this.data.join('\n'));
      this.data = [];
      this.event = '';
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.lastEventId = value;
  }
}
