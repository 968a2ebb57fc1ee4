// BusClient against the real switchboard binary: welcome, subscriptions, notifications, room
// events, presence, typing, ping, token expiry, terminal close codes.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import WebSocket from 'ws';

import { BusClient } from '../dist/index.js';
import { APP, makeClient, mintToken, record, serverForSuite, signedPost, waitFor } from './helpers.mjs';

const T = { timeout: 20_000 };

describe('BusClient on a live server', () => {
  let server;
  serverForSuite((s) => (server = s));

  test('connects and is welcomed', T, async () => {
    const token = await mintToken(server, { user_id: 'alice' });
    const client = makeClient(server, { token });
    const opened = waitFor(client, 'open');
    assert.equal(client.state, 'closed');
    const welcome = await client.connect();
    await opened;
    assert.equal(welcome.type, 'welcome');
    assert.equal(welcome.user, 'alice');
    assert.equal(typeof welcome.session_id, 'string');
    assert.ok(welcome.timestamp > 1_700_000_000);
    assert.equal(client.state, 'open');
    assert.deepEqual(client.session, welcome);
    assert.equal(await client.connect(), welcome, 'connect() while open answers the same welcome');

    const closed = waitFor(client, 'close');
    client.close();
    const ev = await closed;
    assert.equal(ev.code, 1000);
    assert.equal(ev.willReconnect, false);
    assert.equal(client.state, 'closed');
  });

  test('constructor events are subscribed on connect; notifications arrive', T, async () => {
    const token = await mintToken(server, { user_id: 'nina' });
    const client = makeClient(server, { token, events: ['notification'] });
    const subscribed = waitFor(client, 'subscribed');
    await client.connect();
    assert.deepEqual((await subscribed).events, ['notification']);

    const got = waitFor(client, 'notification');
    const answer = await signedPost(server, `/apps/${APP.id}/bus/notifications`, {
      to: ['nina'],
      notification_type: 'connection_request',
      from: 'charlie',
      message: 'Charlie wants to connect',
      action_url: '/connections/pending',
    });
    assert.deepEqual(answer, { recipients: ['nina'] });
    const n = await got;
    assert.equal(n.type, 'notification');
    assert.equal(n.notification_type, 'connection_request');
    assert.equal(n.from, 'charlie');
    assert.equal(n.message, 'Charlie wants to connect');
    assert.equal(n.action_url, '/connections/pending');
  });

  test('subscribe() and unsubscribe() at run time; the server answers the full set', T, async () => {
    const token = await mintToken(server, { user_id: 'sam', channels: ['chat-*'] });
    const client = makeClient(server, { token });
    await client.connect();

    let s = waitFor(client, 'subscribed');
    client.subscribe(['notification', 'message'], ['chat-1']);
    const first = await s;
    assert.deepEqual([first.events, first.rooms], [['notification', 'message'], ['chat-1']]);

    // A room event triggered through the Pusher HTTP API reaches the bus room.
    const ev = waitFor(client, 'event');
    await signedPost(server, `/apps/${APP.id}/events`, { name: 'new-message', channel: 'chat-1', data: '{"text":"hi"}' });
    const e = await ev;
    assert.equal(e.room, 'chat-1');
    assert.equal(e.event, 'new-message');
    assert.equal(e.data, '{"text":"hi"}');

    // A room outside the token's `channels`: an error, the connection stays.
    const err = waitFor(client, 'error');
    s = waitFor(client, 'subscribed');
    client.subscribe([], ['admin']);
    assert.equal((await err).code, 'E-WS-PERMISSION');
    assert.deepEqual((await s).rooms, ['chat-1']);

    s = waitFor(client, 'subscribed');
    client.unsubscribe(['notification'], ['chat-1']);
    const after = await s;
    assert.deepEqual(after.events, ['message']);
    assert.deepEqual(after.rooms, []);
    assert.equal(client.state, 'open');

    assert.throws(() => client.subscribe(['nope']), TypeError);
  });

  test('presence between two users (token watchlist)', T, async () => {
    const aliceToken = await mintToken(server, { user_id: 'p-alice', watchlist: ['p-bob'] });
    const bobToken = await mintToken(server, { user_id: 'p-bob' });
    const alice = makeClient(server, { token: aliceToken, events: ['presence'] });
    const subscribed = waitFor(alice, 'subscribed');
    await alice.connect();
    await subscribed;

    const online = waitFor(alice, 'presence', (p) => p.user === 'p-bob' && p.status === 'online');
    const bob = makeClient(server, { token: bobToken });
    await bob.connect();
    await online;

    const busy = waitFor(alice, 'presence', (p) => p.user === 'p-bob' && p.status === 'busy');
    bob.updatePresence('busy', 'in a call');
    assert.equal((await busy).activity, 'in a call');

    const offline = waitFor(alice, 'presence', (p) => p.user === 'p-bob' && p.status === 'offline');
    bob.close();
    await offline;

    assert.throws(() => bob.updatePresence('sleeping'), TypeError);
  });

  test('typing is delivered and auto-cleared without a repeat', T, async () => {
    const alice = makeClient(server, { token: await mintToken(server, { user_id: 't-alice' }) });
    const bob = makeClient(server, {
      token: await mintToken(server, { user_id: 't-bob' }),
      events: ['typing', 'message'],
      typingTimeoutMs: 600,
    });
    const subscribed = waitFor(bob, 'subscribed');
    await Promise.all([alice.connect(), bob.connect()]);
    await subscribed;

    const typing = waitFor(bob, 'typing');
    const started = Date.now();
    assert.equal(alice.sendTyping('t-bob', 'conv_1'), true);
    const t = await typing;
    assert.equal(t.user, 't-alice');
    assert.equal(t.conversation_id, 'conv_1');
    assert.ok(bob.isTyping('t-alice', 'conv_1'));
    assert.deepEqual(bob.typingIn('conv_1'), ['t-alice']);

    const stopped = await waitFor(bob, 'typing_stopped', () => true, 3000);
    assert.deepEqual(stopped, { type: 'typing_stopped', user: 't-alice', conversation_id: 'conv_1', reason: 'timeout' });
    assert.ok(Date.now() - started >= 600, 'not cleared before the timeout');
    assert.equal(bob.isTyping('t-alice', 'conv_1'), false);

    // A message from the typist in that conversation ends the indicator at once. (A new
    // conversation: the server drops repeats within a second per recipient and conversation.)
    const typing2 = waitFor(bob, 'typing');
    alice.sendTyping('t-bob', 'conv_2');
    await typing2;
    const stopped2 = waitFor(bob, 'typing_stopped');
    const message = waitFor(bob, 'message');
    await signedPost(server, `/apps/${APP.id}/bus/messages`, {
      message_id: 'm1',
      sender: 't-alice',
      participants: ['t-bob'],
      content: 'Hey, are you available?',
      conversation_id: 'conv_2',
    });
    assert.equal((await message).preview, 'Hey, are you available?');
    assert.equal((await stopped2).reason, 'message');
  });

  test('typing uses the protocol’s 5 s by default (bounded wait)', { timeout: 20_000 }, async () => {
    const alice = makeClient(server, { token: await mintToken(server, { user_id: 'd-alice' }) });
    const bob = makeClient(server, { token: await mintToken(server, { user_id: 'd-bob' }), events: ['typing'] });
    const subscribed = waitFor(bob, 'subscribed');
    await Promise.all([alice.connect(), bob.connect()]);
    await subscribed;
    const typing = waitFor(bob, 'typing');
    alice.sendTyping('d-bob', 'conv_d');
    await typing;
    const t0 = Date.now();
    await waitFor(bob, 'typing_stopped', () => true, 8000);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 4900 && elapsed < 7000, `cleared after ${elapsed} ms`);
  });

  test('sendTyping while disconnected is dropped and returns false', T, async () => {
    const client = makeClient(server, { token: await mintToken(server, { user_id: 'x' }) });
    assert.equal(client.sendTyping('bob', 'c'), false);
    assert.equal(client.ping(), false);
  });

  test('pings every pingIntervalMs and gets pongs', T, async () => {
    const client = makeClient(server, { token: await mintToken(server, { user_id: 'pinger' }), pingIntervalMs: 150 });
    const pongs = record(client, ['pong']);
    await client.connect();
    await waitFor(client, 'pong');
    await waitFor(client, 'pong');
    assert.ok(pongs.length >= 2);
    assert.equal(pongs[0].type, 'pong');
  });

  test('token expiry (close 4001): getToken is called and the client reconnects', T, async () => {
    let calls = 0;
    const getToken = async () => {
      calls++;
      return mintToken(server, { user_id: 'exp-user', ttl: calls === 1 ? 2 : 3600 });
    };
    const client = makeClient(server, {
      getToken,
      events: ['notification'],
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    const log = record(client, ['welcome', 'close', 'reconnecting', 'error']);
    await client.connect();
    assert.equal(calls, 1);

    const closed = await waitFor(client, 'close', () => true, 6000);
    assert.equal(closed.code, 4001);
    assert.equal(closed.willReconnect, true);
    const welcome2 = await waitFor(client, 'welcome', () => true, 5000);
    assert.equal(welcome2.user, 'exp-user');
    assert.equal(calls, 2, 'a fresh token was fetched once');
    assert.ok(log.some((e) => e.type === 'error' && e.code === 'E-WS-AUTH'), 'the server said E-WS-AUTH');

    // The subscription is back on the new connection.
    await waitFor(client, 'subscribed', (s) => s.events.includes('notification'));
    const n = waitFor(client, 'notification');
    await signedPost(server, `/apps/${APP.id}/bus/notifications`, { to: ['exp-user'], notification_type: 'x', message: 'after' });
    assert.equal((await n).message, 'after');
  });

  test('a failing or hanging getToken is retried with backoff', T, async () => {
    let calls = 0;
    const client = makeClient(server, {
      getToken: () => {
        calls++;
        if (calls === 1) return Promise.reject(new Error('backend down'));
        if (calls === 2) return new Promise(() => {}); // never answers
        return mintToken(server, { user_id: 'flaky' });
      },
      connectTimeoutMs: 300,
      reconnect: { initialDelayMs: 50, maxDelayMs: 100 },
    });
    const errors = record(client, ['error']);
    const closes = record(client, ['close']);
    const welcome = await client.connect();
    assert.equal(welcome.user, 'flaky');
    assert.equal(calls, 3);
    assert.equal(errors[0].code, 'E-CLIENT-TOKEN');
    assert.match(errors[0].message, /backend down/);
    assert.deepEqual(closes.map((c) => [c.reason, c.willReconnect]), [['No welcome in time', true]]);
  });

  test('token expiry without getToken: no reconnect', T, async () => {
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: 'static-user', ttl: 2 }),
      reconnect: { initialDelayMs: 50 },
    });
    const errors = record(client, ['error']);
    const reconnecting = record(client, ['reconnecting']);
    const closed = waitFor(client, 'close', () => true, 6000);
    await client.connect();
    const c = await closed;
    assert.equal(c.code, 4001);
    assert.equal(c.willReconnect, false);
    assert.equal(client.state, 'closed');
    assert.deepEqual(reconnecting, []);
    assert.ok(errors.some((e) => e.code === 'E-CLIENT-TOKEN-EXPIRED'));
  });

  test('an expired static token is not presented', T, async () => {
    // exp in the past: header.payload.signature with exp = 1.
    const payload = Buffer.from(JSON.stringify({ iss: APP.key, sub: 'old', exp: 1 })).toString('base64url');
    const client = makeClient(server, { token: `eyJhbGciOiJIUzI1NiJ9.${payload}.sig` });
    const err = waitFor(client, 'error');
    await assert.rejects(client.connect(), /close 4001/);
    assert.equal((await err).code, 'E-CLIENT-TOKEN-EXPIRED');
  });

  test('terminated by the app (close 4009): no reconnect', T, async () => {
    const client = makeClient(server, {
      token: await mintToken(server, { user_id: 'term-user' }),
      reconnect: { initialDelayMs: 50 },
    });
    const reconnecting = record(client, ['reconnecting']);
    await client.connect();
    const closed = waitFor(client, 'close');
    await signedPost(server, `/apps/${APP.id}/users/term-user/terminate_connections`, {});
    const c = await closed;
    assert.equal(c.code, 4009);
    assert.equal(c.willReconnect, false);
    assert.equal(client.state, 'closed');
    assert.deepEqual(reconnecting, []);
  });

  test('getToken is required without token, and a WebSocket implementation', () => {
    assert.throws(() => new BusClient({ url: server.wsUrl, WebSocket }), /token/);
    const saved = globalThis.WebSocket;
    try {
      delete globalThis.WebSocket;
      assert.throws(() => new BusClient({ url: server.wsUrl, token: 'x' }), /WebSocket/);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });
});

