// Test helpers: the real switchboard binary on a loopback port, the signed HTTP API, and
// bounded waits for client events.
//
//   const server = await startServer({ env: { SWITCHBOARD_BUS_IDLE_TIMEOUT: '1' } });
//   const token = await mintToken(server, { user_id: 'alice', watchlist: ['bob'] });
//   ...
//   await server.stop();
//
// The binary is $SWITCHBOARD_BIN, or ../../target/debug/switchboard relative to clients/js
// (build it with `cargo build` at the repository root). Every SWITCHBOARD_* variable of the
// calling environment is dropped so that a developer's shell cannot change what tests see.

import { spawn } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

import { BusClient } from '../dist/index.js';

import { freePort } from '../../../scripts/free-port.mjs';

export { freePort };

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const HOST = '127.0.0.1';
export const APP = Object.freeze({ id: 'app-id', key: 'app-key', secret: 'app-secret' });

const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 50;
const STOP_GRACE_MS = 5_000;

export function binaryPath() {
  const bin = process.env.SWITCHBOARD_BIN
    ? path.resolve(process.env.SWITCHBOARD_BIN)
    : path.resolve(HERE, '..', '..', '..', 'target', 'debug', 'switchboard');
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}: run \`cargo build\` or set SWITCHBOARD_BIN`);
  }
  return bin;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Spawns `switchboard serve` and resolves once GET /up answers 200 (bounded retries).
 * `port`: reuse a port (a restart); by default a free one.
 */
export async function startServer({ env = {}, port } = {}) {
  const bin = binaryPath();
  port ??= await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'switchboard-js-'));
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  const child = spawn(bin, ['serve'], {
    cwd: dataDir,
    env: {
      ...base,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      SWITCHBOARD_HOST: HOST,
      SWITCHBOARD_PORT: String(port),
      SWITCHBOARD_METRICS_ENABLED: 'false',
      SWITCHBOARD_DATA_DIR: dataDir,
      SWITCHBOARD_APP_ID: APP.id,
      SWITCHBOARD_APP_KEY: APP.key,
      SWITCHBOARD_APP_SECRET: APP.secret,
      SWITCHBOARD_SERVER_SHUTDOWN_GRACE: '2',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk) => {
    const text = chunk.toString();
    output = (output + text).slice(-20_000);
    if (process.env.SERVER_LOG) process.stderr.write(text);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  const spawnError = new Promise((_, reject) => child.once('error', reject));
  spawnError.catch(() => {});

  const server = {
    port,
    httpUrl: `http://${HOST}:${port}`,
    wsUrl: `ws://${HOST}:${port}/ws/bus`,
    output: () => output,
    /** SIGSTOP: the process stays, its sockets accept but nothing answers. */
    pause: () => child.kill('SIGSTOP'),
    /** SIGCONT after pause(). */
    resume: () => child.kill('SIGCONT'),
    /** SIGTERM (the server closes bus connections with 4200), SIGKILL after a grace. */
    async stop() {
      if (exited === null) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (exited === null) child.kill('SIGKILL');
        }, STOP_GRACE_MS);
        await exit;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited !== null) {
      await server.stop();
      throw new Error(`switchboard exited before it was ready (${JSON.stringify(exited)}):\n${output}`);
    }
    try {
      const res = await Promise.race([fetch(`${server.httpUrl}/up`), spawnError]);
      await res.body?.cancel();
      if (res.status === 200) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`switchboard was not ready within ${READY_TIMEOUT_MS} ms:\n${output}`);
    }
    await sleep(READY_POLL_MS);
  }
}

/**
 * A request signed like Pusher's server SDKs: auth_key, auth_timestamp, auth_version=1.0,
 * body_md5 (hex MD5 of the body), auth_signature = hex HMAC-SHA256(secret,
 * "METHOD\nPATH\n" + the other parameters sorted by key, joined as k=v with &).
 */
