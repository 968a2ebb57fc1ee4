// Automatic resume against the real server: after a network drop (the client's socket is
// terminated from the client's side, as a lost connection would be) the client reconnects with
// `since` per stream, the server replays what was missed, and the app's handlers see every
// event exactly once, in order. With a history of 2 events the replay is incomplete and the
// app learns it (`replay` with `complete: false`, and `gap`).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { APP, makeClient, mintToken, notify, record, serverForSuite, signedPost, socketSpy, waitFor, waitUntil } from './helpers.mjs';

const T = { timeout: 30_000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const publishRoom = (server, room, i) =>
  signedPost(server, `/apps/${APP.id}/events`, { name: 'n', channel: room, data: String(i) });
const publishUser = (server, user, i) => notify(server, user, String(i));

/** Drops the client's current socket without a closing handshake (a lost network). */
function dropConnection(spy) {
  const ws = spy.sockets.at(-1);
  assert.ok(ws, 'the client has a socket');
  ws.terminate();
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => String(from + k));

describe('resume on a server with the default history', () => {
  let server;
  serverForSuite((s) => (server = s));

  test('a network drop while events are published: every event once, in order', T, async (t) => {
    const user = 'res-alice';
    const room = 'chat-res';
    const spy = socketSpy();
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: user, channels: ['chat-*'] }),
      WebSocket: spy.WebSocket,
      events: ['notification'],
      rooms: [room],
      pingIntervalMs: 0,
      // A fixed 400 ms before the retry: events published meanwhile can only come by replay.
      reconnect: { initialDelayMs: 400, maxDelayMs: 400, jitter: false },
    });
    const roomEvents = [];
    const userEvents = [];
    client.on('event', (e) => roomEvents.push(e));
    client.on('notification', (n) => userEvents.push(n));
    const log = record(client, ['welcome', 'close', 'replay', 'gap', 'event', 'notification']);
    const subscribed = waitFor(client, 'subscribed');
    await client.connect();
    await subscribed;

    // Before the drop: 1..3 on each stream, live.
    for (let i = 1; i <= 3; i++) {
      await publishRoom(server, room, i);
      await publishUser(server, user, i);
    }
    await waitUntil(() => roomEvents.length === 3 && userEvents.length === 3, 'events 1..3 delivered');
    assert.ok(roomEvents.every((e) => typeof e.id === 'string' && e.id !== ''), 'room events carry an id');
    assert.ok(userEvents.every((n) => typeof n.id === 'string' && n.id !== ''), 'notifications carry an id');
    const resumeFrom = { [`room:${room}`]: roomEvents[2].id, user: userEvents[2].id };
    assert.deepEqual(client.lastEventIds, resumeFrom);

    // The drop, then events published continuously: while disconnected (400 ms), during the
    // reconnect and its replay, and after it.
    const closed = waitFor(client, 'close', () => true, 5000);
    const welcomed = waitFor(client, 'welcome', () => true, 10_000);
    dropConnection(spy);
    const c = await closed;
    assert.equal(c.code, 1006);
    assert.equal(c.willReconnect, true);
    const LAST = 60;
    const publisher = (async () => {
      for (let i = 4; i <= LAST; i++) {
        await Promise.all([publishRoom(server, room, i), publishUser(server, user, i)]);
        await sleep(15);
      }
    })();
    await welcomed;
    await publisher;
    await waitUntil(
      () => roomEvents.length >= LAST && userEvents.length >= LAST,
      `all ${LAST} events of each stream (room ${roomEvents.length}, user ${userEvents.length})`,
      15_000,
    );
    await sleep(300); // a duplicate would arrive now

    assert.deepEqual(roomEvents.map((e) => e.data), range(1, LAST), 'room events: each once, in order');
    assert.deepEqual(userEvents.map((n) => n.message), range(1, LAST), 'notifications: each once, in order');
    assert.equal(new Set(roomEvents.map((e) => e.id)).size, LAST);
    assert.equal(new Set(userEvents.map((n) => n.id)).size, LAST);
    assert.deepEqual(client.lastEventIds, { [`room:${room}`]: roomEvents.at(-1).id, user: userEvents.at(-1).id });

    // The second connection subscribed with one `since` per stream: the last ids seen.
    const subscribes = spy.sent.filter((s) => s.msg.type === 'subscribe');
    assert.equal(subscribes.length, 2);
    assert.equal(subscribes[0].socket, 0);
    assert.equal(subscribes[0].msg.since, undefined, 'nothing to resume on the first connection');
    assert.equal(subscribes[1].socket, 1);
    assert.deepEqual(subscribes[1].msg.since, resumeFrom);

    // One complete replay per stream, each followed by its `count` events, 4 onwards.
    const replays = log.filter((e) => e.type === 'replay');
    assert.deepEqual(replays.map((r) => r.stream).sort(), [`room:${room}`, 'user']);
    assert.equal(log.filter((e) => e.type === 'gap').length, 0);
    t.diagnostic(`replayed: ${replays.map((r) => `${r.stream} ${r.count}`).join(', ')} of ${LAST - 3} after the drop`);
    for (const r of replays) {
      assert.equal(r.complete, true);
      assert.equal(r.since, resumeFrom[r.stream]);
      assert.ok(r.count >= 1, `${r.stream}: events published while disconnected were replayed (${r.count})`);
      assert.ok(r.count < LAST - 3, `${r.stream}: later events came live (${r.count} replayed)`);
      const at = log.indexOf(r);
      const kind = r.stream === 'user' ? 'notification' : 'event';
      const following = log.slice(at + 1).filter((e) => e.type === kind).slice(0, r.count);
      assert.deepEqual(
        following.map((e) => e.data ?? e.message),
        range(4, 3 + r.count),
        `${r.stream}: the replayed events follow the header`,
      );
    }
    assert.equal(log.filter((e) => e.type === 'welcome').length, 2);
  });

  test('resume: false subscribes without since: events of the outage are not replayed', T, async () => {
    const user = 'nores-bob';
    const room = 'chat-nores';
    const spy = socketSpy();
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: user, channels: ['chat-*'] }),
      WebSocket: spy.WebSocket,
      rooms: [room],
      pingIntervalMs: 0,
      resume: false,
      reconnect: { initialDelayMs: 300, maxDelayMs: 300, jitter: false },
    });
    const events = [];
    client.on('event', (e) => events.push(e.data));
    const replays = record(client, ['replay']);
    const subscribed = waitFor(client, 'subscribed');
    await client.connect();
    await subscribed;
    await publishRoom(server, room, 1);
    await waitUntil(() => events.length === 1, 'event 1');

    const closed = waitFor(client, 'close');
    const resubscribed = waitFor(client, 'subscribed', () => true, 10_000);
    dropConnection(spy);
    await closed;
    await publishRoom(server, room, 2); // while disconnected: lost without resume
    await resubscribed;
    await publishRoom(server, room, 3);
    await waitUntil(() => events.length === 2, 'event 3');
    await sleep(200);
    assert.deepEqual(events, ['1', '3']);
    assert.deepEqual(replays, []);
    const subscribes = spy.sent.filter((s) => s.msg.type === 'subscribe');
    assert.equal(subscribes.length, 2);
    assert.ok(subscribes.every((s) => s.msg.since === undefined));
  });
});

