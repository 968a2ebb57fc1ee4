// The React hook (the package's ./react entry) with react-test-renderer against the real
// server: state goes to open, subscribe delivers events, presence and typing of a peer, and
// unmounting closes the client (the peer sees it go offline).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createElement, useEffect, useState } from 'react';
import TestRenderer from 'react-test-renderer';
import WebSocket from 'ws';

import { useBus } from '@switchboard/bus-client/react';
import { makeClient, mintToken, notify, serverForSuite, waitFor, waitUntil } from './helpers.mjs';

const T = { timeout: 30_000 };

describe('useBus', () => {
  let server;
  serverForSuite((s) => (server = s));

  test('connects on mount, delivers events, presence and typing, closes on unmount', T, async () => {
    const token = await mintToken(server, { user_id: 'rh-alice', watchlist: ['rh-bob'] });
    let bus; // the hook's latest result
    let renders = 0;
    function Inbox() {
      bus = useBus({ url: server.wsUrl, token, WebSocket, events: ['presence', 'typing'] });
      renders++;
      const [notes, setNotes] = useState([]);
      useEffect(() => bus.subscribe('notification', (n) => setNotes((l) => [...l, n.message])), [bus.subscribe]);
      const typing = bus.typingUsers('conv-r').join(',');
      return createElement('p', null, `${bus.state}|${notes.join(',')}|${bus.presenceOf('rh-bob')?.status ?? '-'}|${typing}`);
    }
    const text = () => renderer.toJSON().children.join('');
    const renderer = TestRenderer.create(createElement(Inbox));
    // Registered right after the first render: before the client exists, or just after.
    const subscribed = [];
    bus.subscribe('subscribed', (s) => subscribed.push(s));
    let unmounted = false;
    try {
      await waitUntil(() => bus.state === 'open', 'the hook reaches open');
      assert.ok(bus.client, 'the client is exposed');
      assert.equal(bus.transport, 'websocket');
      assert.match(text(), /^open\|/);
      // subscribe('notification') also subscribed it on the server.
      await waitUntil(() => subscribed.some((s) => s.events.includes('notification')), 'notification subscribed on the server');

      const bob = makeClient(server, {
        token: await mintToken(server, { user_id: 'rh-bob', watchlist: ['rh-alice'] }),
        events: ['presence', 'typing'],
      });
      await bob.connect();
      await waitUntil(() => bus.presenceOf('rh-bob')?.status === 'online', 'bob online in the hook');
      bob.updatePresence('busy');
      await waitUntil(() => text().includes('|busy|'), 'bob busy rendered');

      await notify(server, 'rh-alice', 'hello-hook');
      await waitUntil(() => text().includes('|hello-hook|'), 'the notification rendered');

      bob.sendTyping('rh-alice', 'conv-r');
      await waitUntil(() => text().endsWith('|rh-bob'), 'bob typing rendered');
      const typingAtBob = waitFor(bob, 'typing');
      assert.equal(bus.startTyping('rh-bob', 'conv-b'), true);
      assert.equal((await typingAtBob).user, 'rh-alice');

      // Unmount: the hook's client closes; bob sees alice go offline.
      const client = bus.client;
      assert.equal(client.state, 'open');
      const offline = waitFor(bob, 'presence', (p) => p.user === 'rh-alice' && p.status === 'offline', 10_000);
      const rendersBefore = renders;
      renderer.unmount();
      unmounted = true;
      await waitUntil(() => client.state === 'closed', 'unmount closed the client');
      await offline;
      assert.equal(renders, rendersBefore, 'no render after unmount');
    } finally {
      if (!unmounted) renderer.unmount();
    }
  });

  test('a handler subscribed before the client exists is attached; removing it stops it', T, async () => {
    const token = await mintToken(server, { user_id: 'rh-carol' });
    const seen = [];
    let bus;
    let cleaned = false;
    function Child({ bus: b }) {
      // A child's effect runs before its parent's: the client is not made yet.
      useEffect(() => {
        const off = b.subscribe(['notification'], (n) => seen.push(n.message));
        return () => {
          off();
          cleaned = true;
        };
      }, [b.subscribe]);
      return null;
    }
    function Parent({ show }) {
      bus = useBus({ url: server.wsUrl, token, WebSocket, transports: ['sse'] });
      return show ? createElement(Child, { bus }) : null;
    }
    const renderer = TestRenderer.create(createElement(Parent, { show: true }));
    const subscribed = [];
    bus.subscribe('subscribed', (s) => subscribed.push(s));
    try {
      await waitUntil(() => bus.state === 'open', 'open over SSE');
      assert.equal(bus.transport, 'sse');
      await waitUntil(() => subscribed.some((s) => s.events.includes('notification')), 'subscribed on the server');
      await notify(server, 'rh-carol', 'first');
      await waitUntil(() => seen.length === 1, 'the early handler got the event');
      // Unmount the child: its handler is removed; the parent's client keeps running.
      renderer.update(createElement(Parent, { show: false }));
      // The child's effect cleanup runs after the commit: wait until its handler is gone.
      await waitUntil(() => cleaned, "the child's cleanup ran");
      const more = waitFor(bus.client, 'notification');
      await notify(server, 'rh-carol', 'second');
      assert.equal((await more).message, 'second', 'the client still receives (positive control)');
      assert.deepEqual(seen, ['first'], 'the removed handler was not called');
    } finally {
      renderer.unmount();
    }
  });
});
