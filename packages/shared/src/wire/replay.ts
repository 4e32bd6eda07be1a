import { CLOCK_WINDOW_MS } from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import type { Datagram } from './control.js';

/**
 * How many slices the window is cut into for expiry. Remembered pairs live in the slice of their
 * expiry time, and whole slices are dropped once they are past: a pair is kept at most one slice
 * (window / 16, 3.75 s by default) longer than needed, and expiry never looks at a pair twice.
 */
const SLICES_PER_WINDOW = 16;

/** Pairs whose expiry falls in one slice, in insertion order; `head` skips those evicted for room. */
interface Slice {
  keys: string[];
  head: number;
}

/**
 * Refuses datagrams outside the clock window and datagrams seen before. A nonce only needs
 * remembering while its timestamp is inside the window; after that the window refuses it anyway,
 * so the cache is bounded by the datagram rate times the window, and capped outright.
 *
 * Expiry costs O(1) per admitted datagram whatever the contents (a sender chooses its timestamps, so
 * it must not be able to make every admit walk the table): pairs are filed by expiry slice, a passed
 * slice is dropped whole, and when the table is full the pair that expires soonest is evicted. The
 * number of slices alive is bounded (timestamps are within ±window of now), so finding the soonest
 * one looks at no more than 2 × SLICES_PER_WINDOW + 2 slices.
 */
export class ReplayGuard {
  /** Pair → the slice it is filed in. */
  private readonly seen = new Map<string, number>();
  private readonly slices = new Map<number, Slice>();
  private readonly sliceMs: number;
  private sweptUpTo = -Infinity;
  /** Pairs looked at by expiry and eviction, for tests that check the work per admit stays constant. */
  readonly work = { touched: 0 };

  constructor(
    private readonly windowMs = CLOCK_WINDOW_MS,
    private readonly capacity = 65_536,
  ) {
    this.sliceMs = Math.max(1, Math.ceil(windowMs / SLICES_PER_WINDOW));
  }

  /** Throws STALE or REPLAY; otherwise remembers the datagram. */
  admit(datagram: Pick<Datagram, 'publicKey' | 'nonce' | 'timestamp'>, now: number): void {
    if (Math.abs(now - datagram.timestamp) > this.windowMs) {
      throw new GroupcastError(ErrorCode.STALE, `timestamp off by ${now - datagram.timestamp} ms`);
    }
    const key = datagram.publicKey.toString('base64') + datagram.nonce.toString('base64');
    if (this.seen.has(key)) throw new GroupcastError(ErrorCode.REPLAY, 'datagram seen before');
    this.sweep(now);
    // Under a flood of fresh nonces nothing has expired: forget the pair that would expire soonest.
    if (this.seen.size >= this.capacity) this.evictSoonest();
    const index = Math.floor((datagram.timestamp + this.windowMs) / this.sliceMs);
    let slice = this.slices.get(index);
    if (!slice) {
      slice = { keys: [], head: 0 };
      this.slices.set(index, slice);
    }
    slice.keys.push(key);
    this.seen.set(key, index);
  }

  /** Drops every slice that ended before `now`; runs once per slice of time, not per datagram. */
  private sweep(now: number): void {
    const current = Math.floor(now / this.sliceMs);
    if (current <= this.sweptUpTo) return;
    this.sweptUpTo = current;
    for (const [index, slice] of this.slices) if (index < current) this.dropSlice(index, slice);
  }

  private dropSlice(index: number, slice: Slice): void {
    for (let i = slice.head; i < slice.keys.length; i++) this.forget(slice.keys[i] as string, index);
    this.slices.delete(index);
  }

  private evictSoonest(): void {
    let soonest: number | undefined;
    for (const index of this.slices.keys()) if (soonest === undefined || index < soonest) soonest = index;
    if (soonest === undefined) return;
    const slice = this.slices.get(soonest) as Slice;
    this.forget(slice.keys[slice.head++] as string, soonest);
    if (slice.head >= slice.keys.length) this.slices.delete(soonest);
    // Evicted pairs are skipped, not spliced out; drop them once they are half the slice, so a flood
    // into one slice does not keep its whole history alive (amortised O(1) per eviction).
    else if (slice.head * 2 > slice.keys.length) {
      slice.keys = slice.keys.slice(slice.head);
      slice.head = 0;
    }
  }

  /** A pair evicted and seen again since lives in another slice: only its current filing counts. */
  private forget(key: string, index: number): void {
    this.work.touched++;
    if (this.seen.get(key) === index) this.seen.delete(key);
  }
}
