// A real browser (headless Chromium) with WebSocket disabled: pusher-js's web build falls
// back to its HTTP transports by itself, subscribes and receives a triggered event.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import { chromium, serverSdk, waitFor } from './helpers.mjs';
import { APP, HOST, startServer } from './server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PUSHER_WEB = path.join(HERE, 'node_modules', 'pusher-js', 'dist', 'web', 'pusher.min.js');

/** The page: WebSocket removed before pusher-js loads; it reports what happens by POST. */
function page(server) {
  const options = {
    wsHost: HOST,
    wsPort: server.port,
    httpHost: HOST,
    httpPort: server.port,
    forceTLS: false,
    cluster: 'mt1',
  };
  return `<!doctype html><html><head><meta charset="utf-8">
<script>window.WebSocket = undefined; window.MozWebSocket = undefined;</script>
<script src="/pusher.js"></script></head><body><script>
const report = (v) => fetch('/report', { method: 'POST', body: JSON.stringify(v) });
const pusher = new Pusher(${JSON.stringify(APP.key)}, ${JSON.stringify(options)});
pusher.connection.bind('connected', () =>
  report({ connected: pusher.connection.socket_id, transport: pusher.connection.connection.transport.name }));
pusher.connection.bind('error', (e) => report({ error: JSON.stringify(e) }));
const channel = pusher.subscribe('browser-channel');
channel.bind('pusher:subscription_succeeded', () => report({ subscribed: true }));
channel.bind('greeting', (data) => report({ event: data }));
</script></body></html>`;
}

describe('a browser without WebSocket', () => {
  let server;
  let site;
  let browser;
  let profile;
  const reports = [];
  const waiters = [];

  before(async () => {
    server = await startServer();
    site = http.createServer((req, res) => {
      if (req.url === '/') {
        res.writeHead(200, { 'content-type': 'text/html' }).end(page(server));
      } else if (req.url === '/pusher.js') {
        res.writeHead(200, { 'content-type': 'application/javascript' }).end(readFileSync(PUSHER_WEB));
      } else if (req.url === '/report') {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', () => {
          const v = JSON.parse(body);
          reports.push(v);
          for (const w of [...waiters]) w(v);
          res.writeHead(204).end();
        });
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise((r) => site.listen(0, HOST, r));
    profile = mkdtempSync(path.join(os.tmpdir(), 'switchboard-chromium-'));
    browser = spawn(
      chromium(),
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-extensions',
        `--user-data-dir=${profile}`,
        `http://${HOST}:${site.address().port}/`,
      ],
      { stdio: 'ignore' },
    );
  });
  after(async () => {
    if (browser && browser.exitCode === null) {
      const exited = new Promise((r) => browser.once('exit', r));
      browser.kill('SIGKILL');
      await exited;
    }
    site?.close();
    await server?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  });

  const next = (label, match) =>
    waitFor(label, (resolve) => {
      const found = reports.find(match);
      if (found) resolve(found);
      const w = (v) => match(v) && resolve(v);
      waiters.push(w);
      return () => waiters.splice(waiters.indexOf(w), 1);
    }, 30_000);

  it('connects over an HTTP transport, subscribes and receives a triggered event', async () => {
    const hello = await next('connected', (v) => v.connected);
    assert.match(hello.transport, /^xhr_(streaming|polling)$/, JSON.stringify(reports));
    await next('subscribed', (v) => v.subscribed);
    const res = await serverSdk(server).trigger('browser-channel', 'greeting', { hello: 'browser' });
    assert.equal(res.status, 200);
    const got = await next('the event', (v) => v.event);
    assert.deepEqual(got.event, { hello: 'browser' });
  });
});
