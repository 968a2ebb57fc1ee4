/**
 * Acknowledgements of user events (the offline queue keeps `high` priority ones until acked).
 * Acks are batched briefly so that a burst of events costs one message, and dropped with the
 * connection: the server then delivers those events again, and they are acknowledged then.
 */

import type { EnvelopeFields, ServerMessage } from './protocol.js';

// Runtime globals, declared so that the build needs neither the DOM nor the Node types.
type TimerHandle = unknown;
declare function setTimeout(handler: () => void, ms?: number): TimerHandle;
declare function clearTimeout(handle: TimerHandle | undefined): void;

/** Most ids in one `ack` (the server's limit). */
const ACK_BATCH = 100;
/** How long acks wait to be sent together. */
const ACK_DELAY_MS = 50;

/** The id to acknowledge on delivery of `msg`: a `high` user event's (a duplicate's too). */
export function highPriorityId(msg: ServerMessage): string | undefined {
  const env = msg as EnvelopeFields;
  return env.priority === 'high' && typeof env.id === 'string' ? env.id : undefined;
}

export class AckQueue {
  /** Ids waiting to be acknowledged (sent together, soon). */
  private pending: string[] = [];
  private timer: TimerHandle | undefined;

  /** `send` answers false when not connected. */
  constructor(private readonly send: (msg: Record<string, unknown>) => boolean) {}

  add(ids: readonly string[]): void {
    for (const id of ids) {
      if (typeof id === 'string' && id !== '' && !this.pending.includes(id)) this.pending.push(id);
    }
    if (this.pending.length >= ACK_BATCH) this.flush();
    else if (this.pending.length > 0 && this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), ACK_DELAY_MS);
    }
  }

  /** Forgets the unsent acks (the connection is gone). */
  drop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = [];
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.pending.length > 0) {
      const ids = this.pending.slice(0, ACK_BATCH);
      if (!this.send({ type: 'ack', ids })) {
        this.pending = [];
        return;
      }
      this.pending = this.pending.slice(ids.length);
    }
  }
}
