// Activity timeout and ping/pong with a short server activity timeout (1 s): pusher-js
// adopts the advertised timeout, heartbeats flow, and the connection stays up — over
// WebSocket and over each HTTP fallback (where pings and pongs are messages in the SockJS
// framing, the client's sent by POST).

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  clientPool, connected, nextEvent, serverSdk, subscribe, TRANSPORTS, unique, waitFor,
} from './helpers.mjs';
import { startServer } from './server.mjs';

for (const transport of TRANSPORTS) {
  describe(`heartbeat with a 1 s activity timeout over ${transport}`, () => {
    let server;
    let clients;

    before(async () => {
      server = await startServer({ env: { SWITCHBOARD_SERVER_ACTIVITY_TIMEOUT: '1' } });
      clients = clientPool(server, transport);
    });
    afterEach(() => clients.closeAll());
    after(() => server?.stop());

    it('advertises the activity timeout and keeps an idle connection alive', async () => {
      const client = clients.create();
      const socketId = await connected(client);
      // pusher-js takes min(its own 120 s, the server's advertised timeout).
      assert.equal(client.connection.activityTimeout, 1000);

      // Three heartbeat exchanges (either side may ping first); all must be answered.
      let heartbeats = 0;
      const states = [];
      const onState = ({ current }) => states.push(current);
      client.connection.bind('state_change', onState);
      await waitFor('three heartbeat frames', (resolve) => {
        const onMessage = (m) => {
          if (m.event === 'pusher:pong' || m.event === 'pusher:ping') {
            heartbeats += 1;
            if (heartbeats >= 3) resolve();
          }
        };
        client.connection.bind('message', onMessage);
        return () => client.connection.unbind('message', onMessage);
      }, 10_000);
      client.connection.unbind('state_change', onState);

      assert.deepEqual(states, [], 'the connection changed state while idle');
      assert.equal(client.connection.state, 'connected');
      assert.equal(client.connection.socket_id, socketId);

      // And it still delivers.
      const name = unique('hb-');
      const { channel } = await subscribe(client, name);
      const got = nextEvent(channel, 'after-idle');
      await serverSdk(server).trigger(name, 'after-idle', { ok: true });
      assert.deepEqual((await got).data, { ok: true });
    });
  });
}
