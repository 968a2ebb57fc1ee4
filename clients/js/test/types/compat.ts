// Compile-time check (npm run typecheck): the real WebSocket classes fit the client's option
// types, with strictFunctionTypes on. Not emitted, not run.

import WS from 'ws';

import { BusClient, type WebSocketConstructor } from '../../src/index.js';

const fromWs: WebSocketConstructor = WS;
const fromDom: WebSocketConstructor = WebSocket;

const client = new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', token: 't', WebSocket: fromWs, events: ['typing'] });
new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', getToken: async () => 't', WebSocket: fromDom });
client.on('typing', (t) => t.conversation_id.toUpperCase());
client.on('typing_stopped', (t) => t.reason === 'timeout');
client.on('close', (c) => c.willReconnect);
// @ts-expect-error unknown event type
client.subscribe(['nope']);
// @ts-expect-error unknown status
client.updatePresence('sleeping');
client.on('replay', (r) => r.complete && r.count >= 0 && r.stream.startsWith('room:'));
client.on('gap', (g) => g.room?.toUpperCase() ?? g.stream);
client.on('event', (e) => e.id?.length ?? e.priority === 'high');
const ids: Record<string, string> = client.lastEventIds;
void ids;
new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', token: 't', WebSocket: fromWs, resume: false });
// @ts-expect-error resume is a boolean
new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', token: 't', WebSocket: fromWs, resume: 'yes' });
// Transports and the fallback.
new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', token: 't', transports: ['sse'], sseUrl: 'http://127.0.0.1:1/ws/bus/sse' });
new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', token: 't', WebSocket: fromWs, fallback: { after: 3, windowMs: 1000 }, EventSource: null });
// @ts-expect-error unknown transport
new BusClient({ url: 'ws://127.0.0.1:1/ws/bus', token: 't', transports: ['longpoll'] });
client.on('open', (o) => o.transport === 'sse');
const current: 'websocket' | 'sse' | undefined = client.transport;
void current;
