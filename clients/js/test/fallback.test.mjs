// The transport fallback against the real server: WebSocket first; after two WebSocket
// failures in a row (refused, or cut within `fallback.windowMs` of the welcome) the client uses
// SSE + POST by itself; after an SSE session that lasted `fallback.retryAfterMs` drops, the next
// attempt is a WebSocket again. The "blocked" WebSocket is a port where nothing listens, or a
// local TCP proxy that destroys every connection it accepts.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { freePort, makeClient, mintToken, notify, record, serverForSuite, tcpProxy, waitFor } from './helpers.mjs';

const T = { timeout: 30_000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fast = { initialDelayMs: 50, maxDelayMs: 200 };

describe('transport fallback', () => {
  let server;
  serverForSuite((s) => (server = s));

  test('nothing listens for the WebSocket: SSE after two failures, events arrive', T, async () => {
    const deadPort = await freePort();
    const client = makeClient(server, {
      url: `ws://127.0.0.1:${deadPort}/ws/bus`,
      sseUrl: `${server.httpUrl}/ws/bus/sse`,
      token: await mintToken(server, { user_id: 'fb-refused' }),
      events: ['notification'],
      reconnect: fast,
    });
    const log = record(client, ['open', 'close', 'welcome']);
    const subscribed = waitFor(client, 'subscribed', () => true, 10_000);
    await client.connect();
    assert.equal(client.transport, 'sse');
    const closes = log.filter((e) => e.type === 'close');
    assert.equal(closes.length, 2, 'exactly two WebSocket failures before SSE');
    assert.ok(closes.every((c) => c.code === 1006 && c.willReconnect));
    assert.deepEqual(
      log.filter((e) => e.type === 'open').map((e) => e.transport),
      ['sse'],
      'only the SSE stream opened',
    );
    await subscribed;
    const n = waitFor(client, 'notification');
    await notify(server, 'fb-refused', 'via fallback');
    assert.equal((await n).message, 'via fallback');
  });

  test('a WebSocket reset by the network: SSE, then back to WebSocket once it works', T, async () => {
    const ws = await tcpProxy(server.port, { mode: 'reset' });
    const sse = await tcpProxy(server.port);
    try {
      const client = makeClient(server, {
        url: ws.url('/ws/bus', 'ws'),
        sseUrl: sse.url('/ws/bus/sse'),
        token: await mintToken(server, { user_id: 'fb-reset' }),
        events: ['notification'],
        pingIntervalMs: 0,
        reconnect: fast,
        fallback: { retryAfterMs: 500 },
      });
      const transports = [];
      client.on('welcome', () => transports.push(client.transport));
      await client.connect();
      await waitFor(client, 'subscribed');
      assert.equal(client.transport, 'sse');
      assert.equal(ws.accepted, 2, 'two WebSocket attempts were made (and destroyed)');
      const n1 = waitFor(client, 'notification');
      await notify(server, 'fb-reset', 'one');
      assert.equal((await n1).message, 'one');

      // An SSE session cut before retryAfterMs: the next attempt is SSE again.
      ws.mode = 'pipe';
      let welcomed = waitFor(client, 'welcome', () => true, 10_000);
      sse.cutAll();
      await welcomed;
      assert.equal(client.transport, 'sse', 'a short SSE session does not bring WebSocket back');
      assert.equal(ws.accepted, 2, 'no WebSocket attempt');

      // An SSE session that lasted retryAfterMs and dropped: the next attempt is a WebSocket.
      await sleep(600); // the session's age, not an assertion
      welcomed = waitFor(client, 'welcome', () => true, 10_000);
      sse.cutAll();
      await welcomed;
      assert.equal(client.transport, 'websocket', 'back to WebSocket');
      assert.equal(ws.accepted, 3);
      assert.deepEqual(transports, ['sse', 'sse', 'websocket']);
      await waitFor(client, 'subscribed');
      const n2 = waitFor(client, 'notification');
      await notify(server, 'fb-reset', 'two');
      assert.equal((await n2).message, 'two');
    } finally {
      await Promise.all([ws.close(), sse.close()]);
    }
  });

  test('WebSocket cut within the window counts, after it does not', T, async () => {
    const ws = await tcpProxy(server.port);
    try {
      const client = makeClient(server, {
        url: ws.url('/ws/bus', 'ws'),
        token: await mintToken(server, { user_id: 'fb-window' }),
        pingIntervalMs: 0,
        reconnect: fast,
        fallback: { windowMs: 400 },
      });
      await client.connect();
      assert.equal(client.transport, 'websocket');
      const cutAndWait = async () => {
        const welcomed = waitFor(client, 'welcome', () => true, 10_000);
        ws.cutAll();
        await welcomed;
        return client.transport;
      };
      // Cut after the window, twice: no failure counted, still WebSocket.
      await sleep(500);
      assert.equal(await cutAndWait(), 'websocket');
      await sleep(500);
      assert.equal(await cutAndWait(), 'websocket', 'cuts after the window do not count');
      // Cut right after the welcome, twice: SSE.
      assert.equal(await cutAndWait(), 'websocket', 'one failure is not enough');
      assert.equal(await cutAndWait(), 'sse', 'two failures in a row: SSE');
    } finally {
      await ws.close();
    }
  });

  test("transports ['websocket'] never falls back", T, async () => {
    const deadPort = await freePort();
    const client = makeClient(server, {
      url: `ws://127.0.0.1:${deadPort}/ws/bus`,
      token: await mintToken(server, { user_id: 'fb-only' }),
      transports: ['websocket'],
      reconnect: fast,
    });
    client.connect().catch(() => {});
    await waitFor(client, 'reconnecting', (r) => r.attempt >= 4, 10_000);
    assert.equal(client.transport, 'websocket');
  });
});
