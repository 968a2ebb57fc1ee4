// Offline delivery against the real server: a user's events queued while they had no
// connection arrive on connect (with a `replay` header, `since: null`); `high` events are
// acknowledged automatically so they are not delivered again; a stream that never delivered an
// event resumes from the head the server reported in `subscribed`.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { APP, makeClient, mintToken, notify, record, serverForSuite, signedPost, socketSpy, waitFor, waitUntil } from './helpers.mjs';

const T = { timeout: 30_000 };


describe('offline delivery', () => {
  let server;
  serverForSuite((s) => (server = s));

  test('events queued while the user was away arrive on connect, in order', T, async () => {
    const user = 'off-amy';
    for (const m of ['a', 'b', 'c']) await notify(server, user, m);
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: user }),
      events: ['notification'],
      pingIntervalMs: 0,
    });
    const log = record(client, ['replay', 'notification']);
    await client.connect();
    await waitUntil(() => log.filter((e) => e.type === 'notification').length === 3, 'three notifications');
    assert.equal(log[0].type, 'replay');
    assert.equal(log[0].since, null);
    assert.equal(log[0].count, 3);
    assert.deepEqual(
      log.slice(1).map((n) => n.message),
      ['a', 'b', 'c'],
    );
  });

  test('high priority events are acknowledged automatically and not delivered again', T, async () => {
    const user = 'off-bo';
    const token = await mintToken(server, { user_id: user });
    const first = makeClient(server, { token, events: ['notification'], pingIntervalMs: 0 });
    const subscribed = waitFor(first, 'subscribed');
    await first.connect();
    await subscribed;
    const acked = waitFor(first, 'acked');
    const got = waitFor(first, 'notification');
    await notify(server, user, 'urgent', { priority: 'high' });
    assert.equal((await got).priority, 'high');
    assert.equal((await acked).count, 1, 'the server still held it for redelivery until the ack');
    first.close();

    // A new connection: the acknowledged event is not delivered again; the next one is live.
    const second = makeClient(server, { token, events: ['notification'], pingIntervalMs: 0 });
    const seen = record(second, ['notification', 'replay']);
    const ready = waitFor(second, 'subscribed');
    await second.connect();
    await ready;
    await notify(server, user, 'marker');
    await waitUntil(() => seen.length > 0, 'the marker');
    assert.deepEqual(seen.map((e) => e.message ?? e.type), ['marker']);
  });

  test('a room that had no event yet resumes from the head it was given', T, async () => {
    const room = 'chat-heads';
    await signedPost(server, `/apps/${APP.id}/events`, { name: 'n', channel: room, data: 'old' });
    const spy = socketSpy();
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: 'off-cy', channels: ['chat-*'] }),
      WebSocket: spy.WebSocket,
      rooms: [room],
      pingIntervalMs: 0,
      reconnect: { initialDelayMs: 300, maxDelayMs: 300, jitter: false },
    });
    const events = [];
    client.on('event', (e) => events.push(e.data));
    const subscribed = waitFor(client, 'subscribed');
    await client.connect();
    const sub = await subscribed;
    const head = sub.heads?.[`room:${room}`];
    assert.ok(head, `subscribed carries the room's head: ${JSON.stringify(sub)}`);
    assert.deepEqual(client.lastEventIds, { [`room:${room}`]: head });

    // Dropped before any event arrived; one is published meanwhile: replayed from the head.
    const closed = waitFor(client, 'close');
    spy.sockets.at(-1).terminate();
    await closed;
    await signedPost(server, `/apps/${APP.id}/events`, { name: 'n', channel: room, data: 'missed' });
    await waitUntil(() => events.length === 1, 'the missed event', 10_000);
    assert.deepEqual(events, ['missed']);
    const resumed = spy.sent.filter((s) => s.msg.type === 'subscribe').at(-1);
    assert.deepEqual(resumed.msg.since, { [`room:${room}`]: head });
  });
});

describe('push registration', () => {
  let server;
  serverForSuite((s) => (server = s), {
    env: {
      SWITCHBOARD_PUSH_WEBHOOK_URL: 'http://127.0.0.1:9/push',
      SWITCHBOARD_PUSH_WEBHOOK_SECRET: 'test-secret',
    },
  });

  test('registerPush answers with the registration id; bad input is refused', T, async () => {
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: 'push-dee' }),
      pingIntervalMs: 0,
    });
    await client.connect();
    const ok = await client.registerPush('android', 'device-token-1');
    assert.equal(ok.platform, 'android');
    assert.match(ok.id, /^[0-9a-f]{32}$/);
    await assert.rejects(client.registerPush('web', 'not a subscription'));
    // The connection stays usable.
    const again = await client.registerPush('android', 'device-token-1');
    assert.notEqual(again.id, ok.id, 'registering the same device again replaces it');
    const gone = await client.unregisterPush(again.id);
    assert.deepEqual([gone.id, gone.removed], [again.id, true]);
    assert.equal((await client.unregisterPush(again.id)).removed, false);
  });
});
