// Unit tests of the typing tracker with fake timers: the protocol's default 5 s, refreshes,
// several users and conversations, early stops.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';

import { TYPING_TIMEOUT_MS, TypingTracker } from '../dist/index.js';

describe('TypingTracker (fake timers)', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(() => mock.timers.reset());

  test('the default lifetime is the protocol’s 5 s', () => {
    assert.equal(TYPING_TIMEOUT_MS, 5000);
    const stopped = [];
    const t = new TypingTracker((e) => stopped.push(e));
    assert.equal(t.timeoutMs, 5000);
    assert.equal(t.indicate('bob', 'c1'), true);
    assert.ok(t.isTyping('bob', 'c1'));
    mock.timers.tick(4999);
    assert.deepEqual(stopped, []);
    assert.ok(t.isTyping('bob', 'c1'));
    mock.timers.tick(1);
    assert.deepEqual(stopped, [{ type: 'typing_stopped', user: 'bob', conversation_id: 'c1', reason: 'timeout' }]);
    assert.equal(t.isTyping('bob', 'c1'), false);
    assert.equal(t.size, 0);
  });

  test('a repeat restarts the 5 s from the last indicator', () => {
    const stopped = [];
    const t = new TypingTracker((e) => stopped.push(e));
    t.indicate('bob', 'c1');
    mock.timers.tick(3000);
    assert.equal(t.indicate('bob', 'c1'), false, 'a refresh is not a start');
    mock.timers.tick(4000); // 7 s after the first, 4 s after the last
    assert.deepEqual(stopped, []);
    mock.timers.tick(1000);
    assert.equal(stopped.length, 1);
    mock.timers.tick(60_000);
    assert.equal(stopped.length, 1, 'stopped exactly once');
  });

  test('(user, conversation) pairs are independent', () => {
    const stopped = [];
    const t = new TypingTracker((e) => stopped.push(`${e.user}/${e.conversation_id}`));
    t.indicate('bob', 'c1');
    mock.timers.tick(2000);
    t.indicate('carol', 'c1');
    t.indicate('bob', 'c2');
    assert.deepEqual(t.typingIn('c1').sort(), ['bob', 'carol']);
    mock.timers.tick(3000);
    assert.deepEqual(stopped, ['bob/c1']);
    mock.timers.tick(2000);
    assert.deepEqual(stopped.sort(), ['bob/c1', 'bob/c2', 'carol/c1']);
  });

  test('keys do not collide on separators', () => {
    const t = new TypingTracker(() => {});
    t.indicate('a:b', 'c');
    assert.equal(t.isTyping('a', 'b:c'), false);
    t.clear('closed');
  });

  test('stop() and clear() end indicators early, once, with a reason', () => {
    const stopped = [];
    const t = new TypingTracker((e) => stopped.push(e.reason), 1000);
    t.indicate('bob', 'c1');
    t.indicate('carol', 'c1');
    assert.equal(t.stop('bob', 'c1', 'message'), true);
    assert.equal(t.stop('bob', 'c1', 'message'), false);
    t.clear('closed');
    mock.timers.tick(5000);
    assert.deepEqual(stopped, ['message', 'closed']);
  });
});
