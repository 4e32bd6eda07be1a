/**
 * Token buckets, one per key (a source address, an id, or one key for everyone): of failed attempts
 * (each failure takes a token; `blocked` asks first), or of requests (`take` asks and takes in one).
 * A key whose bucket is empty is blocked until a token drips back. Keys
 * come from the network, so the table is capped: beyond `maxKeys` the oldest entries are forgotten
 * (a forgotten key starts full again, which is why a global key is kept beside the per-source ones).
 */
export class AttemptLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly options: { burst: number; refillMs: number; maxKeys?: number },
  ) {}

  private level(key: string, now: number): number {
    const bucket = this.buckets.get(key);
    if (!bucket) return this.options.burst;
    const tokens = Math.min(this.options.burst, bucket.tokens + (now - bucket.at) / this.options.refillMs);
    if (tokens >= this.options.burst) this.buckets.delete(key);
    return tokens;
  }

  blocked(key: string, now: number): boolean {
    return this.level(key, now) < 1;
  }

  /** Takes a token if there is one: false means over the rate, refuse the request. */
  take(key: string, now: number): boolean {
    if (this.blocked(key, now)) return false;
    this.fail(key, now);
    return true;
  }

  fail(key: string, now: number): void {
    const tokens = Math.max(0, this.level(key, now) - 1);
    this.buckets.delete(key);
    this.buckets.set(key, { tokens, at: now });
    const maxKeys = this.options.maxKeys ?? 4096;
    for (const oldest of this.buckets.keys()) {
      if (this.buckets.size <= maxKeys) break;
      this.buckets.delete(oldest);
    }
  }
}
