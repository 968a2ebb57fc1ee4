// Unit tests of the resume bookkeeping with a scripted WebSocket (no server): what `since`
// carries, the duplicate safety net (the real server never sends duplicates, so it cannot be
// shown against it), gaps, and the bounds of the per-stream map.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { BusClient, roomStream, streamLabel, USER_STREAM } from '../dist/index.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A WebSocket whose server side is the test: `open()` welcomes, `receive()` delivers a frame. */
function scriptedSockets() {
  const sockets = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code = 1000, reason = '') {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code, reason }));
    }
    // The test's side.
    open() {
      this.readyState = 1;
      this.onopen?.({});
      this.receive({ type: 'welcome', session_id: `s${sockets.indexOf(this)}`, user: 'u', timestamp: 1 });
    }
    receive(msg) {
      this.onmessage?.({ data: JSON.stringify({ timestamp: 1, ...msg }) });
    }
    drop() {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: '' });
    }
  }
  return {
    WebSocket: ScriptedSocket,
    sockets,
    /** The next socket the client opens (it connects asynchronously). */
    async next(n) {
      for (let i = 0; i < 200 && sockets.length < n; i++) await sleep(5);
      assert.equal(sockets.length, n, `socket ${n} opened`);
      return sockets[n - 1];
    },
  };
}

function client(ws, options = {}) {
  return new BusClient({
    url: 'ws://test/ws/bus',
    token: 'not-a-jwt',
    WebSocket: ws.WebSocket,
    pingIntervalMs: 0,
    connectTimeoutMs: 0,
    reconnect: { initialDelayMs: 0, jitter: false },
    ...options,
  });
}

const ev = (room, id, data) => ({ type: 'event', room, event: 'e', data, id });
const note = (id, message) => ({ type: 'notification', notification_type: 't', message, id });
const subscribeOf = (socket) => socket.sent.find((m) => m.type === 'subscribe');

