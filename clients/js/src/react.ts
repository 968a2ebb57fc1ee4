/**
 * A React hook over {@link BusClient} (the `./react` entry point, so that React stays an
 * optional peer dependency of the package):
 *
 * ```tsx
 * import { useBus } from '@switchboard/bus-client/react';
 *
 * function Inbox({ token }: { token: string }) {
 *   const bus = useBus({ url: 'wss://rt.example.com/ws/bus', token, events: ['notification', 'presence', 'typing'] });
 *   const [items, setItems] = useState<string[]>([]);
 *   useEffect(() => bus.subscribe('notification', (n) => setItems((l) => [...l, n.message])), [bus.subscribe]);
 *   return <p>{bus.state} {bus.presenceOf('bob')?.status} {bus.typingUsers('conv_1').join(', ')}</p>;
 * }
 * ```
 *
 * The client is created and connected when the component mounts (in an effect, so React's
 * StrictMode double mount is harmless), and closed when it unmounts or when `url`, `sseUrl`,
 * `token` or `transports` change (a new client is made then). Other options are read when the
 * client is made; `getToken` is always the latest one passed.
 */

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';

import { BusClient } from './client.js';
import type { BusClientState } from './connection.js';
import type { BusClientEventMap, BusClientEventName } from './events.js';
import type { BusClientOptions, Transport } from './options.js';
import { EVENT_TYPES, type BusEventType, type PresenceMessage } from './protocol.js';

/** Options of {@link useBus}: those of {@link BusClient}. */
export type UseBusOptions = BusClientOptions;

/** What {@link useBus} returns; re-rendered when the state, presence or typing change. */
export interface UseBusResult {
  /** The client's state (`closed` before the effect ran and after unmount). */
  state: BusClientState;
  /** The transport in use (`websocket` or `sse`), once an attempt started. */
  transport: Transport | undefined;
  /** The client, once made (null during the first render). */
  client: BusClient | null;
  /**
   * Calls `handler` for the client events `types` (e.g. `'notification'`, `['event', 'message']`);
   * the bus event types among them are also subscribed on the server. Returns a function that
   * removes the handler (the server subscription stays). Stable: safe in effect dependencies;
   * it works before the client exists (the handler is attached once it does) and carries over
   * to a new client.
   */
  subscribe<K extends BusClientEventName>(types: K | K[], handler: (event: BusClientEventMap[K]) => void): () => void;
  /** The last `presence` seen of `user` (needs `presence` events and `user` in the token's watchlist). */
  presenceOf(user: string): PresenceMessage | undefined;
  /** Tells `recipient` this user is typing in `conversationId`; false when not connected. Call it on keystrokes. */
  startTyping(recipient: string, conversationId: string): boolean;
  /** Who is typing in `conversationId` (needs `typing` events); indicators clear themselves. */
  typingUsers(conversationId: string): string[];
}

interface Registration {
  types: BusClientEventName[];
  handler: (event: never) => void;
  /** Detaches it from the current client. */
  detach: (() => void) | undefined;
}

function attach(client: BusClient, reg: Registration): void {
  const offs = reg.types.map((t) => client.on(t, reg.handler as never));
  const events = reg.types.filter((t): t is BusEventType => (EVENT_TYPES as readonly string[]).includes(t));
  if (events.length > 0) client.subscribe(events);
  reg.detach = () => offs.forEach((off) => off());
}

/** A {@link BusClient} for the lifetime of a component. */
export function useBus(options: UseBusOptions): UseBusResult {
  const latest = useRef(options);
  latest.current = options;
  const registrations = useRef(new Set<Registration>());
  const [client, setClient] = useState<BusClient | null>(null);
  const [state, setState] = useState<BusClientState>('closed');
  const [transport, setTransport] = useState<Transport | undefined>(undefined);
  const [presence, setPresence] = useState<ReadonlyMap<string, PresenceMessage>>(() => new Map());
  // Bumped on typing changes: the tracker of the client holds who is typing.
  const [typingVersion, setTypingVersion] = useState(0);
  const clientRef = useRef<BusClient | null>(null);

  const transportsKey = options.transports?.join(',') ?? '';
  useEffect(() => {
    const o = latest.current;
    const c = new BusClient({
      ...o,
      getToken: o.getToken ? () => latest.current.getToken!() : undefined,
    });
    const sync = () => {
      setState(c.state);
      setTransport(c.transport);
    };
    const offs = [
      c.on('open', sync),
      c.on('welcome', sync),
      c.on('close', sync),
      c.on('reconnecting', sync),
      c.on('presence', (p) => setPresence((m) => new Map(m).set(p.user, p))),
      c.on('typing', () => setTypingVersion((v) => v + 1)),
      c.on('typing_stopped', () => setTypingVersion((v) => v + 1)),
    ];
    for (const reg of registrations.current) attach(c, reg);
    clientRef.current = c;
    setClient(c);
    c.connect().catch(() => {
      // reported by the close event and the state
    });
    sync();
    return () => {
      for (const reg of registrations.current) {
        reg.detach?.();
        reg.detach = undefined;
      }
      offs.forEach((off) => off());
      c.close();
      if (clientRef.current === c) clientRef.current = null;
      setClient((cur) => (cur === c ? null : cur));
      setState('closed');
      setPresence(new Map());
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [options.url, options.sseUrl, options.token, transportsKey]);

  const subscribe = useCallback(
    <K extends BusClientEventName>(types: K | K[], handler: (event: BusClientEventMap[K]) => void) => {
      const reg: Registration = {
        types: Array.isArray(types) ? [...types] : [types],
        handler: handler as (event: never) => void,
        detach: undefined,
      };
      registrations.current.add(reg);
      if (clientRef.current) attach(clientRef.current, reg);
      return () => {
        registrations.current.delete(reg);
        reg.detach?.();
        reg.detach = undefined;
      };
    },
    [],
  );

  const startTyping = useCallback(
    (recipient: string, conversationId: string) => clientRef.current?.sendTyping(recipient, conversationId) ?? false,
    [],
  );

  return useMemo<UseBusResult>(
    () => ({
      state,
      transport,
      client,
      subscribe,
      presenceOf: (user: string) => presence.get(user),
      startTyping,
      typingUsers: (conversationId: string) => (typingVersion >= 0 && client ? client.typingIn(conversationId) : []),
    }),
    [state, transport, client, subscribe, presence, startTyping, typingVersion],
  );
}
