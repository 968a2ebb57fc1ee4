// Client events between two pusher-js clients.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { clientPool, nextEvent, record, serverSdk, subscribe, unique, waitFor } from './helpers.mjs';
import { startServer } from './server.mjs';

describe('client events', () => {
  let server;
  let clients;

  before(async () => {
    server = await startServer();
    clients = clientPool(server);
  });
  afterEach(() => clients.closeAll());
  after(() => server?.stop());

  it('private channel: reaches the other client, not echoed to the sender', async () => {
    const name = unique('private-');
    const a = clients.create();
    const b = clients.create();
    const { channel: ca } = await subscribe(a, name);
    const { channel: cb } = await subscribe(b, name);

    const echo = record(ca, 'client-ping');
    const atB = nextEvent(cb, 'client-ping');
    assert.equal(ca.trigger('client-ping', { n: 1, s: 'x' }), true);
    const got = await atB;
    assert.deepEqual(got.data, { n: 1, s: 'x' });
    assert.equal(got.metadata.user_id, undefined, 'no user_id on private-channel client events');

    // B answers; A's copy of its own ping, had it been echoed, would have come first.
    const atA = nextEvent(ca, 'client-pong');
    cb.trigger('client-pong', { n: 2 });
    assert.deepEqual((await atA).data, { n: 2 });
    echo.stop();
    assert.deepEqual(echo.seen, [], 'the sender received its own client event');
  });

  it('presence channel: metadata carries the sender user_id', async () => {
    const name = unique('presence-');
    const a = clients.create({ presence: { user_id: 'user-a', user_info: { name: 'A' } } });
    const b = clients.create({ presence: { user_id: 'user-b', user_info: { name: 'B' } } });
    const { channel: ca } = await subscribe(a, name);
    const { channel: cb } = await subscribe(b, name);

    const echo = record(ca, 'client-typing');
    const atB = nextEvent(cb, 'client-typing');
    ca.trigger('client-typing', { typing: true });
    const got = await atB;
    assert.deepEqual(got.data, { typing: true });
    assert.equal(got.metadata.user_id, 'user-a');

    const atA = nextEvent(ca, 'client-typing');
    cb.trigger('client-typing', { typing: false });
    const back = await atA;
    assert.equal(back.metadata.user_id, 'user-b');
    echo.stop();
    assert.equal(echo.seen.length, 1, `A saw: ${JSON.stringify(echo.seen)}`);
  });

  it('public channel: the server refuses client events with error 4300 and relays nothing', async () => {
    const name = unique('public-');
    const a = clients.create();
    const b = clients.create();
    const { channel: ca } = await subscribe(a, name);
    const { channel: cb } = await subscribe(b, name);
    const atB = record(cb, 'client-nope');

    const error = waitFor('pusher:error 4300', (resolve) => {
      const onError = (e) => {
        if (e?.type === 'PusherError' && e.data?.code === 4300) resolve(e);
      };
      a.connection.bind('error', onError);
      return () => a.connection.unbind('error', onError);
    });
    ca.trigger('client-nope', { x: 1 });
    await error;
    assert.equal(a.connection.state, 'connected', 'a refused client event must not close the connection');

    // Ordering marker through B's own connection: a private channel both are on.
    const priv = unique('private-');
    const { channel: pa } = await subscribe(a, priv);
    const { channel: pb } = await subscribe(b, priv);
    const marker = nextEvent(pb, 'client-marker');
    pa.trigger('client-marker', {});
    await marker;
    atB.stop();
    assert.deepEqual(atB.seen, []);
  });

  it('over 10 client events per second: error 4301, the excess is dropped, the connection stays', async () => {
    const name = unique('private-');
    const a = clients.create();
    const b = clients.create();
    const { channel: ca } = await subscribe(a, name);
    const { channel: cb } = await subscribe(b, name);
    const atB = record(cb, 'client-burst');

    const limited = waitFor('pusher:error 4301', (resolve) => {
      const onError = (e) => {
        if (e?.type === 'PusherError' && e.data?.code === 4301) resolve(e);
      };
      a.connection.bind('error', onError);
      return () => a.connection.unbind('error', onError);
    });
    for (let i = 0; i < 20; i += 1) ca.trigger('client-burst', { i });
    await limited;

    // A server event on the same channel, sent after the burst was handled.
    const marker = nextEvent(cb, 'marker');
    await serverSdk(server).trigger(name, 'marker', {});
    await marker;
    atB.stop();
    assert.ok(atB.seen.length >= 1 && atB.seen.length < 20, `B received ${atB.seen.length} of 20`);
    assert.deepEqual(atB.seen.map((e) => e.data.i), [...atB.seen.keys()], 'the first ones pass, in order');
    assert.equal(a.connection.state, 'connected');
  });
});
