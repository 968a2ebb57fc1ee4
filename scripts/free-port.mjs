// A loopback port for a server process a test starts, shared by the JS suites (e2e/ and
// clients/js/test/). It comes from below the kernel's ephemeral range: a port from listen(0)
// lies in that range, and once it is released any outgoing connection on the box may take it
// as its source port before the server binds it. Below the range no socket gets a port without
// asking for it by number; the listen probe skips what another process holds.
import { readFileSync } from 'node:fs';
import net from 'node:net';

const HOST = '127.0.0.1';
const BASE = 10_000;

function ephemeralLow() {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

function probe(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

/** A loopback port, below the ephemeral range, that was free a moment ago. */
export async function freePort() {
  const span = ephemeralLow() - BASE;
  for (let i = 0; i < 1000 && span > 0; i++) {
    const port = BASE + Math.floor(Math.random() * span);
    if (await probe(port)) return port;
  }
  throw new Error(`no free loopback port below ${BASE + span}`);
}
