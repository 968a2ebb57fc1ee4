/**
 * The WebSocket the client needs: the part of the standard API it uses (so that browsers, Deno,
 * Bun, Node 22+ and the `ws` package all fit without DOM types), and how a socket is given its
 * token and thrown away.
 */

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

export const WS_OPEN = 1;

export const NORMAL_CLOSURE = 1000;
/** What a socket reports when it ended without a close frame; used for the client's own drops too. */
export const ABNORMAL_CLOSURE = 1006;

export function noop(): void {}

/** `url` with `token=` in its query: the only way a browser WebSocket can send a token. */
export function withToken(url: string, token: string): string {
  const hash = url.indexOf('#');
  const base = hash === -1 ? url : url.slice(0, hash);
  return `${base}${base.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/**
 * Detaches a socket's handlers and closes it without waiting for anything; `dead`: the peer
 * is not answering, so `ws` sockets are terminated rather than closed with a handshake.
 */
export function dispose(ws: WebSocketLike, dead: boolean, reason: string): void {
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

