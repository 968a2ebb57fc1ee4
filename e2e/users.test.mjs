// User sign-in (pusher-js `signin()` with authenticateUser), sendToUser and
// terminateUserConnections.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  clientPool,
  connected,
  nextFrame,
  serverSdk,
  subscribe,
  unique,
  waitFor,
} from './helpers.mjs';
import { startServer } from './server.mjs';

/** Signs the client in and resolves once the server confirmed and pusher-js subscribed its
 * `#server-to-user-<id>` channel. */
async function signIn(client, id) {
  await connected(client);
  const success = nextFrame(client, `pusher:signin_success for ${id}`, (m) => m.event === 'pusher:signin_success');
  const userChannel = nextFrame(
    client,
    `subscription to #server-to-user-${id}`,
    (m) =>
      m.channel === `#server-to-user-${id}` &&
      (m.event === 'pusher_internal:subscription_succeeded' || m.event === 'pusher:subscription_error'),
  );
  client.signin();
  const frame = await success;
  assert.equal(JSON.parse(frame.data.user_data).id, id);
  const sub = await userChannel;
  assert.equal(sub.event, 'pusher_internal:subscription_succeeded', JSON.stringify(sub));
  assert.equal(client.user.user_data.id, id);
}

function nextUserEvent(client, event) {
  return waitFor(`user event ${event}`, (resolve) => {
    const cb = (data) => resolve(data);
    client.user.bind(event, cb);
    return () => client.user.unbind(event, cb);
  });
}

