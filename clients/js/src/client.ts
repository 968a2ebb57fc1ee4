/**
 * The client: the public API, and what server messages mean (delivery once per event, typing
 * indicators, acks, gaps). The socket and the reconnect loop are the connection's; the client
 * holds the state that outlives any one socket (subscriptions, presence, resume points) and
 * hands it back to each new connection.
 */

import { AckQueue, highPriorityId } from './acks.js';
import { Connection, type BusClientState } from './connection.js';
import { Emitter, type BusClientEventName, type BusClientHandler } from './events.js';
import { resolveOptions, type BusClientOptions, type Transport } from './options.js';
import { TypingTracker, checkPresence, typingMessage, type Presence } from './presence.js';
import type {
  BusEventType,
  PresenceStatus,
  PushPlatform,
  PushRegisteredMessage,
  PushUnregisteredMessage,
  ServerMessage,
  WebPushSubscriptionJSON,
  WelcomeMessage,
} from './protocol.js';
import { registerPush, unregisterPush, type RequestChannel } from './push.js';
import { ResumeState, gapOf } from './resume.js';
import { Subscriptions, checkChange } from './subscriptions.js';

/**
 * A bus connection that survives network trouble.
 *
 * ```ts
 * const bus = new BusClient({ url: 'wss://rt.example.com/ws/bus', getToken, events: ['notification'] });
 * bus.on('notification', (n) => show(n.message));
 * await bus.connect();
 * ```
 */
export class BusClient {
  private readonly emitter = new Emitter();
  private readonly connection: Connection;
  private readonly subs: Subscriptions;
  private readonly resumeState: ResumeState;
  private readonly acks: AckQueue;
  private readonly tracker: TypingTracker;
  private presence: Presence | undefined;
  private readonly resume: boolean;
  private readonly autoAck: boolean;
  /** What push requests need: the handlers, and a send that is false when not connected. */
  private readonly channel: RequestChannel;

  constructor(options: BusClientOptions) {
    const o = resolveOptions(options);
    this.connection = new Connection(o, this.emitter, {
      dispatch: (msg) => this.dispatch(msg),
      restore: () => this.restore(),
      // Unsent acks go: those events are delivered again and acknowledged then.
      teardown: () => this.acks.drop(),
      closing: () => this.tracker.clear('closed'),
    });
    const send = (msg: Record<string, unknown>) => this.connection.send(msg);
    this.subs = new Subscriptions(o.events, o.rooms);
    this.resumeState = new ResumeState(this.subs);
    this.acks = new AckQueue(send);
    this.tracker = new TypingTracker((e) => this.emitter.emit('typing_stopped', e), o.typingTimeoutMs);
    this.resume = o.resume;
    this.autoAck = o.autoAck;
    this.channel = { emitter: this.emitter, send };
  }

  // ------------------------------------------------------------------ public API

  /** Where the client is. */
  get state(): BusClientState {
    return this.connection.state;
  }

  /**
   * The transport of the current connection attempt, `websocket` or `sse` (of the last one once
   * closed; undefined before the first). See `BusClientOptions.transports` and `fallback`.
   */
  get transport(): Transport | undefined {
    return this.connection.transport;
  }

  /** The `welcome` of the current connection, if welcomed. */
  get session(): WelcomeMessage | undefined {
    return this.connection.session;
  }

  /** The event types and rooms the client keeps subscribed. */
  get subscriptions(): { events: BusEventType[]; rooms: string[] } {
    return { events: [...this.subs.events], rooms: [...this.subs.rooms] };
  }

  /**
   * The id of the last event delivered per stream (`room:<name>`, `user`): where the next
   * connection resumes from. Only streams still subscribed are kept.
   */
  get lastEventIds(): Record<string, string> {
    return this.resumeState.lastEventIds();
  }

  /**
   * Starts connecting (and reconnecting). Resolves with the first `welcome`; rejects when the
   * client stops for good before that (`close()`, a terminal close code, no usable token).
   * Calling it while started returns the same promise (or the current `welcome`).
   */
  connect(): Promise<WelcomeMessage> {
    return this.connection.connect();
  }

  /**
   * Closes the connection and stops reconnecting. Emits `close` (code 1000) if the client was
   * started. Subscriptions, the declared presence and the last event ids are kept for a later
   * `connect()` (which then resumes).
   */
  close(): void {
    this.connection.close();
  }

  /** Adds a handler; returns a function that removes it. */
  on<K extends BusClientEventName>(type: K, handler: BusClientHandler<K>): () => void {
    return this.emitter.on(type, handler);
  }

  /** Adds a handler called once. */
  once<K extends BusClientEventName>(type: K, handler: BusClientHandler<K>): () => void {
    return this.emitter.once(type, handler);
  }

  /** Removes a handler. */
  off<K extends BusClientEventName>(type: K, handler: BusClientHandler<K>): void {
    this.emitter.off(type, handler);
  }

  /**
   * Subscribes to event types and rooms, now if connected and again after every reconnect.
   * The server answers with `subscribed` (the full set), and an `error` for a room the token
   * does not allow.
   */
  subscribe(events: BusEventType[] = [], rooms: string[] = []): void {
    const change = checkChange(events, rooms);
    if (!change) return;
    this.subs.add(change);
    this.connection.send({ type: 'subscribe', events: change.events, rooms: change.rooms });
  }

