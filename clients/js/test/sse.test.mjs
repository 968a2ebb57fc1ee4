// The SSE transport (GET /ws/bus/sse + POST /ws/bus/send) against the real server: the same
// session as a WebSocket (subscriptions, notifications, presence and typing with a WebSocket
// peer), client messages batched into POSTs in order, and resume after a cut stream with every
// event once, in order (the client's own `since`).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { deriveSseUrls } from '../dist/index.js';
import { APP, makeClient, mintToken, notify, record, serverForSuite, signedPost, tcpProxy, waitFor, waitUntil } from './helpers.mjs';

const T = { timeout: 30_000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A fetch that records every POST body (parsed) and the stream requests. */
function fetchSpy() {
  const posts = [];
  const streams = [];
  const spy = (url, init = {}) => {
    if (init.method === 'POST') posts.push({ url, body: JSON.parse(init.body) });
    else streams.push({ url, headers: init.headers });
    return fetch(url, init);
  };
  return { fetch: spy, posts, streams };
}

test('SSE URLs are derived from the WebSocket URL', () => {
  assert.deepEqual(deriveSseUrls('ws://h:1/ws/bus'), { streamUrl: 'http://h:1/ws/bus/sse', sendUrl: 'http://h:1/ws/bus/send' });
  assert.deepEqual(deriveSseUrls('wss://h/ws/bus/?x=1'), { streamUrl: 'https://h/ws/bus/sse', sendUrl: 'https://h/ws/bus/send' });
});

describe('the SSE transport', () => {
  let server;
  serverForSuite((s) => (server = s));

  test('transports [sse]: welcome, subscribe, a notification, batched POSTs', T, async () => {
    const spy = fetchSpy();
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: 'sse-alice', channels: ['chat-*'] }),
      transports: ['sse'],
      fetch: spy.fetch,
      events: ['notification'],
      rooms: ['chat-sse'],
    });
    const log = record(client, ['open', 'welcome']);
    const subscribed = waitFor(client, 'subscribed');
    const welcome = await client.connect();
    assert.equal(client.transport, 'sse');
    assert.equal(log[0].type, 'open');
    assert.equal(log[0].transport, 'sse');
    assert.equal(welcome.user, 'sse-alice');
    assert.equal(spy.streams.length, 1);
    assert.match(spy.streams[0].url, /\/ws\/bus\/sse$/, 'the token is not in the URL');
    assert.match(spy.streams[0].headers.authorization, /^Bearer /);
    const s = await subscribed;
    assert.deepEqual([s.events, s.rooms], [['notification'], ['chat-sse']]);

    const n = waitFor(client, 'notification');
    await notify(server, 'sse-alice', 'over sse');
    assert.equal((await n).message, 'over sse');
    const ev = waitFor(client, 'event');
    await signedPost(server, `/apps/${APP.id}/events`, { name: 'e', channel: 'chat-sse', data: '"x"' });
    assert.equal((await ev).room, 'chat-sse');

    // What is sent in one tick goes in one POST, in order; 25 messages: 20 + 5.
    spy.posts.length = 0;
    // (Each is answered: a pong, or an error once the server's rate limit drops it.)
    const answers = record(client, ['pong', 'error']);
    for (let i = 0; i < 25; i++) client.ping();
    await waitUntil(() => answers.length === 25, '25 answers', 5000);
    assert.equal(answers[0].type, 'pong');
    assert.deepEqual(
      spy.posts.map((p) => (Array.isArray(p.body) ? p.body.length : 1)),
      [20, 5],
      'one POST of 20, then one of the rest',
    );
    assert.ok(spy.posts.every((p) => p.url.includes(`session=${encodeURIComponent(welcome.session_id)}`)));

    // The client closes: the stream ends, and the server forgets the session (its POSTs 404).
    client.close();
    assert.equal(client.state, 'closed');
    let status;
    const token = await mintToken(server, { user_id: 'sse-alice' });
    for (let i = 0; i < 50; i++) {
      const res = await fetch(`${server.httpUrl}/ws/bus/send?session=${welcome.session_id}&token=${token}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"type":"ping"}',
      });
      status = res.status;
      if (status === 404) break;
      await sleep(20);
    }
    assert.equal(status, 404, 'the closed session is gone on the server');
  });

  test('presence and typing between an SSE client and a WebSocket client', T, async () => {
    const alice = makeClient(server, {
      token: await mintToken(server, { user_id: 'mix-alice', watchlist: ['mix-bob'] }),
      transports: ['sse'],
      events: ['presence', 'typing'],
    });
    const bob = makeClient(server, {
      token: await mintToken(server, { user_id: 'mix-bob', watchlist: ['mix-alice'] }),
      events: ['presence', 'typing'],
    });
    await alice.connect();
    await waitFor(alice, 'subscribed');
    assert.equal(alice.transport, 'sse');
    const online = waitFor(alice, 'presence', (p) => p.user === 'mix-bob' && p.status === 'online');
    await bob.connect();
    assert.equal(bob.transport, 'websocket');
    await online;

    // SSE → WebSocket: presence and typing.
    const busy = waitFor(bob, 'presence', (p) => p.user === 'mix-alice' && p.status === 'busy');
    alice.updatePresence('busy', 'on sse');
    assert.equal((await busy).activity, 'on sse');
    const typingAtBob = waitFor(bob, 'typing');
    assert.equal(alice.sendTyping('mix-bob', 'conv-mix'), true);
    const t1 = await typingAtBob;
    assert.deepEqual([t1.user, t1.conversation_id], ['mix-alice', 'conv-mix']);

    // WebSocket → SSE.
    const typingAtAlice = waitFor(alice, 'typing');
    bob.sendTyping('mix-alice', 'conv-mix');
    const t2 = await typingAtAlice;
    assert.equal(t2.user, 'mix-bob');
    assert.deepEqual(alice.typingIn('conv-mix'), ['mix-bob']);

    // Closing the SSE client makes it offline for bob.
    const offline = waitFor(bob, 'presence', (p) => p.user === 'mix-alice' && p.status === 'offline', 10_000);
    alice.close();
    await offline;
  });

  test('a cut SSE stream: reconnect and resume, every event once, in order', T, async () => {
    const user = 'sse-res';
    const room = 'chat-sseres';
    const proxy = await tcpProxy(server.port);
    try {
      const client = makeClient(server, {
        token: await mintToken(server, { user_id: user, channels: ['chat-*'] }),
        transports: ['sse'],
        sseUrl: proxy.url('/ws/bus/sse'),
        events: ['notification'],
        rooms: [room],
        pingIntervalMs: 0,
        reconnect: { initialDelayMs: 300, maxDelayMs: 300, jitter: false },
      });
      const roomEvents = [];
      const userEvents = [];
      client.on('event', (e) => roomEvents.push(e.data));
      client.on('notification', (n) => userEvents.push(n.message));
      const log = record(client, ['welcome', 'close', 'replay']);
      const subscribed = waitFor(client, 'subscribed');
      await client.connect();
      await subscribed;
      const publish = (i) =>
        Promise.all([
          signedPost(server, `/apps/${APP.id}/events`, { name: 'n', channel: room, data: String(i) }),
          notify(server, user, String(i)),
        ]);
      for (let i = 1; i <= 3; i++) await publish(i);
      await waitUntil(() => roomEvents.length === 3 && userEvents.length === 3, 'events 1..3 live');

      const closed = waitFor(client, 'close', () => true, 5000);
      const welcomed = waitFor(client, 'welcome', () => true, 10_000);
      proxy.cutAll();
      const c = await closed;
      assert.equal(c.code, 1006, 'a cut stream is an abnormal close');
      assert.equal(c.willReconnect, true);
      const LAST = 40;
      const publisher = (async () => {
        for (let i = 4; i <= LAST; i++) {
          await publish(i);
          await sleep(10);
        }
      })();
      await welcomed;
      await publisher;
      const all = Array.from({ length: LAST }, (_, k) => String(k + 1));
      await waitUntil(() => roomEvents.length >= LAST && userEvents.length >= LAST, `events up to ${LAST}`, 10_000);
      await sleep(200); // duplicates, if any, would arrive now
      assert.deepEqual(roomEvents, all, 'room events: each once, in order');
      assert.deepEqual(userEvents, all, 'notifications: each once, in order');
      assert.equal(log.filter((e) => e.type === 'welcome').length, 2);
      assert.ok(log.some((e) => e.type === 'replay'), 'the reconnect resumed with a replay');
      assert.equal(client.transport, 'sse');
    } finally {
      await proxy.close();
    }
  });
});
