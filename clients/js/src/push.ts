/**
 * Push registration: this device asks the server to reach it through FCM, APNs or Web Push
 * while the user is offline. The two calls are requests with answers, unlike the rest of the
 * protocol, so they are promises matched against the answer (or an error) that follows.
 */

import type { BusClientEventMap, Emitter } from './events.js';
import type {
  PushPlatform,
  PushRegisteredMessage,
  PushUnregisteredMessage,
  WebPushSubscriptionJSON,
} from './protocol.js';

/** What a request needs of the client: its handlers, and a send that is false when not connected. */
export interface RequestChannel {
  emitter: Emitter;
  send(msg: Record<string, unknown>): boolean;
}

export function registerPush(
  channel: RequestChannel,
  platform: PushPlatform,
  token: string | WebPushSubscriptionJSON,
): Promise<PushRegisteredMessage> {
  return request(channel, { type: 'register_push', platform, token }, 'push_registered', () => true, ['E-WS-INVALID']);
}

export function unregisterPush(channel: RequestChannel, id: string): Promise<PushUnregisteredMessage> {
  return request(channel, { type: 'unregister_push', id }, 'push_unregistered', (m) => m.id === id, [
    'E-WS-INVALID',
    'E-WS-UNAVAILABLE',
  ]);
}

/**
 * Sends `msg` and resolves with the first `answer` event that `matches`; rejects on a server
 * `error` with one of `codes`, or at once when not connected. The handlers go in before the
 * send so that no answer can slip past.
 */
function request<K extends 'push_registered' | 'push_unregistered'>(
  channel: RequestChannel,
  msg: Record<string, unknown>,
  answer: K,
  matches: (m: BusClientEventMap[K]) => boolean,
  codes: string[],
): Promise<BusClientEventMap[K]> {
  const { emitter } = channel;
  return new Promise((resolve, reject) => {
    let offOk: () => void = () => {};
    let offErr: () => void = () => {};
    const done = () => {
      offOk();
      offErr();
    };
    offOk = emitter.on(answer, (m: BusClientEventMap[K]) => {
      if (!matches(m)) return;
      done();
      resolve(m);
    });
    offErr = emitter.on('error', (e) => {
      if (!codes.includes(e.code)) return;
      done();
      reject(new Error(e.message));
    });
    if (!channel.send(msg)) {
      done();
      reject(new Error('not connected'));
    }
  });
}
