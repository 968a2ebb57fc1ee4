/**
 * Presence and typing: the checks on what this user declares or sends, and the tracker of who
 * else is typing. Presence is state (kept, re-declared after reconnects); typing indicators are
 * moments (never buffered, and ended by a timer on the receiving side).
 */

import type { TypingStopReason, TypingStoppedEvent } from './events.js';
import type { PresenceStatus } from './protocol.js';

// Runtime globals, declared so that the build needs neither the DOM nor the Node types.
type TimerHandle = unknown;
declare function setTimeout(handler: () => void, ms?: number): TimerHandle;
declare function clearTimeout(handle: TimerHandle | undefined): void;

const PRESENCE_STATUSES: readonly PresenceStatus[] = ['online', 'away', 'busy', 'offline'];

/** A presence declaration, as the `presence` message carries it. */
export interface Presence {
  status: PresenceStatus;
  activity?: string;
}

/** Checks an `updatePresence` call; throws a TypeError for a bad status or activity. */
export function checkPresence(status: PresenceStatus, activity?: string): Presence {
  if (!PRESENCE_STATUSES.includes(status)) {
    throw new TypeError(`status must be one of ${PRESENCE_STATUSES.join(', ')}`);
  }
  if (activity !== undefined && typeof activity !== 'string') {
    throw new TypeError('activity must be a string');
  }
  return activity === undefined ? { status } : { status, activity };
}

/** The `typing` message of a `sendTyping` call; throws a TypeError for a missing argument. */
export function typingMessage(recipient: string, conversationId: string): Record<string, unknown> {
  if (typeof recipient !== 'string' || recipient === '') throw new TypeError('recipient is required');
  if (typeof conversationId !== 'string' || conversationId === '') {
    throw new TypeError('conversationId is required');
  }
  return { type: 'typing', recipient, conversation_id: conversationId };
}

/** How long an indicator lasts without a repeat, by the protocol. */
export const TYPING_TIMEOUT_MS = 5000;

/**
 * Who is typing where. {@link TypingTracker.indicate} starts or refreshes the indicator of
 * (user, conversation); it ends `timeoutMs` after the last refresh, or with
 * {@link TypingTracker.stop} / {@link TypingTracker.clear}, and `onStop` is called once.
 */
export class TypingTracker {
  private readonly active = new Map<string, { user: string; conversation: string; timer: TimerHandle }>();

  constructor(
    private readonly onStop: (event: TypingStoppedEvent) => void,
    readonly timeoutMs: number = TYPING_TIMEOUT_MS,
  ) {}

  private static key(user: string, conversation: string): string {
    return JSON.stringify([user, conversation]);
  }

  /** Starts or refreshes an indicator; true when it started (was not active). */
  indicate(user: string, conversation: string): boolean {
    const key = TypingTracker.key(user, conversation);
    const existing = this.active.get(key);
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => this.stop(user, conversation, 'timeout'), this.timeoutMs);
    this.active.set(key, { user, conversation, timer });
    return existing === undefined;
  }

  /** Ends an indicator; true when one was active. */
  stop(user: string, conversation: string, reason: TypingStopReason): boolean {
    const key = TypingTracker.key(user, conversation);
    const entry = this.active.get(key);
    if (!entry) return false;
    clearTimeout(entry.timer);
    this.active.delete(key);
    this.onStop({ type: 'typing_stopped', user, conversation_id: conversation, reason });
    return true;
  }

  /** Whether `user` is typing in `conversation`. */
  isTyping(user: string, conversation: string): boolean {
    return this.active.has(TypingTracker.key(user, conversation));
  }

  /** The users typing in `conversation`. */
  typingIn(conversation: string): string[] {
    const users: string[] = [];
    for (const e of this.active.values()) if (e.conversation === conversation) users.push(e.user);
    return users;
  }

  /** Ends every indicator. */
  clear(reason: TypingStopReason): void {
    for (const e of [...this.active.values()]) this.stop(e.user, e.conversation, reason);
  }

  /** Active indicators. */
  get size(): number {
    return this.active.size;
  }
}
