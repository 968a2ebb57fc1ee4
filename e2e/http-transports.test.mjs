// pusher-js's HTTP fallback transports, unchanged client: restricted to xhr_streaming, then
// to xhr_polling, it gets what a WebSocket client gets (connection, public, private and
// presence channels, client events, sign-in and send-to-user, terminate). The scenarios that
// run over every transport (encrypted and cache channels, heartbeats, close codes and
// pusher-js's reconnect rules) are in channels, heartbeat and connection.test.mjs.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  connected,
  connectionState,
  disconnect,
  HTTP_TRANSPORTS,
  httpTransport,
  newClient,
  nextEvent,
  serverSdk,
  subscribe,
  unique,
  waitFor,
} from './helpers.mjs';
import { startServer } from './server.mjs';

for (const transport of HTTP_TRANSPORTS) {
  describe(`pusher-js over ${transport}`, () => {
    let server;
    let sdk;
    const clients = [];
    const client = (opts = {}) => {
      const c = newClient(server, { ...opts, options: httpTransport(server, transport) });
      clients.push(c);
      return c;
    };

    before(async () => {
      server = await startServer();
      sdk = serverSdk(server);
    });
    after(async () => {
      await Promise.all(clients.map((c) => disconnect(c).catch(() => {})));
      await server?.stop();
    });

    it('connects over HTTP, not WebSocket', async () => {
      const c = client();
      const socketId = await connected(c);
      assert.match(socketId, /^\d+\.\d+$/);
      assert.equal(c.connection.connection.transport.name ?? transport, transport);
    });

    it('receives triggered events on public and private channels', async () => {
      const c = client();
      await connected(c);
      const pub = unique('pub-');
      const priv = unique('private-');
      const { channel: a } = await subscribe(c, pub);
      const { channel: b } = await subscribe(c, priv);
      const gotA = nextEvent(a, 'ev');
      const gotB = nextEvent(b, 'ev');
      await sdk.trigger([pub, priv], 'ev', { n: 1 });
      assert.deepEqual((await gotA).data, { n: 1 });
      assert.deepEqual((await gotB).data, { n: 1 });
      // Many events in order (several per poll or per streamed line).
      const seen = [];
      const all = waitFor('20 events', (resolve) => {
        a.bind('seq', (d) => {
          seen.push(d.i);
          if (seen.length === 20) resolve();
        });
        return () => a.unbind('seq');
      });
      for (let i = 0; i < 20; i += 1) await sdk.trigger(pub, 'seq', { i });
      await all;
      assert.deepEqual(seen, [...Array(20).keys()]);
    });

    it('presence and client events between two HTTP clients', async () => {
      const room = unique('presence-');
      const alice = client({ presence: { user_id: 'alice' } });
      const bob = client({ presence: { user_id: 'bob' } });
      const { channel: ca } = await subscribe(alice, room);
      const added = nextEvent(ca, 'pusher:member_added');
      const { channel: cb, data } = await subscribe(bob, room);
      assert.equal(data.count, 2);
      assert.equal((await added).data.id, 'bob');
      const hello = nextEvent(cb, 'client-hello');
      assert.ok(ca.trigger('client-hello', { from: 'alice' }));
      assert.deepEqual((await hello).data, { from: 'alice' });
      // pusher-js tells an HTTP session nothing when it leaves: the server counts it out
      // after its disconnect delay (5 s without a request).
      const removed = nextEvent(ca, 'pusher:member_removed', 15_000);
      await disconnect(bob);
      assert.equal((await removed).data.id, 'bob');
    });

    it('signs in, gets send-to-user, and is terminated with 4009', async () => {
      const user = unique('u');
      const c = client({ user: { id: user } });
      await connected(c);
      const signedIn = waitFor('signin', (resolve) => {
        c.bind('pusher:signin_success', resolve);
        return () => c.unbind('pusher:signin_success', resolve);
      });
      c.signin();
      await signedIn;
      const got = waitFor('user event', (resolve) => {
        c.user.bind('note', resolve);
        return () => c.user.unbind('note', resolve);
      });
      await sdk.sendToUser(user, 'note', { hi: 1 });
      assert.deepEqual(await got, { hi: 1 });
      const closed = waitFor('close 4009', (resolve) => {
        c.connection.bind('error', (e) => {
          if (e?.data?.code === 4009 || e?.error?.data?.code === 4009) resolve();
        });
        c.connection.bind('state_change', ({ current }) => {
          if (current === 'disconnected' || current === 'unavailable') resolve();
        });
        return () => {};
      });
      await sdk.terminateUserConnections(user);
      await closed;
      await connectionState(c, 'disconnected').catch(() => {});
    });
  });
}
