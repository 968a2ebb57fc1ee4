// Shared helpers: the official SDKs configured against a test server, and bounded waits.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import Pusher from 'pusher';
import PusherJS from 'pusher-js';

/** How long any single wait may take before the test fails. */
export const TIMEOUT_MS = 5_000;

/**
 * Resolves with what `subscribe(resolve, reject)` resolves, or rejects after `ms` with a
 * message naming what was awaited. `subscribe` may return a function that removes its
 * listeners; it runs however the wait ends.
 */
export function waitFor(label, subscribe, ms = TIMEOUT_MS) {
  let cleanup;
  let timer;
  let rejectNow;
  const p = new Promise((resolve, reject) => {
    rejectNow = reject;
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
    try {
      cleanup = subscribe(resolve, reject);
    } catch (err) {
      reject(err);
    }
  });
  const settled = p.finally(() => {
    clearTimeout(timer);
    if (typeof cleanup === 'function') cleanup();
  });
  /** Gives up waiting now (e.g. when the test already failed), without an unhandled rejection. */
  settled.cancel = () => {
    settled.catch(() => {});
    rejectNow(new Error(`stopped waiting for ${label}`));
  };
  return settled;
}

/**
 * Polls `check` (sync or async) until it returns a truthy value, which it resolves with;
 * rejects after `ms`. For state that has no event of its own (e.g. an unsubscribe taking
 * effect on the server, seen through the HTTP API).
 */
export async function eventually(label, check, ms = TIMEOUT_MS, everyMs = 20) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${label} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The server SDK (`pusher`) pointed at the test server. */
export function serverSdk(server, overrides = {}) {
  return new Pusher({
    appId: server.appId,
    key: server.key,
    secret: server.secret,
    host: server.host,
    port: String(server.port),
    useTLS: false,
    timeout: TIMEOUT_MS,
    ...overrides,
  });
}

/** 32 random bytes, base64: a master key for private-encrypted channels. */
export function newEncryptionMasterKey() {
  return randomBytes(32).toString('base64');
}

/**
 * A pusher-js client whose channel authorization and user authentication are signed by the
 * official server SDK, in-process.
 *
 * @param server the running server
 * @param {object} [opts]
 * @param {Pusher} [opts.sdk] the server SDK that signs (default: correct credentials)
 * @param {{ user_id: string, user_info?: object }} [opts.presence] this client's presence member
 * @param {{ id: string, [k: string]: unknown }} [opts.user] this client's user_data for sign-in
 * @param {object} [opts.options] more pusher-js options (e.g. another transport)
 */
export function newClient(server, { sdk = serverSdk(server), presence, user, options = {} } = {}) {
  const channelHandler = ({ socketId, channelName }, callback) => {
    try {
      const data = channelName.startsWith('presence-') ? presence : undefined;
      if (channelName.startsWith('presence-') && !data) {
        throw new Error('this client has no presence member data');
      }
      callback(null, sdk.authorizeChannel(socketId, channelName, data));
    } catch (err) {
      callback(err, null);
    }
  };
  const userHandler = ({ socketId }, callback) => {
    try {
      if (!user) throw new Error('this client has no user data');
      callback(null, sdk.authenticateUser(socketId, user));
    } catch (err) {
      callback(err, null);
    }
  };
  return new PusherJS(server.key, {
    ...wsOptions(server),
    channelAuthorization: { customHandler: channelHandler },
    userAuthentication: { customHandler: userHandler },
    ...options,
  });
}

/**
 * The transports a scenario runs over, pusher-js unchanged: WebSocket, then restricted to
 * each of its HTTP fallbacks (a network that breaks WebSocket upgrades).
 */
export const TRANSPORTS = Object.freeze(['ws', 'xhr_streaming', 'xhr_polling']);
export const HTTP_TRANSPORTS = Object.freeze(TRANSPORTS.filter((t) => t !== 'ws'));

/** pusher-js options for `transport` (one of {@link TRANSPORTS}). */
export function transportOptions(server, transport) {
  return transport === 'ws' ? wsOptions(server) : httpTransport(server, transport);
}

/** pusher-js options restricting it to one of its HTTP transports. */
export function httpTransport(server, transport) {
  return { httpHost: server.host, httpPort: server.port, enabledTransports: [transport] };
}

/** pusher-js options for a WebSocket-only connection to the test server. */
export function wsOptions(server) {
  return {
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
  };
}

/**
 * Tracks clients created by a test and disconnects them all at the end:
 *   const clients = clientPool(server); afterEach(() => clients.closeAll());
 * Its clients use `transport` (default WebSocket; see {@link TRANSPORTS}).
 */
