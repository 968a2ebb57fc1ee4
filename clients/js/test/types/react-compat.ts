// Compile-time check of the React hook's types (npm run typecheck). Not emitted, not run.

import { useEffect } from 'react';

import { useBus } from '../../src/react.js';

export function useInbox(token: string): string {
  const bus = useBus({ url: 'ws://127.0.0.1:1/ws/bus', token, events: ['notification'] });
  useEffect(() => bus.subscribe('notification', (n) => void n.message.toUpperCase()), [bus.subscribe]);
  useEffect(() => bus.subscribe(['event', 'message'], (e) => void e.type), [bus.subscribe]);
  // @ts-expect-error not an event of the client
  bus.subscribe('nope', () => {});
  bus.startTyping('bob', 'conv');
  return `${bus.state} ${bus.presenceOf('bob')?.status ?? ''} ${bus.typingUsers('conv').join(',')}`;
}