describe('resume bookkeeping (scripted socket)', () => {
  test('stream labels', () => {
    assert.equal(roomStream('chat-1'), 'room:chat-1');
    assert.equal(USER_STREAM, 'user');
    assert.equal(streamLabel(ev('chat-1', '1-1', '')), 'room:chat-1');
    assert.equal(streamLabel(note('1-1', '')), 'user');
    assert.equal(streamLabel({ type: 'message', message_id: 'm', sender: 's', preview: '' }), 'user');
    assert.equal(streamLabel({ type: 'action', action_type: 'POST' }), 'user');
    assert.equal(streamLabel({ type: 'presence', user: 'x', status: 'online' }), undefined);
  });

  test('since per stream after a reconnect; duplicates are dropped; gaps are reported', async () => {
    const ws = scriptedSockets();
    const bus = client(ws, { events: ['notification', 'presence'], rooms: ['a', 'b'] });
    const got = [];
    for (const t of ['event', 'notification', 'presence', 'replay', 'gap']) bus.on(t, (e) => got.push(e));
    bus.connect();
    const s1 = await ws.next(1);
    s1.open();
    assert.deepEqual(subscribeOf(s1), { type: 'subscribe', events: ['notification', 'presence'], rooms: ['a', 'b'] });

    s1.receive(ev('a', '7-1', 'a1'));
    s1.receive(note('7-2', 'n1'));
    s1.receive(ev('a', '7-3', 'a2'));
    s1.receive(ev('a', '7-3', 'a2 again')); // the same id: dropped
    s1.receive(ev('a', '7-1', 'a1 again')); // an older one still remembered: dropped
    s1.receive(note('7-2', 'n1 again'));
    s1.receive(ev('b', '7-3', 'b1')); // the same id in another stream is another event
    s1.receive({ type: 'presence', user: 'x', status: 'online' }); // no id: always delivered
    s1.receive(ev('a', undefined, 'a-no-id')); // no id: delivered, not a resume point
    s1.receive(ev('gone', '7-9', 'not kept')); // a room not kept: delivered, not remembered
    assert.deepEqual(
      got.map((e) => e.data ?? e.message ?? e.status),
      ['a1', 'n1', 'a2', 'b1', 'online', 'a-no-id', 'not kept'],
    );
    assert.deepEqual(bus.lastEventIds, { 'room:a': '7-3', user: '7-2', 'room:b': '7-3' });

    got.length = 0;
    s1.drop();
    const s2 = await ws.next(2);
    s2.open();
    assert.deepEqual(subscribeOf(s2), {
      type: 'subscribe',
      events: ['notification', 'presence'],
      rooms: ['a', 'b'],
      since: { 'room:a': '7-3', user: '7-2', 'room:b': '7-3' },
    });

    // The server's answer: room a complete (one event), b incomplete, user complete (nothing).
    s2.receive({ type: 'replay', stream: 'room:a', since: '7-3', count: 1, complete: true });
    s2.receive(ev('a', '7-3', 'a2 replayed')); // a server repeating `since` itself: dropped
    s2.receive(ev('a', '7-4', 'a3'));
    s2.receive({ type: 'replay', stream: 'room:b', since: '7-3', count: 1, complete: false });
    s2.receive(ev('b', '7-8', 'b5'));
    s2.receive({ type: 'replay', stream: 'user', since: '7-2', count: 0, complete: true });
    s2.receive(ev('a', '7-4', 'a3 live duplicate'));
    s2.receive(ev('a', '7-10', 'a4'));
    assert.deepEqual(
      got.map((e) => `${e.type}:${e.data ?? e.stream}`),
      ['replay:room:a', 'event:a3', 'replay:room:b', 'gap:room:b', 'event:b5', 'replay:user', 'event:a4'],
    );
    assert.deepEqual(
      got.find((e) => e.type === 'gap'),
      { type: 'gap', stream: 'room:b', room: 'b', since: '7-3', count: 1 },
    );
    assert.deepEqual(bus.lastEventIds, { 'room:a': '7-10', user: '7-2', 'room:b': '7-8' });
    bus.close();
  });

  test('a gap of the user stream has no room', async () => {
    const ws = scriptedSockets();
    const bus = client(ws, { events: ['message'] });
    const gaps = [];
    bus.on('gap', (g) => gaps.push(g));
    bus.connect();
    const s1 = await ws.next(1);
    s1.open();
    s1.receive({ type: 'replay', stream: 'user', since: '1-1', count: 0, complete: false });
    assert.deepEqual(gaps, [{ type: 'gap', stream: 'user', since: '1-1', count: 0 }]);
    bus.close();
  });

  test('the map is one entry per kept room plus one; unsubscribing forgets', async () => {
    const ws = scriptedSockets();
    const rooms = Array.from({ length: 50 }, (_, i) => `r${i}`);
    const bus = client(ws, { events: ['notification', 'message'], rooms });
    bus.connect();
    const s1 = await ws.next(1);
    s1.open();
    let seq = 0;
    for (let round = 0; round < 40; round++) {
      for (const r of rooms) s1.receive(ev(r, `1-${++seq}`, ''));
      s1.receive(note(`1-${++seq}`, ''));
    }
    assert.equal(Object.keys(bus.lastEventIds).length, 51);
    assert.equal(bus.lastEventIds['room:r0'], `1-${seq - 50}`);

    bus.unsubscribe([], rooms.slice(1));
    assert.deepEqual(Object.keys(bus.lastEventIds).sort(), ['room:r0', 'user']);
    bus.unsubscribe(['notification']);
    assert.ok('user' in bus.lastEventIds, "still subscribed to 'message', a user event");
    bus.unsubscribe(['message']);
    assert.deepEqual(Object.keys(bus.lastEventIds), ['room:r0']);

    s1.drop();
    const s2 = await ws.next(2);
    s2.open();
    assert.deepEqual(subscribeOf(s2), { type: 'subscribe', events: [], rooms: ['r0'], since: { 'room:r0': `1-${seq - 50}` } });
    bus.close();
  });

  test('resume: false sends no since, and still drops duplicates', async () => {
    const ws = scriptedSockets();
    const bus = client(ws, { rooms: ['a'], resume: false });
    const got = [];
    bus.on('event', (e) => got.push(e.data));
    bus.connect();
    const s1 = await ws.next(1);
    s1.open();
    s1.receive(ev('a', '1-1', 'x'));
    s1.receive(ev('a', '1-1', 'x again'));
    s1.drop();
    const s2 = await ws.next(2);
    s2.open();
    assert.deepEqual(subscribeOf(s2), { type: 'subscribe', events: [], rooms: ['a'] });
    assert.deepEqual(got, ['x']);
    bus.close();
  });

  test('close() keeps the resume points for a later connect()', async () => {
    const ws = scriptedSockets();
    const bus = client(ws, { rooms: ['a'] });
    bus.connect();
    const s1 = await ws.next(1);
    s1.open();
    s1.receive(ev('a', '3-5', 'x'));
    bus.close();
    bus.connect();
    const s2 = await ws.next(2);
    s2.open();
    assert.deepEqual(subscribeOf(s2).since, { 'room:a': '3-5' });
    bus.close();
  });
});