export function signedUrl(server, method, urlPath, body = '', { key = APP.key, secret = APP.secret } = {}) {
  const params = {
    auth_key: key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
  };
  if (body !== '') params.body_md5 = createHash('md5').update(body).digest('hex');
  const query = Object.keys(params)
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join('&');
  const signature = createHmac('sha256', secret).update(`${method}\n${urlPath}\n${query}`).digest('hex');
  return `${server.httpUrl}${urlPath}?${query}&auth_signature=${signature}`;
}

/** POSTs JSON with a signature; resolves with the parsed answer, throws on a non-2xx status. */
export async function signedPost(server, urlPath, payload) {
  const body = JSON.stringify(payload);
  const res = await fetch(signedUrl(server, 'POST', urlPath, body), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${urlPath} → ${res.status}: ${text}`);
  return JSON.parse(text);
}

/** A notification to `user` through the signed bus API (`extra`: `priority`, `ttl`, ...). */
export function notify(server, user, message, extra = {}) {
  return signedPost(server, `/apps/${APP.id}/bus/notifications`, { to: [user], notification_type: 't', message, ...extra });
}

/** Mints a bus token with POST /apps/{id}/bus/tokens. */
export async function mintToken(server, claims) {
  const { token } = await signedPost(server, `/apps/${APP.id}/bus/tokens`, claims);
  return token;
}

/** A BusClient on `server` with the `ws` package; closed by `closeAll`. */
export function makeClient(server, options) {
  const client = new BusClient({ url: server.wsUrl, WebSocket, ...options });
  openClients.add(client);
  return client;
}

const openClients = new Set();

/** Closes every client made by makeClient. */
export function closeAll() {
  for (const c of openClients) c.close();
  openClients.clear();
}

/**
 * A server for the enclosing `describe`: started (with `startServer` options) before its
 * tests and handed to `use`, every client closed after each test, stopped after the last.
 */
export function serverForSuite(use, options) {
  let server;
  before(async () => {
    server = await startServer(options);
    use(server);
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await server?.stop();
  });
}

/**
 * Resolves with the next `type` event of `client` that satisfies `predicate`; rejects after
 * `timeoutMs`, naming what it waited for.
 */
export function waitFor(client, type, predicate = () => true, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching "${type}" event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(type, (event) => {
      let ok;
      try {
        ok = predicate(event);
      } catch (err) {
        ok = false;
      }
      if (ok) {
        clearTimeout(timer);
        off();
        resolve(event);
      }
    });
  });
}

/**
 * A `ws` WebSocket class that records its instances (`sockets`, to drop one from the client's
 * side) and every frame the client sends (`sent`: `{ socket, msg }`, socket = its index).
 */
export function socketSpy() {
  const sockets = [];
  const sent = [];
  class SpyWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      sockets.push(this);
    }
    send(data, ...rest) {
      sent.push({ socket: sockets.indexOf(this), msg: JSON.parse(data) });
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: SpyWebSocket, sockets, sent };
}

/** Resolves once `predicate()` is true (polled); rejects after `timeoutMs` with `what`. */
export async function waitUntil(predicate, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

/** Records every event of the given types, in order. */
export function record(client, types) {
  const log = [];
  for (const t of types) client.on(t, (e) => log.push(e));
  return log;
}

/**
 * A loopback TCP proxy to `targetPort`: `mode` 'pipe' forwards, 'reset' accepts and destroys
 * every new connection at once (a network that breaks them); `cutAll()` destroys the open
 * ones (a cut stream). `url(path, scheme)`: an address through the proxy.
 */
export async function tcpProxy(targetPort, { mode = 'pipe' } = {}) {
  const open = new Set();
  const proxy = {
    mode,
    accepted: 0,
    port: 0,
    url: (p, scheme = 'http') => `${scheme}://${HOST}:${proxy.port}${p}`,
    cutAll() {
      for (const s of open) s.destroy();
      open.clear();
    },
    close() {
      proxy.cutAll();
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
  const srv = net.createServer((client) => {
    proxy.accepted++;
    if (proxy.mode === 'reset') {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, HOST);
    open.add(client);
    open.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, HOST, resolve);
  });
  proxy.port = srv.address().port;
  return proxy;
}