describe('users', () => {
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

  it('signin with authenticateUser, then sendToUser reaches client.user.bind', async () => {
    const id = unique('user-');
    const client = clients.create({ user: { id, user_info: { name: 'Dana' } } });
    await signIn(client, id);
    const got = nextUserEvent(client, 'notice');
    const res = await sdk.sendToUser(id, 'notice', { text: 'hi', n: 3 });
    assert.equal(res.status, 200);
    assert.deepEqual(await got, { text: 'hi', n: 3 });
  });

  it('events sent while the user was away arrive after signin, in order', async () => {
    const id = unique('away-');
    for (const n of [1, 2, 3]) {
      const res = await sdk.sendToUser(id, 'queued', { n });
      assert.equal(res.status, 200);
    }
    const client = clients.create({ user: { id } });
    const got = [];
    client.user.bind('queued', (data) => got.push(data.n));
    await signIn(client, id);
    await waitFor('three queued events', (resolve) => {
      const timer = setInterval(() => got.length >= 3 && resolve(), 10);
      return () => clearInterval(timer);
    });
    assert.deepEqual(got, [1, 2, 3]);
  });

  it('sendToUser reaches every connection of that user and no one else', async () => {
    const id = unique('user-');
    const other = unique('user-');
    const tab1 = clients.create({ user: { id } });
    const tab2 = clients.create({ user: { id } });
    const stranger = clients.create({ user: { id: other } });
    await Promise.all([signIn(tab1, id), signIn(tab2, id), signIn(stranger, other)]);

    const leaked = [];
    stranger.user.bind('ping', (d) => leaked.push(d));
    const at1 = nextUserEvent(tab1, 'ping');
    const at2 = nextUserEvent(tab2, 'ping');
    await sdk.sendToUser(id, 'ping', { to: id });
    assert.deepEqual(await at1, { to: id });
    assert.deepEqual(await at2, { to: id });

    // Marker to the stranger, sent after: had the first event leaked, it came first.
    const marker = nextUserEvent(stranger, 'marker');
    await sdk.sendToUser(other, 'marker', {});
    await marker;
    assert.deepEqual(leaked, []);
  });

  it('signin signed with the wrong secret is refused', async () => {
    const id = unique('user-');
    const wrong = serverSdk(server, { secret: 'not-the-secret' });
    const client = clients.create({ sdk: wrong, user: { id } });
    await connected(client);
    const error = waitFor('pusher:error after a bad signin', (resolve) => {
      const onError = (e) => e?.type === 'PusherError' && resolve(e);
      client.connection.bind('error', onError);
      return () => client.connection.unbind('error', onError);
    });
    client.signin();
    const e = await error;
    assert.equal(e.data.code, 4009, JSON.stringify(e));
    assert.equal(client.user.user_data, null);
  });

  it('watchlist: online and offline events reach client.user.watchlist', async () => {
    const watcherId = unique('user-');
    const friendId = unique('user-');
    const watcher = clients.create({ user: { id: watcherId, watchlist: [friendId] } });
    await signIn(watcher, watcherId);

    const online = waitFor(`watchlist online for ${friendId}`, (resolve) => {
      const cb = (e) => e.user_ids.includes(friendId) && resolve(e);
      watcher.user.watchlist.bind('online', cb);
      return () => watcher.user.watchlist.unbind('online', cb);
    });
    const friend = clients.create({ user: { id: friendId } });
    await signIn(friend, friendId);
    assert.deepEqual((await online).user_ids, [friendId]);

    const offline = waitFor(`watchlist offline for ${friendId}`, (resolve) => {
      const cb = (e) => e.user_ids.includes(friendId) && resolve(e);
      watcher.user.watchlist.bind('offline', cb);
      return () => watcher.user.watchlist.unbind('offline', cb);
    });
    friend.disconnect();
    assert.deepEqual((await offline).user_ids, [friendId]);
  });

  it('watchlist: a watched user already online is reported at sign-in', async () => {
    const watcherId = unique('user-');
    const friendId = unique('user-');
    const friend = clients.create({ user: { id: friendId } });
    await signIn(friend, friendId);
    const watcher = clients.create({ user: { id: watcherId, watchlist: [friendId, unique('absent-')] } });
    const online = waitFor('initial watchlist online event', (resolve) => {
      const cb = (e) => resolve(e);
      watcher.user.watchlist.bind('online', cb);
      return () => watcher.user.watchlist.unbind('online', cb);
    });
    await signIn(watcher, watcherId);
    assert.deepEqual((await online).user_ids, [friendId]);
  });

  it('terminateUserConnections disconnects the signed-in user and only them', async () => {
    const id = unique('user-');
    const other = unique('user-');
    const victim = clients.create({ user: { id } });
    const bystander = clients.create({ user: { id: other } });
    const anonymous = clients.create();
    await Promise.all([signIn(victim, id), signIn(bystander, other), connected(anonymous)]);

    const closedWith = waitFor('the victim to be closed', (resolve) => {
      const errors = [];
      const onError = (e) => errors.push(e);
      const onState = ({ current }) => {
        if (current === 'disconnected') resolve(errors);
      };
      victim.connection.bind('error', onError);
      victim.connection.bind('state_change', onState);
      return () => {
        victim.connection.unbind('error', onError);
        victim.connection.unbind('state_change', onState);
      };
    });
    // pusher-js (8.x, Node) answers a server-initiated close in the 4000-4099 range by calling
    // close() on its already-closed faye-websocket, which arms a 30 s close timer that is
    // never cleared and would hold this test process open. Not a server matter: release it.
    const socket = victim.connection.connection?.transport?.socket;
    const res = await sdk.terminateUserConnections(id);
    assert.equal(res.status, 200);
    const errors = await closedWith;
    if (socket?._closeTimer) clearTimeout(socket._closeTimer);
    // Close code 4009 (unauthorized) is in pusher-js's "refused" range: no reconnect.
    const codes = errors.map((e) => e?.error?.data?.code ?? e?.data?.code);
    assert.ok(codes.includes(4009), `errors seen: ${JSON.stringify(errors)}`);
    assert.equal(victim.connection.state, 'disconnected');

    // The others are still connected and still served.
    assert.equal(bystander.connection.state, 'connected');
    assert.equal(anonymous.connection.state, 'connected');
    const still = nextUserEvent(bystander, 'still-here');
    await sdk.sendToUser(other, 'still-here', 1);
    assert.equal(await still, 1);
    const name = unique('public-');
    const { channel } = await subscribe(anonymous, name);
    assert.equal(channel.subscribed, true);
  });
});
