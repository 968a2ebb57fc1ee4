/**
 * When and how soon to reconnect: the backoff between attempts, and the close codes after
 * which the client stops instead.
 */

/** Reconnect settings. */
export interface ReconnectOptions {
  /** Reconnect after unexpected closes. Default true. */
  enabled?: boolean;
  /** The ceiling of the first delay. Default 1000 ms. */
  initialDelayMs?: number;
  /** The largest delay. Default 60000 ms. */
  maxDelayMs?: number;
  /** Full jitter: wait a uniformly random time in [0, ceiling). Default true. */
  jitter?: boolean;
}

/** {@link ReconnectOptions} with every default applied. */
export type ResolvedReconnectOptions = Required<ReconnectOptions>;

/** The defaults of {@link ReconnectOptions}. */
export const DEFAULT_RECONNECT: Readonly<ResolvedReconnectOptions> = Object.freeze({
  enabled: true,
  initialDelayMs: 1000,
  maxDelayMs: 60_000,
  jitter: true,
});

/**
 * The delay before reconnect attempt `attempt` (0 for the first): the ceiling
 * `min(maxDelayMs, initialDelayMs * 2^attempt)`, or with jitter a uniformly random whole
 * number of milliseconds in `[0, ceiling)` ("full jitter").
 *
 * @param random a source of numbers in [0, 1), `Math.random` by default.
 */
export function backoffDelay(
  attempt: number,
  options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs' | 'jitter'> = {},
  random: () => number = Math.random,
): number {
  const initial = Math.max(0, options.initialDelayMs ?? DEFAULT_RECONNECT.initialDelayMs);
  const max = Math.max(0, options.maxDelayMs ?? DEFAULT_RECONNECT.maxDelayMs);
  const jitter = options.jitter ?? DEFAULT_RECONNECT.jitter;
  const n = Math.max(0, Math.floor(attempt));
  // 2^n overflows to Infinity for large n, which min() caps.
  const ceiling = Math.min(max, initial * 2 ** n);
  if (!jitter) return ceiling;
  const r = random();
  const unit = r >= 0 && r < 1 ? r : 0;
  return Math.floor(unit * ceiling);
}

/** Successive reconnect delays; {@link Backoff.reset} starts over. */
export class Backoff {
  private attempts = 0;

  constructor(
    private readonly options: Pick<ReconnectOptions, 'initialDelayMs' | 'maxDelayMs' | 'jitter'> = {},
    private readonly random: () => number = Math.random,
  ) {}

  /** Attempts handed out since the last reset. */
  get attempt(): number {
    return this.attempts;
  }

  /** The delay of the next attempt. */
  next(): number {
    return backoffDelay(this.attempts++, this.options, this.random);
  }

  /** The next delay is the first one again. */
  reset(): void {
    this.attempts = 0;
  }
}

/** A close code after which the client does not reconnect by itself. */
export function isTerminalCloseCode(code: number, canRefreshToken: boolean): boolean {
  if (code === 4001) return !canRefreshToken;
  // 40xx: "do not reconnect unchanged" (4003 too many connections, 4009 terminated by the app).
  return code >= 4000 && code <= 4099;
}
