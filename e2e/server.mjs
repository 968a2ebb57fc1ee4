// Starts the real switchboard binary on a free loopback port for one test file.
//
//   const server = await startServer({ env: { SWITCHBOARD_SERVER_ACTIVITY_TIMEOUT: '1' } });
//   ... server.port, server.appId, server.key, server.secret ...
//   await server.stop();
//
// The binary is $SWITCHBOARD_BIN, or ../target/debug/switchboard relative to this folder
// (build it with `cargo build` first). Metrics are off unless `metrics: true` (then on a free
// port, `server.metricsPort`, where the admin API and the console live), the data directory
// is a fresh temp folder, and every SWITCHBOARD_* variable of the calling environment is
// dropped so that a developer's shell cannot change what the tests see.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { freePort } from '../scripts/free-port.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const HOST = '127.0.0.1';

/** Credentials of the server's default app (its defaults, set explicitly anyway). */
export const APP = Object.freeze({ id: 'app-id', key: 'app-key', secret: 'app-secret' });

const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 50;
const STOP_GRACE_MS = 5_000;

export function binaryPath() {
  const bin = process.env.SWITCHBOARD_BIN
    ? path.resolve(process.env.SWITCHBOARD_BIN)
    : path.resolve(HERE, '..', 'target', 'debug', 'switchboard');
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}: run \`cargo build\` first or set SWITCHBOARD_BIN`);
  }
  return bin;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Spawns `switchboard serve` and resolves once GET /up answers 200.
 * @param {{ env?: Record<string, string>, probe?: (port: number) => Promise<number>, metrics?: boolean }} [options]
 *   extra environment for this server; `probe` answers GET /up's status where plain fetch
 *   cannot (a TLS server with a test CA); `metrics` turns the metrics listener on
 */
export async function startServer({ env = {}, probe, metrics = false } = {}) {
  const bin = binaryPath();
  const port = await freePort();
  const metricsPort = metrics ? await freePort() : null;
  const metricsEnv = metrics
    ? { SWITCHBOARD_METRICS_ENABLED: 'true', SWITCHBOARD_METRICS_PORT: String(metricsPort) }
    : { SWITCHBOARD_METRICS_ENABLED: 'false' };
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-'));

  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')),
  );
  const child = spawn(bin, ['serve'], {
    cwd: dataDir,
    env: {
      ...base,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      SWITCHBOARD_HOST: HOST,
      SWITCHBOARD_PORT: String(port),
      ...metricsEnv,
      SWITCHBOARD_DATA_DIR: dataDir,
      SWITCHBOARD_APP_ID: APP.id,
      SWITCHBOARD_APP_KEY: APP.key,
      SWITCHBOARD_APP_SECRET: APP.secret,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  // Keep the server's output for failure messages; echo it when E2E_SERVER_LOG is set.
  let output = '';
  const keep = (chunk) => {
    const text = chunk.toString();
    output = (output + text).slice(-20_000);
    if (process.env.E2E_SERVER_LOG) process.stderr.write(text);
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
    host: HOST,
    port,
    url: `http://${HOST}:${port}`,
    metricsPort,
    metricsUrl: metrics ? `http://${HOST}:${metricsPort}` : null,
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    dataDir,
    pid: child.pid,
    output: () => output,
    async stop() {
      if (exited === null) {
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
      throw new Error(
        `switchboard exited before it was ready (code ${exited.code}, signal ${exited.signal}):\n${output}`,
      );
    }
    try {
      if (probe) {
        if ((await Promise.race([probe(port), spawnError])) === 200) return server;
      } else {
        const res = await Promise.race([fetch(`${server.url}/up`), spawnError]);
        if (res.status === 200) {
          await res.body?.cancel();
          return server;
        }
        await res.body?.cancel();
      }
    } catch (err) {
      if (err && err.syscall === 'spawn') throw err; // the binary could not be run at all
      // connection refused: not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`switchboard was not ready on ${server.url}/up within ${READY_TIMEOUT_MS} ms:\n${output}`);
    }
    await sleep(READY_POLL_MS);
  }
}
