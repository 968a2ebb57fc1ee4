// Connecting with pusher-js: handshake, socket ids, refusal of an unknown key.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import PusherJS from 'pusher-js';

import { clientPool, connected, serverSdk, waitFor } from './helpers.mjs';
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
