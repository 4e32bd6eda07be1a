import { setTimeout as delay } from 'node:timers/promises';
import { ErrorCode, GroupcastError } from '../errors.js';

/** The lowest rate accepted (64k): below it one 256 KiB DATA frame waits seconds, which no operator means. */
export const MIN_RATE = 64_000;
/** The highest: 1 Tbit/s, beyond any link (and safely inside a double's exact integers over years). */
export const MAX_RATE = 125_000_000_000;
/**
 * Bytes a bucket may save up while idle: a quarter second at its rate, at least one DATA frame's
 * payload (256 KiB). Enough that a sender's turns on the event loop do not waste the rate; small
 * enough that a link idle for a while does not burst far above it.
 */
const BURST_SECONDS = 0.25;
const MIN_BURST = 256 * 1024;

const UNITS: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9 };

/**
 * A rate in bytes per second as an operator writes it: `50M`, `800k`, `1.5G`, `250000` (k, M, G are
 * powers of 1000, like a link's speed; an optional trailing `B` or `/s` is allowed). MIN_RATE..MAX_RATE.
 */
export function parseRate(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:b)?(?:\/s)?$/i.exec(text.trim());
  if (!match) throw new GroupcastError(ErrorCode.USAGE, `not a rate: "${text}" (bytes per second, e.g. 50M, 800k, 1G)`);
  return checkRate(Math.round(Number(match[1]) * (UNITS[(match[2] ?? '').toLowerCase()] ?? 1)), text);
}

/** A rate from JSON (a config file, the control socket): a number of bytes per second in range. */
export function checkRate(value: unknown, shown: string = String(value)): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < MIN_RATE || value > MAX_RATE) {
    throw new GroupcastError(ErrorCode.USAGE, `rate ${shown} out of range: 64k to 125G bytes per second`);
  }
  return value;
}

/**
 * A token bucket: debiting n bytes before sending them keeps the long-run rate at `rate` bytes per
 * second. Tokens may go negative — a sender takes what it needs at once and waits out the debt — so
 * several senders sharing one bucket queue up fairly without a list of waiters.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly burst: number;

  constructor(
    readonly rate: number,
    private readonly now: () => number = performance.now.bind(performance),
  ) {
    checkRate(rate);
    this.burst = Math.max(MIN_BURST, rate * BURST_SECONDS);
    this.tokens = this.burst;
    this.last = this.now();
  }

  /** Takes `bytes`; returns how many milliseconds the sender must wait before sending them (0: none). */
  debit(bytes: number): number {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.rate) * 1000);
  }
}

/**
 * Takes `bytes` from every bucket (a transfer's own cap and the sender's total) and gives the wait the
 * slowest imposes, or undefined when the bytes may go now — the usual case, which allocates nothing,
 * since it runs for every DATA frame. Callers: `const wait = throttle(limits, n); if (wait) await wait;`.
 */
export function throttle(buckets: readonly TokenBucket[], bytes: number): Promise<void> | undefined {
  let waitMs = 0;
  for (const bucket of buckets) waitMs = Math.max(waitMs, bucket.debit(bytes));
  return waitMs > 0 ? delay(waitMs) : undefined;
}
