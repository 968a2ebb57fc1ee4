// The live console (GET /console on the metrics listener) in headless Chromium, driven by
// puppeteer-core: log in with the admin token, watch a pusher-js connection and a triggered
// event arrive through the stream, create an app that pusher-js can then connect with.
//
// A screenshot goes to e2e/artifacts/console.png; with SWITCHBOARD_UPDATE_SCREENSHOT=1 it
// also replaces docs/console.png (the one the README shows).

import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import puppeteer from 'puppeteer-core';
import PusherJS from 'pusher-js';

import {
  chromium, connected, disconnect, newClient, nextEvent, serverSdk, subscribe, unique, wsOptions,
} from './helpers.mjs';
import { startServer } from './server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, 'artifacts');
const ADMIN_TOKEN = 'test-admin-token';
// Stats come once a second and the channels list every 2 s: room for a few of each.
const UI_TIMEOUT_MS = 10_000;

/** Puppeteer spawns the browser by path, so a bare name is looked up on the PATH here. */
function chromiumPath() {
  const name = chromium();
  if (name.includes('/')) return name;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    if (dir && existsSync(candidate)) return candidate;
  }
  return name;
}

describe('the live console', () => {
  let server;
  let browser;
  let page;
  const clients = [];
  const pageErrors = [];

  before(async () => {
    server = await startServer({ metrics: true, env: { SWITCHBOARD_ADMIN_TOKEN: ADMIN_TOKEN } });
    browser = await puppeteer.launch({
      executablePath: chromiumPath(),
      headless: true,
      args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--no-first-run', '--disable-extensions'],
      protocolTimeout: 30_000,
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 1000 });
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    // The 401 of the wrong token is logged by Chromium itself: expected, not the page's fault.
    page.on('console', (msg) => {
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) pageErrors.push(msg.text());
    });
  });

  after(async () => {
    await Promise.allSettled(clients.map((c) => disconnect(c)));
    if (browser) {
      const closed = browser.close();
      const timer = setTimeout(() => browser.process()?.kill('SIGKILL'), 5_000);
      await closed.catch(() => browser.process()?.kill('SIGKILL'));
      clearTimeout(timer);
    }
    await server?.stop();
  });

  /** waitForFunction with a timeout, failing with what the page showed and said. */
  async function until(label, fn, ...args) {
    try {
      return await page.waitForFunction(fn, { timeout: UI_TIMEOUT_MS, polling: 100 }, ...args);
    } catch (err) {
      const shown = await page
        .evaluate(() => ({
          status: document.querySelector('#stream-status')?.textContent,
          loginError: document.querySelector('#login-error')?.textContent,
          appsError: document.querySelector('#apps-error')?.textContent,
          createError: document.querySelector('#create-error')?.textContent,
          connections: document.querySelector('#connections')?.textContent,
          log: [...document.querySelectorAll('#log .log-entry')].slice(0, 5).map((e) => e.textContent),
        }))
        .catch((e) => `(page not readable: ${e.message})`);
      throw new Error(
        `${label}: ${err.message}\npage: ${JSON.stringify(shown)}\npage errors: ${JSON.stringify(pageErrors)}` +
          `\nserver output:\n${server.output()}`,
      );
    }
  }

  const visible = (sel) => page.$eval(sel, (e) => !e.closest('[hidden]'));

  /** Resolves once a `.log-entry` with exactly these source, channel and event is shown. */
  const logEntry = (label, want) =>
    until(label, (w) => [...document.querySelectorAll('#log .log-entry')].some((e) =>
      e.querySelector('.source')?.textContent === w.source &&
      e.querySelector('.channel')?.textContent === w.channel &&
      e.querySelector('.event')?.textContent === w.event &&
      e.querySelector('.data')?.textContent.includes(w.data)), want);

  it('refuses a wrong token, then logs in with the right one and keeps it for the session', async () => {
    const res = await page.goto(`${server.metricsUrl}/console`, { timeout: UI_TIMEOUT_MS });
    assert.equal(res.status(), 200);
    await page.waitForSelector('#token', { visible: true, timeout: UI_TIMEOUT_MS });

    await page.type('#token', 'not-the-token');
    await page.click('#login');
    await until('the login error', () => /401/.test(document.querySelector('#login-error').textContent));
    assert.equal(await visible('#main-view'), false);
    assert.equal(await visible('#login-view'), true);

    await page.type('#token', ADMIN_TOKEN);
    await page.click('#login');
    await page.waitForSelector('#apps tr[data-app="app-id"]', { visible: true, timeout: UI_TIMEOUT_MS });
    assert.equal(await visible('#login-view'), false);
    assert.equal(await page.$eval('#login-error', (e) => e.textContent), '');

    // sessionStorage outlives a reload: no second login.
    await page.reload({ timeout: UI_TIMEOUT_MS });
    await page.waitForSelector('#apps tr[data-app="app-id"]', { visible: true, timeout: UI_TIMEOUT_MS });
    const key = await page.$eval('#apps tr[data-app="app-id"]', (tr) => tr.children[1].textContent);
    assert.equal(key, server.key);
  });

  let client;
  it("counts the selected app's pusher-js connection", async () => {
    await page.select('#app', 'app-id');
    await until('the stream', () => document.querySelector('#stream-status').textContent === 'live');
    client = newClient(server);
    clients.push(client);
    await connected(client);
    await until('#connections to reach 1', () => document.querySelector('#connections').textContent.trim() === '1');
    await until('the apps table to count it', () =>
      document.querySelector('#apps tr[data-app="app-id"] td.connections').textContent.trim() === '1');
  });

  let channel;
  it('logs an event triggered through the HTTP API, and lists its channel', async () => {
    channel = unique('console-');
    await subscribe(client, channel);
    const res = await serverSdk(server).trigger(channel, 'console-test', { hello: 'console' });
    assert.equal(res.status, 200);
    await logEntry('the triggered event in #log', { source: 'api', channel, event: 'console-test', data: 'hello' });
    await until('the channel in #channels', (name) =>
      [...document.querySelectorAll('#channels tr[data-channel]')].some((tr) =>
        tr.dataset.channel === name && tr.children[1].textContent.trim() === '1'), channel);
  });

  it('sends a test event that pusher-js receives', async () => {
    const got = nextEvent(client.channel(channel), 'from-console', UI_TIMEOUT_MS);
    await page.type('#send-channel', channel);
    await page.type('#send-event', 'from-console');
    await page.type('#send-data', '{"via":"console"}');
    await page.click('#send');
    const { data } = await got;
    assert.deepEqual(data, { via: 'console' });
    await logEntry('the sent event in #log', { source: 'console', channel, event: 'from-console', data: 'via' });
  });

  it('creates an app that pusher-js can connect to', async () => {
    await page.type('#new-id', 'console-app');
    await page.type('#new-key', 'console-key');
    await page.type('#new-secret', 'console-secret');
    await page.click('#create');
    await until('the created secret', () => {
      const box = document.querySelector('#created-secret');
      return !box.hidden && box.textContent.includes('console-secret');
    });
    await page.waitForSelector('#apps tr[data-app="console-app"]', { visible: true, timeout: UI_TIMEOUT_MS });
    assert.ok(await page.$('#app option[value="console-app"]'), 'the new app is selectable');

    const other = new PusherJS('console-key', wsOptions(server));
    clients.push(other);
    await connected(other);
    assert.equal(other.connection.state, 'connected');
    // The secret shown is the one the server signs with.
    const sdk = serverSdk(server, { appId: 'console-app', key: 'console-key', secret: 'console-secret' });
    assert.equal((await sdk.trigger(unique('new-app-'), 'hello', {})).status, 200);
  });

  it('renders (screenshot)', async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'console.png');
    await page.screenshot({ path: file, fullPage: true });
    if (process.env.SWITCHBOARD_UPDATE_SCREENSHOT === '1') {
      const docs = path.join(HERE, '..', 'docs');
      mkdirSync(docs, { recursive: true });
      copyFileSync(file, path.join(docs, 'console.png'));
    }
    assert.deepEqual(pageErrors, []);
  });
});