  /**
   * Unsubscribes from event types and rooms (now if connected; forgotten for reconnects, with
   * their resume points: a room subscribed again later starts from live events).
   */
  unsubscribe(events: BusEventType[] = [], rooms: string[] = []): void {
    const change = checkChange(events, rooms);
    if (!change) return;
    this.subs.remove(change);
    this.resumeState.forgetUnsubscribed(change.rooms);
    this.connection.send({ type: 'unsubscribe', events: change.events, rooms: change.rooms });
  }

  /**
   * Declares this user's status (`offline` = invisible) with an optional activity; sent now if
   * connected and re-declared after every reconnect.
   */
  updatePresence(status: PresenceStatus, activity?: string): void {
    this.presence = checkPresence(status, activity);
    this.connection.send({ type: 'presence', ...this.presence });
  }

  /**
   * Tells `recipient` that this user is typing in `conversationId`. Returns false, and sends
   * nothing, when not connected: a late typing indicator would be wrong, so none is buffered.
   * Call it on keystrokes; the server drops repeats within a second.
   */
  sendTyping(recipient: string, conversationId: string): boolean {
    return this.connection.send(typingMessage(recipient, conversationId));
  }

  /**
   * Acknowledges user events by id: the server stops keeping them for redelivery (only
   * `high` priority events are kept). Sent together with other pending acks, within 50 ms.
   * Unsent acks are dropped on disconnect: the events are then delivered again, which the
   * client recognises as duplicates and acknowledges once more.
   */
  ack(...ids: string[]): void {
    this.acks.add(ids);
  }

  /**
   * Registers this device for push notifications while the user is offline: an FCM or APNs
   * token (`android`, `ios`), or the browser's Web Push subscription (`web`). The server keeps
   * the registration (answering `push_registered` with its id) until the push service says
   * the device is gone or the app deletes it; registering the same device again replaces it.
   * Resolves with the answer; rejects on an `error` answer or when not connected.
   */
  registerPush(platform: PushPlatform, token: string | WebPushSubscriptionJSON): Promise<PushRegisteredMessage> {
    return registerPush(this.channel, platform, token);
  }

  /**
   * Forgets a push registration of this user (the id {@link registerPush} resolved with), e.g.
   * when the user signs out on this device. Resolves with whether it existed.
   */
  unregisterPush(id: string): Promise<PushUnregisteredMessage> {
    return unregisterPush(this.channel, id);
  }

  /** Sends a `ping` now; false when not connected. The client pings by itself as well. */
  ping(): boolean {
    return this.connection.ping();
  }

  /** Whether `user` is typing in `conversationId` (by the tracker). */
  isTyping(user: string, conversationId: string): boolean {
    return this.tracker.isTyping(user, conversationId);
  }

  /** The users typing in `conversationId` (by the tracker). */
  typingIn(conversationId: string): string[] {
    return this.tracker.typingIn(conversationId);
  }

  // ------------------------------------------------------------------ for the connection

  /** A new connection was welcomed: it starts with nothing, so send the kept state. */
  private restore(): void {
    if (!this.subs.isEmpty) {
      const { events, rooms } = this.subs;
      const subscribe: Record<string, unknown> = { type: 'subscribe', events: [...events], rooms: [...rooms] };
      // Resume every stream with an id, each from its own (ids are ordered within a stream
      // only): the server replays what was missed, then goes live without duplicates.
      const since = this.resume ? this.resumeState.lastEventIds() : {};
      if (Object.keys(since).length > 0) subscribe.since = since;
      this.connection.send(subscribe);
    }
    if (this.presence) this.connection.send({ type: 'presence', ...this.presence });
  }

  private dispatch(msg: ServerMessage): void {
    switch (msg.type) {
      case 'typing':
        this.tracker.indicate(msg.user, msg.conversation_id);
        this.emitter.emit('typing', msg);
        return;
      case 'message':
        this.autoAcknowledge(msg);
        if (!this.resumeState.firstDelivery(msg)) return;
        // The message the indicator announced has arrived: the typing is over.
        if (msg.conversation_id !== undefined) this.tracker.stop(msg.sender, msg.conversation_id, 'message');
        this.emitter.emit('message', msg);
        return;
      case 'notification':
      case 'action':
      case 'event':
        // Room events are not in the offline queue: nothing to acknowledge.
        if (msg.type !== 'event') this.autoAcknowledge(msg);
        if (!this.resumeState.firstDelivery(msg)) return;
        this.emitter.emit(msg.type, msg as never);
        return;
      case 'replay': {
        this.emitter.emit('replay', msg);
        const gap = gapOf(msg);
        if (gap) this.emitter.emit('gap', gap);
        return;
      }
      case 'subscribed':
        this.resumeState.adoptHeads(msg.heads);
        this.emitter.emit('subscribed', msg);
        return;
      case 'error':
      case 'acked':
      case 'push_registered':
      case 'push_unregistered':
      case 'pong':
      case 'presence':
        this.emitter.emit(msg.type, msg as never);
        return;
      default:
        // `welcome` is the connection's; a message type newer than this client is ignored.
        return;
    }
  }

  /** Acknowledges a `high` user event before the duplicate check: the server kept it for a reason. */
  private autoAcknowledge(msg: ServerMessage): void {
    if (!this.autoAck) return;
    const id = highPriorityId(msg);
    if (id !== undefined) this.ack(id);
  }
}
