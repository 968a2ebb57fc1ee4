// Every HTTP API endpoint through the official server SDK (`pusher`), observed by pusher-js.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  clientPool,
  connected,
  eventually,
  json,
  nextEvent,
  record,
  serverSdk,
  subscribe,
  unique,
} from './helpers.mjs';
import { startServer } from './server.mjs';

/** Resolves with the RequestError a rejected SDK call produced. */
async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('the call succeeded');
}

describe('HTTP API through the pusher SDK', () => {
  let server;
  let clients;
  let sdk;

  before(async () => {
    server = await startServer();
    clients = clientPool(server);
    sdk = serverSdk(server);
  });
  afterEach(() => clients.closeAll());
  after(() => server?.stop());

  it('trigger with socket_id excludes that connection', async () => {
    const name = unique('public-');
    const a = clients.create();
    const b = clients.create();
    const { channel: ca } = await subscribe(a, name);
    const { channel: cb } = await subscribe(b, name);
    const socketA = a.connection.socket_id;

    const atA = record(ca, 'news');
    const atB = nextEvent(cb, 'news');
    await sdk.trigger(name, 'news', { n: 1 }, { socket_id: socketA });
    assert.deepEqual((await atB).data, { n: 1 });

    // The same channel without exclusion: A gets this one, and had it got the first, it
    // would have come before.
    const second = nextEvent(ca, 'news');
    await sdk.trigger(name, 'news', { n: 2 });
    await second;
    atA.stop();
    assert.deepEqual(atA.seen.map((e) => e.data), [{ n: 2 }]);
  });

  it('trigger to several channels at once', async () => {
    const c1 = unique('public-');
    const c2 = unique('private-');
    const client = clients.create();
    const [{ channel: s1 }, { channel: s2 }] = await Promise.all([subscribe(client, c1), subscribe(client, c2)]);
    const g1 = nextEvent(s1, 'multi');
    const g2 = nextEvent(s2, 'multi');
    await sdk.trigger([c1, c2], 'multi', { both: true });
    assert.deepEqual((await g1).data, { both: true });
    assert.deepEqual((await g2).data, { both: true });
  });

  it("trigger with info: 'subscription_count' (and user_count on presence)", async () => {
    const name = unique('public-');
    const a = clients.create();
    const b = clients.create();
    await Promise.all([subscribe(a, name), subscribe(b, name)]);
    const body = await json(await sdk.trigger(name, 'counted', {}, { info: 'subscription_count' }));
    assert.deepEqual(body, { channels: { [name]: { subscription_count: 2 } } });

    const pres = unique('presence-');
    const p1 = clients.create({ presence: { user_id: 'u1', user_info: {} } });
    const p2 = clients.create({ presence: { user_id: 'u2', user_info: {} } });
    const p2again = clients.create({ presence: { user_id: 'u2', user_info: {} } });
    for (const c of [p1, p2, p2again]) await subscribe(c, pres);
    const presBody = await json(await sdk.trigger(pres, 'counted', {}, { info: 'subscription_count,user_count' }));
    assert.deepEqual(presBody, { channels: { [pres]: { subscription_count: 3, user_count: 2 } } });

    const empty = await json(await sdk.trigger(unique('public-'), 'counted', {}, { info: 'subscription_count' }));
    assert.deepEqual(Object.values(empty.channels), [{ subscription_count: 0 }]);
  });

  it('trigger without info answers an empty object', async () => {
    const res = await sdk.trigger(unique('public-'), 'nobody', { x: 1 });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {});
  });

  it('triggerBatch delivers every event, with per-event info', async () => {
    const c1 = unique('public-');
    const c2 = unique('presence-');
    const client = clients.create({ presence: { user_id: 'batcher', user_info: {} } });
    const { channel: s1 } = await subscribe(client, c1);
    const { channel: s2 } = await subscribe(client, c2);
    const g1 = nextEvent(s1, 'first');
    const g2 = nextEvent(s2, 'second');
    const res = await sdk.triggerBatch([
      { channel: c1, name: 'first', data: { i: 1 }, info: 'subscription_count' },
      { channel: c2, name: 'second', data: { i: 2 }, info: 'user_count' },
      { channel: c1, name: 'third', data: 'three' },
    ]);
    assert.deepEqual((await g1).data, { i: 1 });
    assert.deepEqual((await g2).data, { i: 2 });
    assert.deepEqual(await json(res), {
      batch: [{ subscription_count: 1 }, { user_count: 1 }, {}],
    });
  });

  it('triggerBatch with socket_id excludes that connection', async () => {
    const name = unique('public-');
    const a = clients.create();
    const b = clients.create();
    const { channel: ca } = await subscribe(a, name);
    const { channel: cb } = await subscribe(b, name);
    const atA = record(ca, 'batched');
    const atB = nextEvent(cb, 'batched');
    await sdk.triggerBatch([{ channel: name, name: 'batched', data: { n: 1 }, socket_id: a.connection.socket_id }]);
    await atB;
    const marker = nextEvent(ca, 'marker');
    await sdk.trigger(name, 'marker', {});
    await marker;
    atA.stop();
    assert.deepEqual(atA.seen, []);
  });

  it("get({ path: '/channels' }) lists occupied channels, filter_by_prefix and info=user_count", async () => {
    const tag = unique('');
    const pubName = `list-${tag}`;
    const privName = `private-list-${tag}`;
    const presA = `presence-list-${tag}-a`;
    const presB = `presence-list-${tag}-b`;
    const x = clients.create({ presence: { user_id: 'x', user_info: {} } });
    const y = clients.create({ presence: { user_id: 'y', user_info: {} } });
    await Promise.all([subscribe(x, pubName), subscribe(x, privName), subscribe(x, presA), subscribe(x, presB)]);
    await subscribe(y, presA);

    const all = await json(await sdk.get({ path: '/channels' }));
    for (const n of [pubName, privName, presA, presB]) {
      assert.deepEqual(all.channels[n], {}, `${n} in ${JSON.stringify(all)}`);
    }

    const presence = await json(
      await sdk.get({ path: '/channels', params: { filter_by_prefix: `presence-list-${tag}`, info: 'user_count' } }),
    );
    assert.deepEqual(presence, {
      channels: { [presA]: { user_count: 2 }, [presB]: { user_count: 1 } },
    });

    const priv = await json(await sdk.get({ path: '/channels', params: { filter_by_prefix: 'private-list-' } }));
    assert.deepEqual(Object.keys(priv.channels).filter((n) => n.includes(tag)), [privName]);

    // Pusher answers 400 to info=user_count without a presence- prefix filter.
    const err = await rejection(sdk.get({ path: '/channels', params: { info: 'user_count' } }));
    assert.equal(err.status, 400, String(err.body));

    // Channels leave the list once unoccupied.
    x.unsubscribe(pubName);
    await eventually(`${pubName} to leave the list`, async () => {
      const now = await json(await sdk.get({ path: '/channels' }));
      return !(pubName in now.channels);
    });
  });

  it('get channel info: occupied, subscription_count, user_count', async () => {
    const name = unique('public-');
    const a = clients.create();
    const b = clients.create();
    await Promise.all([subscribe(a, name), subscribe(b, name)]);
    const info = await json(await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } }));
    assert.deepEqual(info, { occupied: true, subscription_count: 2 });

    const plain = await json(await sdk.get({ path: `/channels/${name}` }));
    assert.deepEqual(plain, { occupied: true });

    const pres = unique('presence-');
    const p = clients.create({ presence: { user_id: 'solo', user_info: {} } });
    await subscribe(p, pres);
    const presInfo = await json(
      await sdk.get({ path: `/channels/${pres}`, params: { info: 'user_count,subscription_count' } }),
    );
    assert.deepEqual(presInfo, { occupied: true, user_count: 1, subscription_count: 1 });

    const vacant = await json(await sdk.get({ path: `/channels/${unique('public-')}` }));
    assert.deepEqual(vacant, { occupied: false });

    const err = await rejection(sdk.get({ path: `/channels/${name}`, params: { info: 'user_count' } }));
    assert.equal(err.status, 400, 'user_count on a non-presence channel');
  });

  it('get users of a presence channel', async () => {
    const pres = unique('presence-');
    const a = clients.create({ presence: { user_id: 'ann', user_info: { n: 1 } } });
    const b = clients.create({ presence: { user_id: 'ben', user_info: { n: 2 } } });
    const b2 = clients.create({ presence: { user_id: 'ben', user_info: { n: 2 } } });
    for (const c of [a, b, b2]) await subscribe(c, pres);
    const body = await json(await sdk.get({ path: `/channels/${pres}/users` }));
    const ids = body.users.map((u) => u.id).sort();
    assert.deepEqual(ids, ['ann', 'ben']);
    for (const u of body.users) assert.deepEqual(Object.keys(u), ['id']);

    const empty = await json(await sdk.get({ path: `/channels/${unique('presence-')}/users` }));
    assert.deepEqual(empty, { users: [] });

    const err = await rejection(sdk.get({ path: `/channels/${unique('public-')}/users` }));
    assert.equal(err.status, 400, 'users of a non-presence channel');
  });

  it('limits: event data over 10 KB gets 413, a batch over 10 events gets 400', async () => {
    const name = unique('public-');
    const big = 'x'.repeat(10 * 1024 + 1);
    const tooBig = await rejection(sdk.trigger(name, 'big', big));
    assert.equal(tooBig.status, 413, `${tooBig.message} ${tooBig.body}`);
    const fits = await sdk.trigger(name, 'fits', 'x'.repeat(10 * 1024 - 100));
    assert.equal(fits.status, 200);

    const batch = Array.from({ length: 11 }, (_, i) => ({ channel: name, name: 'b', data: { i } }));
    const tooMany = await rejection(sdk.triggerBatch(batch));
    assert.equal(tooMany.status, 400, `${tooMany.message} ${tooMany.body}`);
  });

  it('an SDK with the wrong secret gets 401, and nothing is delivered', async () => {
    const name = unique('public-');
    const client = clients.create();
    const { channel } = await subscribe(client, name);
    const seen = record(channel, 'forged');
    const wrong = serverSdk(server, { secret: 'not-the-secret' });

    const err = await rejection(wrong.trigger(name, 'forged', { evil: true }));
    assert.equal(err.status, 401, `${err.message} ${err.body}`);
    for (const call of [
      () => wrong.triggerBatch([{ channel: name, name: 'forged', data: {} }]),
      () => wrong.get({ path: '/channels' }),
      () => wrong.get({ path: `/channels/${name}` }),
      () => wrong.get({ path: `/channels/${name}/users` }),
      () => wrong.terminateUserConnections('someone'),
    ]) {
      assert.equal((await rejection(call())).status, 401);
    }

    const marker = nextEvent(channel, 'marker');
    await sdk.trigger(name, 'marker', {});
    await marker;
    seen.stop();
    assert.deepEqual(seen.seen, []);
  });

  it('an SDK with the wrong key gets 401', async () => {
    const wrong = serverSdk(server, { key: 'not-the-key' });
    const err = await rejection(wrong.trigger(unique('public-'), 'x', {}));
    assert.equal(err.status, 401);
  });

  it('an unknown app id gets 404', async () => {
    const unknown = serverSdk(server, { appId: 'no-such-app' });
    const err = await rejection(unknown.trigger(unique('public-'), 'x', {}));
    assert.equal(err.status, 404, `${err.message} ${err.body}`);
    assert.equal((await rejection(unknown.get({ path: '/channels' }))).status, 404);
  });

  it('terminateUserConnections for a user with no connections answers 200', async () => {
    const client = clients.create();
    await connected(client);
    const res = await sdk.terminateUserConnections(unique('nobody-'));
    assert.equal(res.status, 200);
    assert.equal(client.connection.state, 'connected');
  });
});
