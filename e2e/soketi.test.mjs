// Drop-in for apps that ran on soketi and Laravel: integer user ids through a Laravel-shaped
// auth endpoint (signed by the npm SDK) for sign-in, send-to-user, terminate and presence;
// LimitReached on a full presence channel; soketi's probes; `code` in error bodies; and
// connections that must sign in within a deadline.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';

import PusherJS from 'pusher-js';

import { connected, disconnect, nextFrame, serverSdk, subscribe, waitFor, wsOptions } from './helpers.mjs';
import { startServer } from './server.mjs';

/** The user a Laravel app would resolve: an Eloquent model with an integer key. */
const USER = Object.freeze({ id: 42, name: 'Taylor' });

/**
 * `POST /broadcasting/auth` and `/broadcasting/user-auth` as Laravel's broadcaster answers
 * them (pusher-http-php passes the integer id through), signed here by the npm SDK.
 */
async function laravelAuth(sdk) {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const socketId = form.get('socket_id');
      let answer;
      if (req.url === '/broadcasting/user-auth') {
        // pusher-http-php signs the integer id as it is; the npm SDK's authenticateUser
        // insists on a string, so its signer is used the way the PHP SDK signs.
        const userData = JSON.stringify({ id: USER.id, user_info: { name: USER.name } });
        const signature = sdk.config.token.sign(`${socketId}::user::${userData}`);
        answer = { auth: `${sdk.config.token.key}:${signature}`, user_data: userData };
      } else {
        const channel = form.get('channel_name');
        const member = channel.startsWith('presence-')
          ? { user_id: USER.id, user_info: { name: USER.name } }
          : undefined;
        answer = sdk.authorizeChannel(socketId, channel, member);
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { base, close: () => new Promise((resolve) => server.close(resolve)) };
}

function laravelClient(server, auth) {
  return new PusherJS(server.key, {
    ...wsOptions(server),
    channelAuthorization: { endpoint: `${auth.base}/broadcasting/auth`, transport: 'ajax' },
    userAuthentication: { endpoint: `${auth.base}/broadcasting/user-auth`, transport: 'ajax' },
  });
}

/**
 * Resolves with the error codes pusher-js reported once the server closed `client`.
 * pusher-js (8.x, Node) arms a 30 s timer on its already-closed socket after a 4000-4099
 * close that would hold the test process open; it is released here (see users.test.mjs).
 */
function closedWith(client) {
  const socket = client.connection.connection?.transport?.socket;
  return waitFor('the server to close the connection', (resolve) => {
    const codes = [];
    const onError = (e) => codes.push(e?.error?.data?.code ?? e?.data?.code);
    const onState = ({ current }) => {
      if (current === 'disconnected') {
        if (socket?._closeTimer) clearTimeout(socket._closeTimer);
        resolve(codes);
      }
    };
    client.connection.bind('error', onError);
    client.connection.bind('state_change', onState);
    return () => {
      client.connection.unbind('error', onError);
      client.connection.unbind('state_change', onState);
    };
  });
}

describe('soketi and Laravel drop-in', () => {
  let server;
  let sdk;
  let auth;
  const live = [];

  before(async () => {
    server = await startServer({ env: { SWITCHBOARD_APP_PRESENCE_MAX_MEMBERS: '1' } });
    sdk = serverSdk(server);
    auth = await laravelAuth(sdk);
  });
  afterEach(async () => {
    await Promise.allSettled(live.splice(0).map((c) => disconnect(c)));
  });
  after(async () => {
    await auth?.close();
    await server?.stop();
  });

  it('an integer user id signs in, receives sendToUser, is in presence and can be terminated', async () => {
    const client = laravelClient(server, auth);
    live.push(client);
    await connected(client);
    const success = nextFrame(client, 'signin_success', (m) => m.event === 'pusher:signin_success');
    client.signin();
    // The server accepts the integer id. (pusher-js itself then refuses to track a user whose
    // id is not a string, so its user channel is never subscribed; clients that keep the
    // number, like Laravel's PHP and mobile SDKs, rely on the server accepting it.)
    assert.equal(JSON.parse((await success).data.user_data).id, 42);

    const got = nextFrame(client, 'the user event', (m) => m.event === 'invoice.paid');
    assert.equal((await sdk.sendToUser('42', 'invoice.paid', { n: 1 })).status, 200);
    const frame = await got;
    assert.equal(frame.channel, '#server-to-user-42');
    assert.deepEqual(frame.data, { n: 1 });

    const { data: members } = await subscribe(client, 'presence-room');
    assert.equal(members.count, 1);
    // The server's member list reports the id as a string, as Pusher does.
    assert.deepEqual(Object.keys(members.members), ['42']);
    assert.deepEqual(members.members['42'], { name: 'Taylor' });
    const users = await (await sdk.get({ path: '/channels/presence-room/users' })).json();
    assert.deepEqual(users, { users: [{ id: '42' }] });

    const closed = closedWith(client);
    assert.equal((await sdk.terminateUserConnections('42')).status, 200);
    assert.ok((await closed).includes(4009));
  });

  it('a full presence channel answers LimitReached, naming the limit', async () => {
    const first = laravelClient(server, auth);
    live.push(first);
    await subscribe(first, 'presence-full');
    // Another user: pusher-js signs with the npm SDK directly, as a second app user would.
    const second = new PusherJS(server.key, {
      ...wsOptions(server),
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) =>
          cb(null, sdk.authorizeChannel(socketId, channelName, { user_id: 7 })),
      },
    });
    live.push(second);
    const error = await waitFor('subscription_error', (resolve) => {
      const channel = second.subscribe('presence-full');
      channel.bind('pusher:subscription_error', resolve);
      return () => channel.unbind();
    });
    assert.equal(error.type, 'LimitReached', JSON.stringify(error));
    assert.equal(error.status, 4100);
    assert.match(error.error, /presence_max_members: 1/);
  });

  it("soketi's probes answer and error bodies carry the status as code", async () => {
    for (const path of ['/', '/ready', '/accept-traffic']) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 200, path);
      assert.equal(await res.text(), 'OK', path);
    }
    const wrong = serverSdk(server, { secret: 'not-the-secret' });
    await assert.rejects(wrong.trigger('news', 'e', {}), (e) => {
      assert.equal(e.status, 401);
      const body = JSON.parse(e.body);
      assert.equal(body.code, 401);
      assert.equal(typeof body.error, 'string');
      return true;
    });
  });
});

describe('require_signin_secs', () => {
  let server;
  let auth;
  const live = [];

  before(async () => {
    server = await startServer({ env: { SWITCHBOARD_APP_REQUIRE_SIGNIN_SECS: '1' } });
    auth = await laravelAuth(serverSdk(server));
  });
  after(async () => {
    await Promise.allSettled(live.splice(0).map((c) => disconnect(c)));
    await auth?.close();
    await server?.stop();
  });

  it('closes a connection that does not sign in, keeps one that does', async () => {
    const anonymous = laravelClient(server, auth);
    const user = laravelClient(server, auth);
    live.push(anonymous, user);
    await Promise.all([connected(anonymous), connected(user)]);
    const signedIn = nextFrame(user, 'signin_success', (m) => m.event === 'pusher:signin_success');
    user.signin();
    await signedIn;
    const closed = closedWith(anonymous);
    const refused = await nextFrame(
      anonymous,
      'the deadline error',
      (m) => m.event === 'pusher:error' && m.data?.code === 4009,
    );
    assert.match(refused.data.message, /require_signin_secs/);
    assert.ok((await closed).includes(4009));
    // Past the deadline the signed-in connection still works.
    await subscribe(user, 'public-after');
    assert.equal(user.connection.state, 'connected');
  });
});
