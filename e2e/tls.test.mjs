// TLS served by the node itself: the real pusher-js with `forceTLS: true` and the real
// `pusher` SDK with `useTLS: true`, both trusting only a CA made here.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import Pusher from 'pusher';
import selfsigned from 'selfsigned';

import { TIMEOUT_MS } from './helpers.mjs';
import { APP, startServer } from './server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** A CA and a leaf for localhost / 127.0.0.1 signed by it. */
async function testCa() {
  const ca = await selfsigned.generate([{ name: 'commonName', value: 'switchboard e2e CA' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  const leaf = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
    ],
  });
  return { caCert: ca.cert, cert: leaf.cert, key: leaf.private };
}

/** Lines of JSON a child prints, awaited one match at a time. */
function lines(child) {
  const seen = [];
  const waiters = [];
  let buf = '';
  child.stdout.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const v = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      seen.push(v);
      for (const w of [...waiters]) if (w.match(v)) w.resolve(v);
    }
  });
  return (label, match) =>
    new Promise((resolve, reject) => {
      const found = seen.find(match);
      if (found) return resolve(found);
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${label}; saw ${JSON.stringify(seen)}`)), TIMEOUT_MS);
      waiters.push({ match, resolve: (v) => (clearTimeout(timer), resolve(v)) });
    });
}

describe('TLS on the node', () => {
  let dir;
  let pems;
  let server;
  let agent;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-tls-'));
    pems = await testCa();
    writeFileSync(path.join(dir, 'ca.pem'), pems.caCert);
    writeFileSync(path.join(dir, 'cert.pem'), pems.cert);
    writeFileSync(path.join(dir, 'key.pem'), pems.key);
    agent = new https.Agent({ ca: pems.caCert, keepAlive: false });
    const probe = (port) =>
      new Promise((resolve) => {
        https
          .get({ host: '127.0.0.1', servername: 'localhost', port, path: '/up', agent }, (res) => {
            res.resume();
            resolve(res.statusCode);
          })
          .on('error', () => resolve(0));
      });
    server = await startServer({
      env: {
        SWITCHBOARD_SERVER_TLS_CERT_FILE: path.join(dir, 'cert.pem'),
        SWITCHBOARD_SERVER_TLS_KEY_FILE: path.join(dir, 'key.pem'),
      },
      probe,
    });
  });
  after(async () => {
    await server?.stop();
    agent?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pusher-js (forceTLS) receives what the pusher SDK (useTLS) triggers', async () => {
    const child = spawn(process.execPath, [path.join(HERE, 'fixtures', 'tls-client.mjs'), String(server.port), APP.key, APP.secret], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.pem') },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    try {
      const next = lines(child);
      await next('connected', (v) => v.connected);
      await next('public subscription', (v) => v.subscribed === 'tls-public');
      await next('private subscription', (v) => v.subscribed === 'private-tls');
      const sdk = new Pusher({
        appId: APP.id,
        key: APP.key,
        secret: APP.secret,
        host: 'localhost',
        port: String(server.port),
        useTLS: true,
        agent,
        timeout: TIMEOUT_MS,
      });
      const res = await sdk.trigger(['tls-public', 'private-tls'], 'price', { v: 42 });
      assert.equal(res.status, 200);
      for (const name of ['tls-public', 'private-tls']) {
        const got = await next(`price on ${name}`, (v) => v.channel === name);
        assert.deepEqual(got.data, { v: 42 });
      }
      const info = await (await sdk.get({ path: '/channels' })).json();
      assert.ok('tls-public' in info.channels, JSON.stringify(info));
    } finally {
      child.stdin.end();
      child.kill();
    }
  });

  it('refuses a client that does not trust the CA (the negative of the test above)', async () => {
    const sdk = new Pusher({
      appId: APP.id,
      key: APP.key,
      secret: APP.secret,
      host: 'localhost',
      port: String(server.port),
      useTLS: true,
      agent: new https.Agent({ keepAlive: false }),
      timeout: TIMEOUT_MS,
    });
    await assert.rejects(sdk.trigger('tls-public', 'price', {}), (err) => {
      assert.match(String(err.error?.code ?? err.error), /UNABLE_TO_VERIFY|CERT|SELF_SIGNED/, String(err.error));
      return true;
    });
  });
});
