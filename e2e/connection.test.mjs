// Connecting with pusher-js: handshake, socket ids, refusal of an unknown key; close codes
// and pusher-js's reconnect rules over each transport.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import PusherJS from 'pusher-js';

import {
  clientPool, connected, nextEvent, serverSdk, subscribe, TRANSPORTS, transportOptions, unique, waitFor,
} from './helpers.mjs';
import { startServer } from './server.mjs';

describe('connection', () => {
  let server;
  let clients;

  before(async () => {
    server = await startServer();
    clients = clientPool(server);
  });
  afterEach(() => clients.closeAll());
  after(() => server?.stop());

  it('connects and gets a Pusher-format socket_id', async () => {
    const client = clients.create();
    const socketId = await connected(client);
    assert.match(socketId, /^\d+\.\d+$/);
    assert.equal(client.connection.state, 'connected');
    // The server SDK validates socket ids with the same pattern before signing.
    assert.doesNotThrow(() => serverSdk(server).authorizeChannel(socketId, 'private-x'));
  });

  it('gives every connection its own socket_id', async () => {
    const ids = await Promise.all([clients.create(), clients.create(), clients.create()].map(connected));
    assert.equal(new Set(ids).size, 3, `socket ids: ${ids}`);
  });

  it('refuses an unknown app key with error 4001 and pusher-js stops reconnecting', async () => {
    const client = new PusherJS('no-such-key', {
      wsHost: server.host,
      wsPort: server.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: 'mt1',
    });
    try {
      const error = await waitFor('a 4001 error', (resolve) => {
        const onError = (e) => {
          const code = e?.data?.code ?? e?.error?.data?.code;
          if (code === 4001) resolve(e);
        };
        client.connection.bind('error', onError);
        return () => client.connection.unbind('error', onError);
      });
      assert.ok(error);
      // 4000-4099 means "refused": pusher-js must end up disconnected, not retrying.
      await waitFor('state disconnected', (resolve) => {
        if (client.connection.state === 'disconnected') return resolve();
        const onChange = ({ current }) => current === 'disconnected' && resolve();
        client.connection.bind('state_change', onChange);
        return () => client.connection.unbind('state_change', onChange);
      });
    } finally {
      client.disconnect();
    }
  });
});

/**
 * What pusher-js does once the server closes it, over any transport: the close codes it
 * reports (`error` events), the pauses it announces (`connecting_in`, in seconds; its own
 * `closed` handler announces one after any close it retries) and its state changes, each
 * with the ms since the first close code.
 */
function watchClose(client) {
  const seen = { codes: [], pauses: [], states: [] };
  let closedAt = null;
  const onError = (e) => {
    const code = e?.data?.code ?? e?.error?.data?.code;
    if (typeof code !== 'number') return;
    closedAt ??= Date.now();
    if (!seen.codes.includes(code)) seen.codes.push(code);
  };
  const onPause = (s) => seen.pauses.push(s);
  const onState = ({ current }) => {
    if (closedAt !== null) seen.states.push({ state: current, after: Date.now() - closedAt });
  };
  client.connection.bind('error', onError);
  client.connection.bind('connecting_in', onPause);
  client.connection.bind('state_change', onState);
  /** Resolves with the first state change to `state` after the close. */
  const next = (state, ms) => waitFor(`state ${state} after the close`, (resolve) => {
    const check = () => {
      const s = seen.states.find((x) => x.state === state);
      if (s) resolve(s);
    };
    check();
    client.connection.bind('state_change', check);
    return () => client.connection.unbind('state_change', check);
  }, ms);
  const stop = () => {
    client.connection.unbind('error', onError);
    client.connection.unbind('connecting_in', onPause);
    client.connection.unbind('state_change', onState);
  };
  return { seen, next, stop };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The close codes the server sends, and pusher-js's reconnect rules for each range, over
// WebSocket and each HTTP fallback (where the close is a SockJS `c[code,"reason"]` line):
// 4000-4099 refused (no reconnect), 4100-4199 reconnect after a pause, 4200-4299 at once.
for (const transport of TRANSPORTS) {
  describe(`close codes and pusher-js's reconnect rules over ${transport}`, () => {
    let server;
    let clients;
    let sdk;
    /** A connection's byte budget; an event larger than it makes it a slow consumer. */
    const BUDGET = 4096;

    before(async () => {
      server = await startServer({ env: { SWITCHBOARD_SERVER_OUTBOX_MAX_BYTES: String(BUDGET) } });
      clients = clientPool(server, transport);
      sdk = serverSdk(server);
    });
    afterEach(() => clients.closeAll());
    after(() => server?.stop());

    it('4100 (slow consumer: over its byte budget): a pause, then a new connection with its subscriptions', async () => {
      const c = clients.create();
      const first = await connected(c);
      const name = unique('slow-');
      const { channel } = await subscribe(c, name);
      const w = watchClose(c);
      await sdk.trigger(name, 'big', 'x'.repeat(BUDGET + 1000));
      const retry = await w.next('connecting', 5_000);
      const back = await w.next('connected', 5_000);
      w.stop();
      assert.deepEqual(w.seen.codes, [4100], JSON.stringify(w.seen));
      assert.ok(retry.after >= 900, `reconnected ${retry.after} ms after the close`);
      assert.ok(back.after >= retry.after);
      assert.notEqual(c.connection.socket_id, first);
      // pusher-js subscribed again on the new connection.
      await waitFor('the channel subscribed again', (resolve) => {
        if (channel.subscribed) return resolve();
        channel.bind('pusher:subscription_succeeded', resolve);
        return () => channel.unbind('pusher:subscription_succeeded', resolve);
      });
      const got = nextEvent(channel, 'small');
      await sdk.trigger(name, 'small', { ok: 1 });
      assert.deepEqual((await got).data, { ok: 1 });
    });

    it('4009 (terminated): refused, pusher-js does not reconnect', async () => {
      const user = unique('u');
      const c = clients.create({ user: { id: user } });
      await connected(c);
      const signedIn = waitFor('signin', (resolve) => {
        c.bind('pusher:signin_success', resolve);
        return () => c.unbind('pusher:signin_success', resolve);
      });
      c.signin();
      await signedIn;
      // pusher-js (8.x, Node) closes its already-closed faye-websocket after a 4000-4099
      // close, arming a 30 s timer that would hold the process open: released below.
      const socket = c.connection.connection?.transport?.socket;
      const w = watchClose(c);
      assert.equal((await sdk.terminateUserConnections(user)).status, 200);
      await w.next('disconnected', 5_000);
      await sleep(1_500);
      w.stop();
      if (socket?._closeTimer) clearTimeout(socket._closeTimer);
      assert.deepEqual(w.seen.codes, [4009], JSON.stringify(w.seen));
      assert.deepEqual(w.seen.states.map((s) => s.state), ['disconnected'], JSON.stringify(w.seen));
      assert.deepEqual(w.seen.pauses, []);
    });

    it('4200 (the server shuts down): pusher-js tries again at once', async () => {
      const own = await startServer();
      const c = clients.create({ options: transportOptions(own, transport) });
      try {
        await connected(c);
        const w = watchClose(c);
        await own.stop();
        const retry = await w.next('connecting', 5_000);
        w.stop();
        assert.deepEqual(w.seen.codes.slice(0, 1), [4200], JSON.stringify(w.seen));
        assert.ok(retry.after < 500, `tried again ${retry.after} ms after the close`);
      } finally {
        c.disconnect();
        await own.stop();
      }
    });
  });
}
