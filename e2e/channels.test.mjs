// Public, private, presence, private-encrypted and cache channels, as pusher-js sees them,
// with authorizations signed by the official server SDK; the encrypted and cache scenarios
// over each transport (WebSocket, xhr_streaming, xhr_polling).

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  clientPool,
  connected,
  eventually,
  newEncryptionMasterKey,
  nextEvent,
  nextFrame,
  record,
  recordFrames,
  serverSdk,
  subscribe,
  TRANSPORTS,
  unique,
  waitFor,
} from './helpers.mjs';
import { startServer } from './server.mjs';

describe('channels', () => {
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

  it('public channel receives pusher.trigger', async () => {
    const client = clients.create();
    const name = unique('public-');
    const { channel } = await subscribe(client, name);
    const got = nextEvent(channel, 'greeting');
    const res = await sdk.trigger(name, 'greeting', { text: 'hello', n: 1 });
    assert.equal(res.status, 200);
    assert.deepEqual((await got).data, { text: 'hello', n: 1 });
  });

  it('string data reaches the client as the same string', async () => {
    const client = clients.create();
    const name = unique('public-');
    const { channel } = await subscribe(client, name);
    const got = nextEvent(channel, 'plain');
    await sdk.trigger(name, 'plain', 'just text');
    assert.equal((await got).data, 'just text');
  });

  it('Laravel-style event names (class names with backslashes) are delivered', async () => {
    // Pusher limits event names to 200 characters only; Laravel broadcasts as the class
    // name by default (App\Events\OrderShipped) and Echo listens for exactly that.
    const client = clients.create();
    const name = unique('public-');
    const { channel } = await subscribe(client, name);
    const event = 'App\\Events\\OrderShipped';
    const got = nextEvent(channel, event);
    await sdk.trigger(name, event, { order: 7 }).catch((e) => {
      got.cancel();
      assert.fail(`trigger of ${JSON.stringify(event)} answered ${e.status}: ${e.body}`);
    });
    assert.deepEqual((await got).data, { order: 7 });
  });

  it('channel names with every allowed punctuation character work end to end', async () => {
    const client = clients.create();
    const name = `private-${unique('')}_a-b=c@d,e.f;g`;
    const { channel } = await subscribe(client, name);
    const got = nextEvent(channel, 'punctuated');
    await sdk.trigger(name, 'punctuated', { ok: 1 });
    assert.deepEqual((await got).data, { ok: 1 });
    const info = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  });

  it('unsubscribe then subscribe again: events flow again, none while away', async () => {
    const client = clients.create();
    const name = unique('private-');
    const { channel } = await subscribe(client, name);
    const seen = record(channel, 'tick');
    const first = nextEvent(channel, 'tick');
    await sdk.trigger(name, 'tick', 1);
    await first;

    client.unsubscribe(name);
    await eventually('the unsubscribe to reach the server', async () => {
      const res = await sdk.get({ path: `/channels/${name}` });
      return (await res.json()).occupied === false;
    });
    await sdk.trigger(name, 'tick', 2);

    const { channel: again } = await subscribe(client, name);
    const seenAgain = record(again, 'tick');
    const third = nextEvent(again, 'tick');
    await sdk.trigger(name, 'tick', 3);
    await third;
    seen.stop();
    seenAgain.stop();
    const all = again === channel ? seen.seen : [...seen.seen, ...seenAgain.seen];
    assert.deepEqual(all.map((e) => e.data), [1, 3]);
  });

  it('private channel: subscription authorized by authorizeChannel, receives trigger', async () => {
    const client = clients.create();
    const name = unique('private-');
    const { channel } = await subscribe(client, name);
    assert.equal(channel.subscribed, true);
    const got = nextEvent(channel, 'secret-news');
    await sdk.trigger(name, 'secret-news', { a: [1, 2, 3] });
    assert.deepEqual((await got).data, { a: [1, 2, 3] });
  });

  it('private channel: an authorization signed with the wrong secret is refused', async () => {
    const wrong = serverSdk(server, { secret: 'not-the-secret' });
    const client = clients.create({ sdk: wrong });
    const name = unique('private-');
    const channel = client.subscribe(name);
    const err = await waitFor('pusher:subscription_error', (resolve, reject) => {
      channel.bind('pusher:subscription_error', resolve);
      channel.bind('pusher:subscription_succeeded', () => reject(new Error('subscribed with a bad signature')));
    });
    assert.equal(err.status, 401, JSON.stringify(err));
    assert.equal(channel.subscribed, false);
  });

  it('presence channel: members, me, member_added and member_removed', async () => {
    const name = unique('presence-');
    const alice = clients.create({ presence: { user_id: 'alice', user_info: { name: 'Alice' } } });
    const bob = clients.create({ presence: { user_id: 'bob', user_info: { name: 'Bob' } } });

    const { channel: a, data: aMembers } = await subscribe(alice, name);
    assert.equal(aMembers.count, 1);
    assert.deepEqual(aMembers.me, { id: 'alice', info: { name: 'Alice' } });
    assert.deepEqual(a.members.get('alice'), { id: 'alice', info: { name: 'Alice' } });

    const added = nextEvent(a, 'pusher:member_added');
    const { channel: b, data: bMembers } = await subscribe(bob, name);
    assert.equal(bMembers.count, 2);
    assert.deepEqual(bMembers.me, { id: 'bob', info: { name: 'Bob' } });
    const seenByBob = {};
    bMembers.each((m) => {
      seenByBob[m.id] = m.info;
    });
    assert.deepEqual(seenByBob, { alice: { name: 'Alice' }, bob: { name: 'Bob' } });

    assert.deepEqual((await added).data, { id: 'bob', info: { name: 'Bob' } });
    assert.equal(a.members.count, 2);

    const removed = nextEvent(a, 'pusher:member_removed');
    bob.unsubscribe(name);
    assert.deepEqual((await removed).data, { id: 'bob', info: { name: 'Bob' } });
    assert.equal(a.members.count, 1);
    assert.equal(b.subscribed, false);
  });

  it('presence channel: a second connection of the same user adds no member, the last one to leave removes it', async () => {
    const name = unique('presence-');
    const watcher = clients.create({ presence: { user_id: 'w', user_info: null } });
    const carol1 = clients.create({ presence: { user_id: 'carol', user_info: { tab: 1 } } });
    const carol2 = clients.create({ presence: { user_id: 'carol', user_info: { tab: 2 } } });

    const { channel: w } = await subscribe(watcher, name);
    const added = record(w, 'pusher:member_added');
    const removed = record(w, 'pusher:member_removed');

    const firstAdd = nextEvent(w, 'pusher:member_added');
    await subscribe(carol1, name);
    await firstAdd;
    const { data: c2Members } = await subscribe(carol2, name);
    assert.equal(c2Members.count, 2, 'count is of unique users');

    // A trigger sent after carol's second join: once it arrives, any member_added for
    // that join would have arrived before it.
    const marker1 = nextEvent(w, 'marker');
    await sdk.trigger(name, 'marker', 1);
    await marker1;
    assert.equal(added.seen.length, 1, `member_added events: ${JSON.stringify(added.seen)}`);

    carol1.unsubscribe(name);
    // No ack for unsubscribe: wait (bounded) until the API shows one connection less.
    await eventually('carol1 to leave (subscription_count 2)', async () => {
      const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
      return (await res.json()).subscription_count === 2;
    });
    const marker2 = nextEvent(w, 'marker');
    await sdk.trigger(name, 'marker', 2);
    await marker2;
    assert.equal(removed.seen.length, 0, 'carol still has a connection: no member_removed yet');
    assert.equal(w.members.count, 2);

    // The last connection goes away by disconnecting, not unsubscribing.
    const gone = nextEvent(w, 'pusher:member_removed');
    carol2.disconnect();
    assert.equal((await gone).data.id, 'carol');
    assert.equal(w.members.count, 1);
  });

  it('presence channel: numeric user ids (as Laravel sends) work', async () => {
    const name = unique('presence-');
    const client = clients.create({ presence: { user_id: 42, user_info: { n: 42 } } });
    const { data: members } = await subscribe(client, name);
    assert.equal(members.count, 1);
    assert.equal(String(members.me.id), '42');
  });
});

