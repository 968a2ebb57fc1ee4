/**
 * Tokens: reading a JWT's expiry, and the token the next attempt presents, renewed with
 * `getToken` when the kept one is known or likely to be refused.
 */

// A runtime global, declared so that the build needs neither the DOM nor the Node types.
declare function atob(data: string): string;

/**
 * The `exp` claim (Unix seconds) of a JWT, or undefined when it cannot be read. The
 * signature is not checked: this only tells whether a token is worth presenting.
 */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (claims && typeof claims === 'object') {
      const exp = (claims as { exp?: unknown }).exp;
      if (typeof exp === 'number' && Number.isFinite(exp)) return exp;
    }
  } catch {
    // not a JWT we can read
  }
  return undefined;
}

function isExpired(token: string): boolean {
  const exp = tokenExpiry(token);
  return exp !== undefined && exp * 1000 <= Date.now();
}

/** The kept token, and when it must be renewed before the next attempt. */
export class TokenSource {
  /** Set when the server refused the kept token, or may have (see the connection's close handling). */
  private stale = false;

  constructor(
    private token: string | undefined,
    readonly getToken: (() => Promise<string> | string) | undefined,
  ) {}

  /** The next attempt must not present the kept token. */
  markStale(): void {
    this.stale = true;
  }

  /** The token for the next attempt, refreshed when needed; undefined when none is usable. */
  async current(): Promise<string | undefined> {
    const cached = this.token;
    const expired = cached !== undefined && isExpired(cached);
    if (cached !== undefined && !this.stale && !expired) return cached;
    if (!this.getToken) {
      // A static token: use it until it is known to be expired.
      return cached !== undefined && !expired && !this.stale ? cached : undefined;
    }
    const fresh = await this.getToken();
    if (typeof fresh !== 'string' || fresh === '') throw new Error('getToken returned no token');
    this.token = fresh;
    this.stale = false;
    return fresh;
  }
}
