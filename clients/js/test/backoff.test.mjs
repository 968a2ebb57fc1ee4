// Unit tests of the reconnect delays: exponential ceilings, the cap, full jitter, reset.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Backoff, DEFAULT_RECONNECT, backoffDelay, isTerminalCloseCode } from '../dist/index.js';

describe('backoffDelay', () => {
  test('without jitter: initial * 2^attempt, capped at maxDelayMs', () => {
    const o = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: false };
    const delays = Array.from({ length: 9 }, (_, i) => backoffDelay(i, o));
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
  });

  test('defaults: 1 s initial, 60 s cap, jitter on', () => {
    assert.deepEqual({ ...DEFAULT_RECONNECT }, { enabled: true, initialDelayMs: 1000, maxDelayMs: 60_000, jitter: true });
    assert.equal(backoffDelay(0, {}, () => 0.5), 500);
    assert.equal(backoffDelay(20, {}, () => 0.5), 30_000);
  });

  test('huge attempt numbers stay at the cap (no overflow to Infinity or NaN)', () => {
    assert.equal(backoffDelay(10_000, { jitter: false }), 60_000);
    assert.equal(backoffDelay(Number.MAX_SAFE_INTEGER, { jitter: false }), 60_000);
    assert.equal(backoffDelay(-3, { jitter: false }), 1000);
  });

  test('full jitter: uniform in [0, ceiling), ends of the random range', () => {
    const o = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: true };
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(60_000, 1000 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, o, () => 0), 0);
      const top = backoffDelay(attempt, o, () => 0.999_999_9);
      assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top} vs ${ceiling}`);
    }
    // A broken random source cannot push the delay out of bounds.
    assert.equal(backoffDelay(3, o, () => 1.5), 0);
    assert.equal(backoffDelay(3, o, () => NaN), 0);
  });

  test('full jitter with Math.random: within bounds and actually spread', () => {
    const o = { initialDelayMs: 1000, maxDelayMs: 8000, jitter: true };
    for (let attempt = 0; attempt < 6; attempt++) {
      const ceiling = Math.min(8000, 1000 * 2 ** attempt);
      const seen = new Set();
      for (let i = 0; i < 500; i++) {
        const d = backoffDelay(attempt, o);
        assert.ok(Number.isInteger(d) && d >= 0 && d < ceiling, `${d} out of [0, ${ceiling})`);
        seen.add(d);
      }
      assert.ok(seen.size > 50, `only ${seen.size} distinct delays at attempt ${attempt}`);
    }
  });
});

describe('Backoff', () => {
  test('grows per attempt and starts over after reset()', () => {
    const b = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, jitter: false });
    assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1000, 1000]);
    assert.equal(b.attempt, 6);
    b.reset();
    assert.equal(b.attempt, 0);
    assert.deepEqual([b.next(), b.next()], [100, 200]);
  });

  test('passes each attempt to the jitter with its own ceiling', () => {
    const b = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, jitter: true }, () => 0.5);
    assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [50, 100, 200, 400, 500]);
  });
});

describe('isTerminalCloseCode', () => {
  test('4001 stops only without getToken; 4003, 4009 and other 40xx always stop', () => {
    assert.equal(isTerminalCloseCode(4001, true), false);
    assert.equal(isTerminalCloseCode(4001, false), true);
    for (const code of [4000, 4003, 4009, 4099]) assert.equal(isTerminalCloseCode(code, true), true, String(code));
  });

  test('4100, 4200, 4201 and transport closes reconnect', () => {
    for (const code of [1000, 1001, 1006, 1011, 4100, 4200, 4201]) {
      assert.equal(isTerminalCloseCode(code, false), false, String(code));
    }
  });
});