// The same scenarios whatever pusher-js runs over: WebSocket or one of its HTTP fallbacks.
for (const transport of TRANSPORTS) {
  describe(`channels over ${transport}`, () => {
    let server;
    let clients;
    let sdk;

    before(async () => {
      server = await startServer();
      clients = clientPool(server, transport);
      sdk = serverSdk(server);
    });
    afterEach(() => clients.closeAll());
    after(() => server?.stop());

    it('private-encrypted channel: the server relays ciphertext and pusher-js decrypts it', async () => {
      const encryptionMasterKeyBase64 = newEncryptionMasterKey();
      const e2eSdk = serverSdk(server, { encryptionMasterKeyBase64 });
      const client = clients.create({ sdk: e2eSdk });
      await connected(client);
      const frames = recordFrames(client);
      const name = unique('private-encrypted-');
      const { channel } = await subscribe(client, name);

      const got = nextEvent(channel, 'sealed');
      const rawFrame = nextFrame(client, 'the raw sealed frame', (m) => m.event === 'sealed');
      const payload = { card: '4242-4242', note: 'for your eyes only' };
      await e2eSdk.trigger(name, 'sealed', payload);
      assert.deepEqual((await got).data, payload);

      const raw = await rawFrame;
      frames.stop();
      assert.equal(raw.channel, name);
      assert.equal(typeof raw.data, 'object', `frame data: ${JSON.stringify(raw.data)}`);
      assert.equal(typeof raw.data.nonce, 'string');
      assert.equal(typeof raw.data.ciphertext, 'string');
      assert.ok(!JSON.stringify(raw).includes('for your eyes only'), 'plaintext travelled through the server');
    });

    it('private-encrypted channel: triggerBatch is encrypted too', async () => {
      const encryptionMasterKeyBase64 = newEncryptionMasterKey();
      const e2eSdk = serverSdk(server, { encryptionMasterKeyBase64 });
      const client = clients.create({ sdk: e2eSdk });
      const name = unique('private-encrypted-');
      const { channel } = await subscribe(client, name);
      const got = nextEvent(channel, 'sealed-batch');
      await e2eSdk.triggerBatch([{ channel: name, name: 'sealed-batch', data: { x: 'y' } }]);
      assert.deepEqual((await got).data, { x: 'y' });
    });

    it('cache channel: a subscriber gets the last event at once, and pusher:cache_miss when there is none', async () => {
      const name = unique('cache-');
      const client = clients.create();
      const miss = nextEvent(client.subscribe(name), 'pusher:cache_miss');
      await subscribe(client, name);
      await miss;

      await sdk.trigger(name, 'price', { n: 1 });
      await sdk.trigger(name, 'price', { n: 2 });
      const late = clients.create();
      const ch = late.subscribe(name);
      const cached = nextEvent(ch, 'price');
      const misses = record(ch, 'pusher:cache_miss');
      assert.deepEqual((await cached).data, { n: 2 });
      // And then the live stream, without the cached one again.
      const seen = record(ch, 'price');
      const live = nextEvent(ch, 'price');
      await sdk.trigger(name, 'price', { n: 3 });
      assert.deepEqual((await live).data, { n: 3 });
      assert.deepEqual(seen.seen.map((e) => e.data), [{ n: 3 }]);
      assert.equal(misses.seen.length, 0);
      seen.stop();
      misses.stop();
    });

    it('private cache channel: the last event after authorization', async () => {
      const name = unique('private-cache-');
      const client = clients.create();
      await subscribe(client, name);
      await sdk.trigger(name, 'state', { open: true });
      const late = clients.create();
      const ch = late.subscribe(name);
      const cached = nextEvent(ch, 'state');
      assert.deepEqual((await cached).data, { open: true });
    });
  });
}
