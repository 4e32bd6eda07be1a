import { CLOCK_WINDOW_MS } from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import type { Datagram } from './control.js';

/**
 * Refuses datagrams outside the clock window and datagrams seen before. A nonce only needs
 * remembering while its timestamp is inside the window; after that the window refuses it anyway,
 * so the cache is bounded by the datagram rate times the window, and capped outright.
 */
export class ReplayGuard {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly windowMs = CLOCK_WINDOW_MS,
    private readonly capacity = 65_536,
  ) {}

  /** Throws STALE or REPLAY; otherwise remembers the datagram. */
  admit(datagram: Pick<Datagram, 'publicKey' | 'nonce' | 'timestamp'>, now: number): void {
    if (Math.abs(now - datagram.timestamp) > this.windowMs) {
      throw new GroupcastError(ErrorCode.STALE, `timestamp off by ${now - datagram.timestamp} ms`);
    }
    const key = datagram.publicKey.toString('base64') + datagram.nonce.toString('base64');
    if (this.seen.has(key)) throw new GroupcastError(ErrorCode.REPLAY, 'datagram seen before');
    if (this.seen.size >= this.capacity) this.prune(now);
    this.seen.set(key, datagram.timestamp + this.windowMs);
  }

  private prune(now: number): void {
    for (const [key, expiry] of this.seen) if (expiry < now) this.seen.delete(key);
    // Under a flood of fresh nonces nothing has expired: drop the oldest half rather than grow.
    if (this.seen.size >= this.capacity) {
      let drop = this.seen.size / 2;
      for (const key of this.seen.keys()) {
        if (drop-- <= 0) break;
        this.seen.delete(key);
      }
    }
  }
}
