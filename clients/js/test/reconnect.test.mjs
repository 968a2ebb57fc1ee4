// Reconnects through real server restarts (SIGTERM → close 4200, then connection refused
// until the binary is started again on the same port): backoff, re-subscription of events
// and rooms, re-declared presence, and the backoff reset after a welcome.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { APP, closeAll, makeClient, mintToken, record, signedPost, startServer, waitFor } from './helpers.mjs';

let server;
after(async () => {
  closeAll();
  await server?.stop();
});

test('reconnects after the server restarts and subscribes again', { timeout: 60_000 }, async () => {
  server = await startServer();
  const port = server.port;
  const reconnect = { initialDelayMs: 100, maxDelayMs: 800 };

  // alice: getToken (it fails while the server is down: the client retries);
  // bob: a static token (valid across restarts: same app secret).
  let tokenCalls = 0;
  const alice = makeClient(server, {
    getToken: () => {
      tokenCalls++;
      return mintToken(server, { user_id: 'r-alice', channels: ['chat-*'] });
    },
    events: ['notification'],
    rooms: ['chat-1'],
    reconnect,
  });
  const bob = makeClient(server, {
    token: await mintToken(server, { user_id: 'r-bob', watchlist: ['r-alice'] }),
    events: ['presence'],
    reconnect,
  });
  const aliceLog = record(alice, ['welcome', 'close', 'reconnecting']);
  const subscribed = waitFor(alice, 'subscribed');
  await Promise.all([alice.connect(), bob.connect()]);
  const first = await subscribed;
  assert.deepEqual([first.events, first.rooms], [['notification'], ['chat-1']]);
  alice.updatePresence('busy', 'deep work');
  await waitFor(bob, 'presence', (p) => p.user === 'r-alice' && p.status === 'busy');

  // --- restart 1
  const closed = waitFor(alice, 'close', () => true, 10_000);
  const welcomed = waitFor(alice, 'welcome', () => true, 30_000);
  const resubscribed = waitFor(alice, 'subscribed', () => true, 30_000);
  const bobBack = waitFor(bob, 'welcome', () => true, 30_000);
  const bobSeesBusy = waitFor(bob, 'presence', (p) => p.user === 'r-alice' && p.status === 'busy', 30_000);
  await server.stop();
  const c = await closed;
  assert.equal(c.code, 4200, 'the server closes with 4200 when it shuts down');
  assert.equal(c.willReconnect, true);
  assert.equal(alice.state, 'reconnecting');
  assert.equal(alice.sendTyping('r-bob', 'c'), false, 'typing is dropped while disconnected');
  // Wait until at least one attempt has failed against the stopped server.
  await waitFor(alice, 'reconnecting', (r) => r.attempt >= 2, 10_000);

  server = await startServer({ port });
  await welcomed;
  await bobBack;
  const again = await resubscribed;
  assert.deepEqual([again.events, again.rooms], [['notification'], ['chat-1']]);
  await bobSeesBusy; // presence re-declared after the reconnect

  const attempts = aliceLog.filter((e) => e.type === 'reconnecting');
  assert.ok(attempts.length >= 2);
  attempts.forEach((r, i) => {
    assert.equal(r.attempt, i + 1, 'attempts are numbered from 1');
    assert.ok(r.delayMs >= 0 && r.delayMs < Math.min(800, 100 * 2 ** i), `delay ${r.delayMs} of attempt ${r.attempt}`);
  });
  assert.ok(tokenCalls >= 2, 'a failed attempt fetched a fresh token');

  // Both subscriptions work on the new server.
  const n = waitFor(alice, 'notification');
  await signedPost(server, `/apps/${APP.id}/bus/notifications`, { to: ['r-alice'], notification_type: 't', message: 'back' });
  assert.equal((await n).message, 'back');
  const ev = waitFor(alice, 'event');
  await signedPost(server, `/apps/${APP.id}/events`, { name: 'e', channel: 'chat-1', data: '"x"' });
  assert.equal((await ev).room, 'chat-1');

  // --- restart 2: the welcome reset the backoff, so numbering starts at 1 again.
  const firstRetry = waitFor(alice, 'reconnecting', () => true, 10_000);
  const welcomed2 = waitFor(alice, 'welcome', () => true, 30_000);
  await server.stop();
  assert.equal((await firstRetry).attempt, 1);
  server = await startServer({ port });
  await welcomed2;
  assert.equal(alice.state, 'open');
});

test('a silent server is detected by the ping and replaced after it answers again', { timeout: 60_000 }, async () => {
  server ??= await startServer();
  const client = makeClient(server, {
    token: await mintToken(server, { user_id: 'silent' }),
    events: ['notification'],
    pingIntervalMs: 200,
    pongTimeoutMs: 300,
    connectTimeoutMs: 500,
    reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
  });
  const log = record(client, ['close', 'reconnecting', 'welcome']);
  await client.connect();
  const lost = waitFor(client, 'close', () => true, 5000);
  server.pause(); // SIGSTOP: TCP stays up, nothing answers
  try {
    const c = await lost;
    assert.equal(c.code, 1006);
    assert.equal(c.reason, 'No pong in time');
    assert.equal(c.willReconnect, true);
    // Attempts against the stopped process time out waiting for the welcome.
    await waitFor(client, 'close', (e) => e.reason === 'No welcome in time', 5000);
  } finally {
    server.resume();
  }
  await waitFor(client, 'welcome', () => true, 10_000);
  await waitFor(client, 'subscribed', () => true, 5000);
  assert.equal(log.filter((e) => e.type === 'welcome').length, 2);
  const n = waitFor(client, 'notification');
  await signedPost(server, `/apps/${APP.id}/bus/notifications`, { to: ['silent'], notification_type: 't', message: 'alive' });
  assert.equal((await n).message, 'alive');
});
