/**
 * The event types and rooms the client keeps subscribed. They are state, not requests: kept
 * across disconnects and sent again, whole, after every `welcome`.
 */

import { EVENT_TYPES, type BusEventType } from './protocol.js';

/** The event types of the `user` stream (the ones history keeps for the user). */
const USER_EVENT_TYPES: readonly BusEventType[] = ['notification', 'message', 'action'];

export function checkEventType(e: BusEventType): BusEventType {
  if (!EVENT_TYPES.includes(e)) {
    throw new TypeError(`Unknown event type ${JSON.stringify(e)}: one of ${EVENT_TYPES.join(', ')}`);
  }
  return e;
}

export function checkRoom(room: string): string {
  if (typeof room !== 'string' || room === '') throw new TypeError('A room is a non-empty string');
  return room;
}

/** The checked arguments of a `subscribe` / `unsubscribe`, in the order of the wire message. */
export interface SubscriptionChange {
  events: BusEventType[];
  rooms: string[];
}

/**
 * Checks the arguments of a `subscribe` / `unsubscribe` (all of them before anything changes:
 * a bad one throws a TypeError and changes nothing); undefined when there is nothing to do.
 */
export function checkChange(events: BusEventType[], rooms: string[]): SubscriptionChange | undefined {
  const ev = events.map(checkEventType);
  const rm = rooms.map(checkRoom);
  if (ev.length === 0 && rm.length === 0) return undefined;
  return { events: ev, rooms: rm };
}

export class Subscriptions {
  readonly events = new Set<BusEventType>();
  readonly rooms = new Set<string>();

  constructor(events: readonly BusEventType[], rooms: readonly string[]) {
    for (const e of events) this.events.add(e);
    for (const room of rooms) this.rooms.add(room);
  }

  add(change: SubscriptionChange): void {
    for (const e of change.events) this.events.add(e);
    for (const r of change.rooms) this.rooms.add(r);
  }

  remove(change: SubscriptionChange): void {
    for (const e of change.events) this.events.delete(e);
    for (const r of change.rooms) this.rooms.delete(r);
  }

  get isEmpty(): boolean {
    return this.events.size === 0 && this.rooms.size === 0;
  }

  /** Whether the `user` stream is subscribed (by any of its event types). */
  hasUserEvents(): boolean {
    return USER_EVENT_TYPES.some((e) => this.events.has(e));
  }
}