describe('resume on a server with a history of 2 events', () => {
  let server;
  serverForSuite((s) => (server = s), { env: { SWITCHBOARD_HISTORY_SIZE: '2' } });

  test('history too short: replay complete:false and a gap per stream', T, async () => {
    const user = 'gap-carol';
    const room = 'chat-gap';
    const spy = socketSpy();
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: user, channels: ['chat-*'] }),
      WebSocket: spy.WebSocket,
      events: ['notification'],
      rooms: [room],
      pingIntervalMs: 0,
      reconnect: { initialDelayMs: 500, maxDelayMs: 500, jitter: false },
    });
    const log = record(client, ['replay', 'gap', 'event', 'notification', 'welcome']);
    const subscribed = waitFor(client, 'subscribed');
    await client.connect();
    await subscribed;
    await publishRoom(server, room, 1);
    await publishUser(server, user, 1);
    await waitUntil(() => log.filter((e) => e.type === 'event' || e.type === 'notification').length === 2, 'event 1 of each stream');
    const resumeFrom = { ...client.lastEventIds };
    assert.deepEqual(Object.keys(resumeFrom).sort(), [`room:${room}`, 'user']);

    const closed = waitFor(client, 'close');
    const gaps = new Promise((resolve, reject) => {
      const got = [];
      const timer = setTimeout(() => reject(new Error(`2 gaps expected, got ${got.length}`)), 10_000);
      client.on('gap', (g) => {
        got.push(g);
        if (got.length === 2) {
          clearTimeout(timer);
          resolve(got);
        }
      });
    });
    dropConnection(spy);
    await closed;
    // 5 events per stream while disconnected: only the last 2 are still in history. The user's
    // own events were also kept in the offline queue (she had no connection), so all 5 come
    // back; the server still reports the gap (it cannot prove the queue covered all of it).
    for (let i = 2; i <= 6; i++) {
      await publishRoom(server, room, i);
      await publishUser(server, user, i);
    }
    assert.equal(log.filter((e) => e.type === 'welcome').length, 1, 'published while disconnected');
    const [g1, g2] = (await gaps).sort((a, b) => a.stream.localeCompare(b.stream));
    assert.deepEqual(g1, { type: 'gap', stream: `room:${room}`, room, since: resumeFrom[`room:${room}`], count: 2 });
    assert.deepEqual(g2, { type: 'gap', stream: 'user', since: resumeFrom.user, count: 5 });
    await waitUntil(() => log.filter((e) => e.type === 'event').length === 3 && log.filter((e) => e.type === 'notification').length === 6, 'the replayed tail');
    await sleep(200);

    const replays = log.filter((e) => e.type === 'replay');
    assert.equal(replays.length, 2);
    for (const r of replays) {
      assert.equal(r.complete, false);
      assert.equal(r.count, r.stream === 'user' ? 5 : 2);
      assert.equal(r.since, resumeFrom[r.stream]);
      // replay, then gap, then the events history still had.
      const at = log.indexOf(r);
      assert.equal(log[at + 1].type, 'gap');
      assert.equal(log[at + 1].stream, r.stream);
    }
    assert.deepEqual(log.filter((e) => e.type === 'event').map((e) => e.data), ['1', '5', '6']);
    assert.deepEqual(log.filter((e) => e.type === 'notification').map((e) => e.message), ['1', '2', '3', '4', '5', '6']);
    assert.deepEqual(spy.sent.filter((s) => s.msg.type === 'subscribe').at(-1).msg.since, resumeFrom);
  });
});