export function clientPool(server, transport = 'ws') {
  const live = new Set();
  return {
    create(opts = {}) {
      const options = { ...transportOptions(server, transport), ...opts.options };
      const c = newClient(server, { ...opts, options });
      live.add(c);
      return c;
    },
    async closeAll() {
      const closing = [...live].map((c) => disconnect(c));
      live.clear();
      await Promise.allSettled(closing);
    },
  };
}

/** Resolves with the socket id once the client is connected. */
export function connected(client) {
  if (client.connection.state === 'connected') {
    return Promise.resolve(client.connection.socket_id);
  }
  return waitFor('connection state "connected"', (resolve, reject) => {
    const onChange = ({ current }) => {
      if (current === 'connected') resolve(client.connection.socket_id);
      if (current === 'failed' || current === 'unavailable') {
        reject(new Error(`connection went to state ${current}`));
      }
    };
    client.connection.bind('state_change', onChange);
    return () => client.connection.unbind('state_change', onChange);
  });
}

/** Resolves when the client's connection reaches `state`. */
export function connectionState(client, state) {
  if (client.connection.state === state) return Promise.resolve();
  return waitFor(`connection state "${state}"`, (resolve) => {
    const onChange = ({ current }) => {
      if (current === state) resolve();
    };
    client.connection.bind('state_change', onChange);
    return () => client.connection.unbind('state_change', onChange);
  });
}

/** Disconnects a client and waits (bounded) until pusher-js says it is disconnected. */
export async function disconnect(client) {
  const state = client.connection.state;
  if (state === 'disconnected' || state === 'initialized' || state === 'failed') {
    client.disconnect();
    return;
  }
  const done = connectionState(client, 'disconnected');
  client.disconnect();
  await done;
}

/**
 * Subscribes and resolves with the channel on `pusher:subscription_succeeded` (and with its
 * argument, e.g. presence members), rejecting on `pusher:subscription_error`.
 */
export async function subscribe(client, name) {
  const channel = client.subscribe(name);
  const data = await waitFor(`subscription to ${name}`, (resolve, reject) => {
    const ok = (d) => resolve(d);
    const err = (e) => reject(new Error(`subscription to ${name} failed: ${JSON.stringify(e)}`));
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', err);
    return () => {
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', err);
    };
  });
  return { channel, data };
}

/** Resolves with `{ data, metadata }` of the next `event` on `channel`. */
export function nextEvent(channel, event, ms = TIMEOUT_MS) {
  return waitFor(`event ${event} on ${channel.name}`, (resolve) => {
    const cb = (data, metadata) => resolve({ data, metadata });
    channel.bind(event, cb);
    return () => channel.unbind(event, cb);
  }, ms);
}

/**
 * Records every `event` on `channel`, so a test can assert that something did NOT arrive
 * once a later event (sent after it, on the same connection) has arrived.
 */
export function record(channel, event) {
  const seen = [];
  const cb = (data, metadata) => seen.push({ data, metadata });
  channel.bind(event, cb);
  return { seen, stop: () => channel.unbind(event, cb) };
}

/** Records every raw protocol message a client receives (for diagnostics and assertions). */
export function recordFrames(client) {
  const frames = [];
  const cb = (m) => frames.push(m);
  client.connection.bind('message', cb);
  return { frames, stop: () => client.connection.unbind('message', cb) };
}

/** Resolves with the next raw protocol message for which `match(message)` is true. */
export function nextFrame(client, label, match, ms = TIMEOUT_MS) {
  return waitFor(label, (resolve) => {
    const cb = (m) => {
      if (match(m)) resolve(m);
    };
    client.connection.bind('message', cb);
    return () => client.connection.unbind('message', cb);
  }, ms);
}

/** Unique channel/user names per test, so tests never see each other's state. */
let counter = 0;
export function unique(prefix) {
  counter += 1;
  return `${prefix}${process.pid}-${counter}-${randomBytes(3).toString('hex')}`;
}

/** `await res.json()` for the SDK's node-fetch responses, with the status checked. */
export async function json(res) {
  if (res.status !== 200) throw new Error(`unexpected status ${res.status}`);
  return res.json();
}

/** The headless Chromium to drive: $CHROMIUM, or the first of Debian's names on the PATH. */
export function chromium() {
  for (const name of [process.env.CHROMIUM, 'chromium', 'chromium-browser']) {
    if (name && spawnSync(name, ['--version']).status === 0) return name;
  }
  throw new Error('headless Chromium is needed (scripts/test.sh installs Debian\'s chromium)');
}