describe('BusClient on a server with small limits', () => {
  let server;
  serverForSuite((s) => (server = s), {
    // Idle after 2 s; presence throttled to 200 ms, so that "online again" is announced well
    // before the user goes idle again (a change undone inside the throttle window is, by
    // the protocol, never announced).
    env: {
      SWITCHBOARD_BUS_MAX_CONNECTIONS_PER_USER: '1',
      SWITCHBOARD_BUS_IDLE_TIMEOUT: '2',
      SWITCHBOARD_BUS_PRESENCE_THROTTLE_MS: '200',
    },
  });

  test('too many connections for the user (close 4003): no reconnect', T, async () => {
    const token = await mintToken(server, { user_id: 'limited' });
    const first = makeClient(server, { token });
    await first.connect();
    const second = makeClient(server, { token, reconnect: { initialDelayMs: 50 } });
    const errors = record(second, ['error']);
    const reconnecting = record(second, ['reconnecting']);
    const closed = waitFor(second, 'close');
    await assert.rejects(second.connect(), /close 4003/);
    const c = await closed;
    assert.equal(c.code, 4003);
    assert.equal(c.willReconnect, false);
    assert.ok(errors.some((e) => e.code === 'E-WS-PERMISSION'));
    assert.deepEqual(reconnecting, []);
    assert.equal(first.state, 'open');
  });

  test('an idle user shows as away to watchers, online again when active', T, async () => {
    const watcher = makeClient(server, {
      token: await mintToken(server, { user_id: 'i-watcher', watchlist: ['i-user'] }),
      events: ['presence'],
    });
    const subscribed = waitFor(watcher, 'subscribed');
    await watcher.connect();
    await subscribed;
    const user = makeClient(server, { token: await mintToken(server, { user_id: 'i-user' }), pingIntervalMs: 200 });
    const away = waitFor(watcher, 'presence', (p) => p.user === 'i-user' && p.status === 'away', 8000);
    await user.connect();
    await away; // pings do not count as activity
    const back = waitFor(watcher, 'presence', (p) => p.user === 'i-user' && p.status === 'online', 8000);
    user.updatePresence('online');
    await back;
  });
});
