/**
 * Resume state: per stream, where the next connection resumes from (sent as `since`) and the
 * ids already delivered (a duplicate is dropped). Only streams still subscribed are kept, so
 * the state stays bounded by the subscriptions.
 */

import type { GapEvent } from './events.js';
import {
  ROOM_PREFIX,
  USER_STREAM,
  roomStream,
  streamLabel,
  type EnvelopeFields,
  type ReplayMessage,
  type RoomEventMessage,
  type ServerMessage,
} from './protocol.js';
import type { Subscriptions } from './subscriptions.js';

/**
 * Ids remembered per stream to drop duplicates (the last one is the resume point). The server
 * sends no duplicates; this is a safety net, so a short window is enough.
 */
const DEDUP_WINDOW = 32;

export class ResumeState {
  /**
   * Per stream label (`room:<name>` for a kept room, `user`), the last ids delivered, oldest
   * first: the last one is where to resume; all of them are recognised as duplicates. One entry
   * per kept room plus one, each at most DEDUP_WINDOW ids.
   */
  private readonly seen = new Map<string, string[]>();
  /**
   * Per stream label with no delivered id yet, the head the server reported at subscribe: a
   * resume point only (events up to it may still arrive, e.g. from the offline queue, and are
   * not duplicates).
   */
  private readonly heads = new Map<string, string>();

  constructor(private readonly subscriptions: Subscriptions) {}

  /** The resume point of every stream that has one, as `since` carries them. */
  lastEventIds(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [label, id] of this.heads) out[label] = id;
    for (const [label, ids] of this.seen) out[label] = ids[ids.length - 1]!;
    return out;
  }

  /**
   * Forgets what the subscriptions no longer keep, after an unsubscribe: a stream subscribed
   * again later starts from live events, not from an old resume point.
   */
  forgetUnsubscribed(rooms: readonly string[]): void {
    for (const r of rooms) this.forget(roomStream(r));
    if (!this.subscriptions.hasUserEvents()) this.forget(USER_STREAM);
  }

  private forget(label: string): void {
    this.seen.delete(label);
    this.heads.delete(label);
  }

  /** Streams with no id yet resume from the head the server reported. */
  adoptHeads(heads: Record<string, string> | undefined): void {
    if (heads === null || typeof heads !== 'object') return;
    const { rooms } = this.subscriptions;
    for (const [label, id] of Object.entries(heads)) {
      if (typeof id !== 'string' || id === '' || this.seen.has(label)) continue;
      const kept =
        label === USER_STREAM
          ? this.subscriptions.hasUserEvents()
          : label.startsWith(ROOM_PREFIX) && rooms.has(label.slice(ROOM_PREFIX.length));
      if (kept) this.heads.set(label, id);
    }
  }

  /**
   * Whether `msg` is new for its stream (remembering its id as the stream's resume point), or
   * a duplicate of one already delivered. Events without an id, and events of a stream the
   * client no longer keeps (in flight after an unsubscribe), are delivered and not remembered.
   */
  firstDelivery(msg: ServerMessage): boolean {
    const id = (msg as EnvelopeFields).id;
    if (typeof id !== 'string' || id === '') return true;
    const label = streamLabel(msg);
    if (label === undefined) return true;
    const kept =
      label === USER_STREAM
        ? this.subscriptions.hasUserEvents()
        : this.subscriptions.rooms.has((msg as RoomEventMessage).room);
    if (!kept) return true;
    let ids = this.seen.get(label);
    if (ids === undefined) {
      ids = [];
      this.seen.set(label, ids);
    } else if (ids.includes(id)) {
      return false;
    }
    ids.push(id);
    if (ids.length > DEDUP_WINDOW) ids.shift();
    return true;
  }
}

/** The `gap` a `replay` header announces (`complete: false`), if any. */
export function gapOf(msg: ReplayMessage): GapEvent | undefined {
  if (msg.complete !== false) return undefined;
  const gap: GapEvent = { type: 'gap', stream: msg.stream, since: msg.since ?? null, count: msg.count };
  if (typeof msg.dropped === 'number' && msg.dropped > 0) gap.dropped = msg.dropped;
  if (typeof msg.stream === 'string' && msg.stream.startsWith(ROOM_PREFIX)) {
    gap.room = msg.stream.slice(ROOM_PREFIX.length);
  }
  return gap;
}
