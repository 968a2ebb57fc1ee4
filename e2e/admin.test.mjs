// The admin API (issue 18) seen by the official clients: apps created over HTTP with the
// admin token, then used by pusher-js and the `pusher` server SDK.
//
// - secret rotation: the old secret keeps signing API calls and private-channel auths for
//   the grace period, next to the new one, until `previous_secret` is cleared;
// - disabling an app closes its pusher-js connections with 4003 and pusher-js does not
//   retry; enabling it again lets a new client in;
// - deleting an app closes its connections with 4001; a new client with its key is refused 4001;
// - a missing or wrong admin token is refused 401 with a JSON error and changes nothing.
//
// Contract: the admin API of issue 18 (Apps: POST/PATCH/DELETE /admin/apps, bearer token).

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import PusherJS from 'pusher-js';

import {
  TIMEOUT_MS, connected, disconnect, nextEvent, record, serverSdk, unique, waitFor, wsOptions,
} from './helpers.mjs';
import { startServer } from './server.mjs';

const ADMIN_TOKEN = 'e2e-admin-token';
/** How long a refused pusher-js client is watched for a reconnect attempt. */
const QUIET_WINDOW_MS = 3_000;
const TEST_TIMEOUT = { timeout: 60_000 };

describe('admin API with pusher-js and the pusher SDK', () => {
  let server;
  const live = new Set();
  /** The faye-websocket sockets under the pusher-js clients (see `releaseSockets`). */
  const sockets = new Set();

  /**
   * When the server closes a connection with a 4000-4099 code, pusher-js "refuses" and calls
   * close() on its (node) faye-websocket socket from inside that socket's own close event,
   * i.e. when the socket is already CLOSED; faye then arms a 30 s close timer that nothing
   * clears, which holds the test process open for 30 s after the last test. The server did
   * its part (close frame sent, TCP closed): only that stray timer of an already-closed
   * client socket is cleared here.
   */
  function releaseSockets() {
    for (const socket of sockets) {
      if (socket.readyState === 3 && socket._closeTimer) clearTimeout(socket._closeTimer);
    }
    sockets.clear();
  }

  before(async () => {
    server = await startServer({ metrics: true, env: { SWITCHBOARD_ADMIN_TOKEN: ADMIN_TOKEN } });
  });
  afterEach(async () => {
    const closing = [...live].map((c) => disconnect(c));
    live.clear();
    await Promise.allSettled(closing);
    releaseSockets();
  });
  after(() => server?.stop());

  /**
   * One admin call on the metrics listener: `{ status, body, text, type }` with `body` the
   * parsed JSON (null when the answer is empty or not JSON).
   * `token: null` sends no Authorization header; `auth` replaces the header outright.
   */
  async function admin(method, path, { body, token = ADMIN_TOKEN, auth } = {}) {
    const headers = {};
    if (auth !== undefined) headers.authorization = auth;
    else if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${server.metricsUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const text = await res.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    return { status: res.status, body: parsed, text, type: res.headers.get('content-type') ?? '' };
  }

  /** `admin()` that must answer `status`; the failure message carries the answer and the server log. */
  async function adminOk(method, path, status, opts) {
    const res = await admin(method, path, opts);
    assert.equal(
      res.status, status,
      `${method} ${path} answered ${res.status} ${res.text}\nserver output:\n${server.output()}`,
    );
    return res;
  }

  /** Creates an app through the API; checks the 201 answer shape. */
  async function createApp(settings) {
    const { body } = await adminOk('POST', '/admin/apps', 201, { body: settings });
    assert.equal(body.app.id, settings.id);
    assert.equal(body.app.key, settings.key);
    assert.equal(body.secret, settings.secret, 'the create answer holds the secret');
    assert.equal('secret' in body.app, false, 'an AppView never holds the secret');
    assert.equal('previous_secret' in body.app, false, 'an AppView never holds the previous secret');
    assert.equal(body.app.source, 'store');
    assert.equal(body.app.enabled, true);
    return body.app;
  }

  /** The server object of the helpers, pointed at another app. */
  const forApp = (id, key, secret) => ({ ...server, appId: id, key, secret });

  /** The `pusher` SDK for app `id`/`key`, signing with `secret`. */
  const sdkFor = (id, key, secret) => serverSdk(forApp(id, key, secret));

  /**
   * A pusher-js client of `key` (WebSocket only); its private-channel auths are signed by
   * whatever SDK `signer.sdk` holds when it subscribes.
   */
  function client(key, signer = { sdk: null }) {
    const c = new PusherJS(key, {
      ...wsOptions(server),
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) => {
          try {
            if (!signer.sdk) throw new Error('no signer set for this client');
            callback(null, signer.sdk.authorizeChannel(socketId, channelName));
          } catch (err) {
            callback(err, null);
          }
        },
      },
    });
    live.add(c);
    c.connection.bind('state_change', ({ current }) => {
      const socket = current === 'connected' ? c.connection.connection?.transport?.socket : null;
      if (socket) sockets.add(socket);
    });
    return c;
  }

  /** Records every connection `error` and state of a client from now on. */
  function watch(c) {
    const errors = [];
    const states = [];
    const frames = [];
    const onError = (e) => errors.push(e);
    const onState = ({ current }) => states.push(current);
    const onMessage = (m) => {
      if (m.event === 'pusher:error') frames.push(m);
    };
    c.connection.bind('error', onError);
    c.connection.bind('state_change', onState);
    c.connection.bind('message', onMessage);
    return { errors, states, frames };
  }

  /**
   * Codes pusher-js reported, split by origin. `closeCodes`: from the WebSocket close
   * (pusher-js's "refused"/"backoff"/... handling wraps the close error in a
   * `WebSocketError`); `errorFrames`: `pusher:error` frames the server sent.
   */
  const codes = (w) => ({
    closeCodes: w.errors.filter((e) => e?.type === 'WebSocketError').map((e) => e?.error?.data?.code),
    errorFrames: w.frames.map((m) => m.data?.code),
  });

  /** Waits (bounded) until pusher-js reports `code` as the WebSocket close code. */
  function closedWith(c, w, code) {
    return waitFor(`close code ${code} (seen so far: ${JSON.stringify(codes(w))})`, (resolve) => {
      const check = () => {
        if (codes(w).closeCodes.includes(code)) resolve();
      };
      check();
      const onError = () => setImmediate(check);
      c.connection.bind('error', onError);
      return () => c.connection.unbind('error', onError);
    });
  }

  /** Waits (bounded) for state `disconnected` or `failed`: pusher-js has given up. */
  function gaveUp(c) {
    const done = (s) => s === 'disconnected' || s === 'failed';
    if (done(c.connection.state)) return Promise.resolve(c.connection.state);
    return waitFor(`state disconnected/failed (now ${c.connection.state})`, (resolve) => {
      const onState = ({ current }) => done(current) && resolve(current);
      c.connection.bind('state_change', onState);
      return () => c.connection.unbind('state_change', onState);
    });
  }

  /**
   * The negative observation: over a bounded window of QUIET_WINDOW_MS the client never goes
   * back to connecting/connected and still ends given up.
   */
  async function staysDown(c) {
    const seen = [];
    const onState = ({ current }) => seen.push(current);
    c.connection.bind('state_change', onState);
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS));
    c.connection.unbind('state_change', onState);
    assert.deepEqual(
      seen.filter((s) => s === 'connecting' || s === 'connected'), [],
      `pusher-js tried again within ${QUIET_WINDOW_MS} ms: states ${JSON.stringify(seen)}`,
    );
    assert.ok(
      ['disconnected', 'failed'].includes(c.connection.state),
      `state after the window: ${c.connection.state}`,
    );
  }

  /**
   * A fresh client of `key` that the server refuses at the handshake: resolves with the
   * codes it saw once pusher-js gave up.
   */
  async function refusedAtHandshake(key, code) {
    const c = client(key);
    const w = watch(c);
    await closedWith(c, w, code).catch(async (err) => {
      // Either origin counts for a handshake refusal; wait for the frame if no close came.
      if (!codes(w).errorFrames.includes(code)) throw err;
    });
    await gaveUp(c);
    return { c, w };
  }

  /** `sdk.trigger` must answer 200 and `channel`'s subscriber must get exactly that event. */
  async function delivers(sdk, channel, label) {
    const payload = { via: label, n: unique('') };
    const got = nextEvent(channel, 'rotation');
    try {
      const res = await sdk.trigger(channel.name, 'rotation', payload);
      assert.equal(res.status, 200, `${label}: trigger status`);
    } catch (err) {
      got.cancel();
      throw new Error(`${label}: trigger failed: ${err.message} (status ${err.status}, body ${err.body})`);
    }
    const { data } = await got;
    assert.deepEqual(data, payload, `${label}: the event received`);
  }

  /**
   * `sdk.trigger` must be refused 401, and the event must not reach the subscriber: a good
   * event sent after it (`control`) arrives alone.
   */
  async function refused(sdk, control, channel, label) {
    const seen = record(channel, 'rotation');
    try {
      await assert.rejects(
        sdk.trigger(channel.name, 'rotation', { via: label }),
        (err) => {
          assert.equal(err.status, 401, `${label}: want a RequestError with status 401, got ${err.status} ${err.message} ${err.body}`);
          return true;
        },
      );
      await delivers(control, channel, `${label} (control after it)`);
      assert.deepEqual(seen.seen.map((e) => e.data.via), [`${label} (control after it)`],
        `${label}: only the control event arrived`);
    } finally {
      seen.stop();
    }
  }

  /**
   * Subscribes `c` to a fresh private channel with `signer.sdk` = `sdk`: resolves `true` on
   * `pusher:subscription_succeeded`, `false` on `pusher:subscription_error`.
   */
  async function privateAuth(c, signer, sdk) {
    signer.sdk = sdk;
    const name = unique('private-rot-');
    const channel = c.subscribe(name);
    try {
      return await waitFor(`the outcome of subscribing to ${name}`, (resolve) => {
        const ok = () => resolve(true);
        const bad = () => resolve(false);
        channel.bind('pusher:subscription_succeeded', ok);
        channel.bind('pusher:subscription_error', bad);
        return () => {
          channel.unbind('pusher:subscription_succeeded', ok);
          channel.unbind('pusher:subscription_error', bad);
        };
      });
    } finally {
      c.unsubscribe(name);
    }
  }

  it('rotates a secret: old and new both sign during the grace period, the old one stops when cleared', TEST_TIMEOUT, async () => {
    await createApp({ id: 'rot', key: 'rot-key', secret: 'rot-old' });
    const oldSdk = sdkFor('rot', 'rot-key', 'rot-old');
    const newSdk = sdkFor('rot', 'rot-key', 'rot-new');
    const wrongSdk = sdkFor('rot', 'rot-key', 'rot-wrong');

    const sdks = { old: oldSdk, new: newSdk, wrong: wrongSdk };
    // Private-channel auths are checked on connections opened at each stage: one opened
    // before the rotation, one in the grace period, one after the old secret is cleared.
    // Every outcome is collected and compared at the end, so a failure shows the whole picture.
    const subscribers = {};
    const open = async (label) => {
      const signer = { sdk: null };
      const conn = client('rot-key', signer);
      await connected(conn);
      subscribers[label] = { conn, signer };
    };
    const auths = {};
    /** Private-auth outcomes, per connection opened so far, per signing secret. */
    const outcomes = async (phase, secrets) => {
      const row = {};
      for (const [label, { conn, signer }] of Object.entries(subscribers)) {
        row[label] = {};
        for (const secret of secrets) row[label][secret] = await privateAuth(conn, signer, sdks[secret]);
      }
      auths[phase] = row;
    };
    const expected = {
      'before rotation': { 'opened before rotation': { old: true, new: false } },
      'grace period': {
        'opened before rotation': { old: true, new: true, wrong: false },
        'opened in the grace period': { old: true, new: true, wrong: false },
      },
      'after clearing': {
        'opened before rotation': { old: false, new: true },
        'opened in the grace period': { old: false, new: true },
        'opened after clearing': { old: false, new: true },
      },
    };

    await open('opened before rotation');
    const c = subscribers['opened before rotation'].conn;
    const name = unique('rot-');
    const channel = c.subscribe(name);
    await waitFor(`subscription to ${name}`, (resolve, reject) => {
      const ok = () => resolve();
      const bad = (e) => reject(new Error(`subscription failed: ${JSON.stringify(e)}`));
      channel.bind('pusher:subscription_succeeded', ok);
      channel.bind('pusher:subscription_error', bad);
      return () => {
        channel.unbind('pusher:subscription_succeeded', ok);
        channel.unbind('pusher:subscription_error', bad);
      };
    });

    // Before the rotation: only the current secret signs.
    await delivers(oldSdk, channel, 'old secret before rotation');
    await refused(newSdk, oldSdk, channel, 'new secret before rotation');
    await outcomes('before rotation', ['old', 'new']);

    // Rotate: the old secret stays valid for the default grace (a day).
    const before = Math.floor(Date.now() / 1000);
    const { body: rotated } = await adminOk('PATCH', '/admin/apps/rot', 200, { body: { secret: 'rot-new' } });
    assert.equal('secret' in rotated.app, false);
    assert.equal('previous_secret' in rotated.app, false);
    const expires = rotated.app.previous_secret_expires_at;
    assert.equal(typeof expires, 'number', `previous_secret_expires_at: ${JSON.stringify(expires)}`);
    assert.ok(expires >= before + 86_400 - 5 && expires <= before + 86_400 + 60,
      `previous_secret_expires_at ${expires} is about a day after ${before}`);

    await delivers(oldSdk, channel, 'old secret in the grace period');
    await delivers(newSdk, channel, 'new secret in the grace period');
    await refused(wrongSdk, newSdk, channel, 'unrelated secret in the grace period');
    await open('opened in the grace period');
    await outcomes('grace period', ['old', 'new', 'wrong']);

    // End the grace period now.
    const { body: cleared } = await adminOk('PATCH', '/admin/apps/rot', 200, { body: { previous_secret: null } });
    assert.equal(cleared.app.previous_secret_expires_at, null);
    await refused(oldSdk, newSdk, channel, 'old secret after clearing');
    await delivers(newSdk, channel, 'new secret after clearing');
    await open('opened after clearing');
    await outcomes('after clearing', ['old', 'new']);
    for (const [label, { conn }] of Object.entries(subscribers)) {
      assert.equal(conn.connection.state, 'connected', `the connection ${label} stayed connected`);
    }
    assert.deepEqual(auths, expected,
      'private-channel auth outcomes (true = pusher:subscription_succeeded, false = pusher:subscription_error), ' +
      'per phase, per connection, per signing secret');
  });

  it('disabling an app closes its pusher-js connection with 4003 and pusher-js stays down; enabling lets clients in', TEST_TIMEOUT, async () => {
    await createApp({ id: 'dis', key: 'dis-key', secret: 'dis-secret' });
    const c = client('dis-key');
    await connected(c);
    const w = watch(c);

    const { body } = await adminOk('PATCH', '/admin/apps/dis', 200, { body: { enabled: false } });
    assert.equal(body.app.enabled, false);

    await closedWith(c, w, 4003);
    await gaveUp(c);
    await staysDown(c);
    const seen = codes(w);
    assert.deepEqual(seen.closeCodes, [4003], `close codes: ${JSON.stringify(seen)}`);
    // Every pusher:error frame sent before the close (if any) says 4003 too.
    assert.ok(seen.errorFrames.every((code) => code === 4003), `pusher:error frames: ${JSON.stringify(seen)}`);

    // While disabled, a new client is refused 4003 as well.
    const { c: late, w: lateW } = await refusedAtHandshake('dis-key', 4003);
    const lateCodes = codes(lateW);
    assert.ok([...lateCodes.closeCodes, ...lateCodes.errorFrames].every((code) => code === 4003),
      `a client connecting while disabled: ${JSON.stringify(lateCodes)}`);
    await staysDown(late);

    // Enabled again: a new client connects and receives.
    const { body: enabled } = await adminOk('PATCH', '/admin/apps/dis', 200, { body: { enabled: true } });
    assert.equal(enabled.app.enabled, true);
    const again = client('dis-key');
    await connected(again);
    const name = unique('dis-');
    const channel = again.subscribe(name);
    await waitFor(`subscription to ${name}`, (resolve) => {
      channel.bind('pusher:subscription_succeeded', resolve);
      return () => channel.unbind('pusher:subscription_succeeded', resolve);
    });
    await delivers(sdkFor('dis', 'dis-key', 'dis-secret'), channel, 'after enabling');
    // The client closed by the disable did not come back on its own.
    assert.ok(['disconnected', 'failed'].includes(c.connection.state), `the disabled-era client: ${c.connection.state}`);
  });

  it('deleting an app closes its pusher-js connection with 4001; a new client with its key is refused 4001', TEST_TIMEOUT, async () => {
    await createApp({ id: 'del', key: 'del-key', secret: 'del-secret' });
    const c = client('del-key');
    await connected(c);
    const w = watch(c);

    const res = await adminOk('DELETE', '/admin/apps/del', 204);
    assert.equal(res.text, '');

    await closedWith(c, w, 4001);
    await gaveUp(c);
    await staysDown(c);
    const seen = codes(w);
    assert.deepEqual(seen.closeCodes, [4001], `close codes: ${JSON.stringify(seen)}`);
    assert.ok(seen.errorFrames.every((code) => code === 4001), `pusher:error frames: ${JSON.stringify(seen)}`);

    const gone = await admin('GET', '/admin/apps/del');
    assert.equal(gone.status, 404, gone.text);
    assert.equal(typeof gone.body?.error, 'string');
    const { body: list } = await adminOk('GET', '/admin/apps', 200);
    assert.equal(list.apps.some((a) => a.id === 'del'), false, 'the deleted app is not listed');

    // A new client with the deleted key gets 4001 (pusher:error and/or close) and stays down.
    const { c: late, w: lateW } = await refusedAtHandshake('del-key', 4001);
    const lateCodes = codes(lateW);
    assert.ok([...lateCodes.closeCodes, ...lateCodes.errorFrames].includes(4001), JSON.stringify(lateCodes));
    assert.ok([...lateCodes.closeCodes, ...lateCodes.errorFrames].every((code) => code === 4001),
      `a client of the deleted key: ${JSON.stringify(lateCodes)}`);
    await staysDown(late);
  });

  it('refuses a missing or wrong admin token with 401 and a JSON error, changing nothing', TEST_TIMEOUT, async () => {
    /** The app list as ids, keys and settings, without the live connection counts. */
    const snapshot = async () => {
      const { body } = await adminOk('GET', '/admin/apps', 200);
      return body.apps.map(({ connections, ...rest }) => rest);
    };
    await createApp({ id: 'tok', key: 'tok-key', secret: 'tok-secret' });
    const beforeList = await snapshot();
    assert.ok(beforeList.some((a) => a.id === server.appId), 'positive control: the right token lists the config app');
    assert.ok(beforeList.some((a) => a.id === 'tok'), 'positive control: the right token lists the created app');

    const attempts = [
      { label: 'no Authorization header', token: null },
      { label: 'a wrong bearer token', token: 'not-the-token' },
      { label: 'the token with a suffix', token: `${ADMIN_TOKEN}x` },
      { label: 'an empty bearer token', auth: 'Bearer ' },
      { label: 'the token without the Bearer scheme', auth: ADMIN_TOKEN },
      { label: 'the token as Basic credentials', auth: `Basic ${ADMIN_TOKEN}` },
    ];
    const calls = [
      ['GET', '/admin/apps'],
      ['GET', '/admin/apps/tok'],
      ['POST', '/admin/apps', { id: 'intruder', key: 'intruder-key', secret: 'intruder-secret' }],
      ['PATCH', '/admin/apps/tok', { enabled: false, secret: 'intruder' }],
      ['DELETE', '/admin/apps/tok'],
    ];
    for (const a of attempts) {
      for (const [method, path, body] of calls) {
        const res = await admin(method, path, { body, token: a.token, auth: a.auth });
        const what = `${method} ${path} with ${a.label}`;
        assert.equal(res.status, 401, `${what}: ${res.status} ${res.text}`);
        assert.match(res.type, /application\/json/, `${what}: content-type ${res.type}`);
        assert.equal(typeof res.body?.error, 'string', `${what}: body ${res.text}`);
        assert.ok(res.body.error.length > 0, `${what}: empty error message`);
      }
    }

    assert.deepEqual(await snapshot(), beforeList, 'the app list is unchanged');
    // And the untouched app still works with its current secret.
    const res = await sdkFor('tok', 'tok-key', 'tok-secret').trigger(unique('after-401-'), 'still', {});
    assert.equal(res.status, 200);
  });
});
