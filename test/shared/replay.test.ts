import { describe, expect, it } from 'vitest';
import { CLOCK_WINDOW_MS } from '../../packages/shared/src/constants.js';
import { ErrorCode } from '../../packages/shared/src/errors.js';
import { ReplayGuard } from '../../packages/shared/src/wire/replay.js';
import { counting, expectCode, memberSigner, serverSigner } from './helpers.js';

const NOW = Date.UTC(2026, 0, 1);

function datagram(n: number, timestamp = NOW, publicKey = memberSigner.publicKey): { publicKey: Buffer; nonce: Buffer; timestamp: number } {
  const nonce = Buffer.alloc(16);
  nonce.writeUInt32BE(n, 12);
  return { publicKey, nonce, timestamp };
}

describe('ReplayGuard', () => {
  it('admits a fresh datagram once; the same nonce again is REPLAY', () => {
    const guard = new ReplayGuard();
    guard.admit(datagram(1), NOW);
    expectCode(() => guard.admit(datagram(1), NOW + 10), ErrorCode.REPLAY);
    expectCode(() => guard.admit(datagram(1, NOW + 5), NOW + 10), ErrorCode.REPLAY);
    expect(() => guard.admit(datagram(2), NOW)).not.toThrow();
  });

  it('scopes nonces to the sender key', () => {
    const guard = new ReplayGuard();
    guard.admit(datagram(1), NOW);
    expect(() => guard.admit(datagram(1, NOW, serverSigner.publicKey), NOW)).not.toThrow();
  });

  it('refuses timestamps outside the window on either side as STALE, and admits the edges', () => {
    const guard = new ReplayGuard();
    expectCode(() => guard.admit(datagram(1, NOW - CLOCK_WINDOW_MS - 1), NOW), ErrorCode.STALE);
    expectCode(() => guard.admit(datagram(2, NOW + CLOCK_WINDOW_MS + 1), NOW), ErrorCode.STALE);
    expectCode(() => guard.admit(datagram(3, 0), NOW), ErrorCode.STALE);
    expect(() => guard.admit(datagram(4, NOW - CLOCK_WINDOW_MS), NOW)).not.toThrow();
    expect(() => guard.admit(datagram(5, NOW + CLOCK_WINDOW_MS), NOW)).not.toThrow();
  });

  it('a stale replay is STALE, not REPLAY: the window refuses it before memory is needed', () => {
    const guard = new ReplayGuard();
    guard.admit(datagram(1), NOW);
    expectCode(() => guard.admit(datagram(1), NOW + CLOCK_WINDOW_MS + 1), ErrorCode.STALE);
  });

  it('honours a custom window', () => {
    const guard = new ReplayGuard(1_000);
    expectCode(() => guard.admit(datagram(1, NOW - 1_001), NOW), ErrorCode.STALE);
    expect(() => guard.admit(datagram(2, NOW - 1_000), NOW)).not.toThrow();
  });

  it('stays bounded under a flood of fresh nonces: the oldest are forgotten, the newest remembered', () => {
    const capacity = 64;
    const guard = new ReplayGuard(CLOCK_WINDOW_MS, capacity);
    const flood = 10_000;
    for (let n = 0; n < flood; n++) guard.admit(datagram(n), NOW);
    // Memory is capped: the first nonces were dropped to make room, so they are no longer recognised…
    expect(() => guard.admit(datagram(0), NOW)).not.toThrow();
    expect(() => guard.admit(datagram(1), NOW)).not.toThrow();
    // …while the most recent ones still are.
    expectCode(() => guard.admit(datagram(flood - 1), NOW), ErrorCode.REPLAY);
    expectCode(() => guard.admit(datagram(flood - 2), NOW), ErrorCode.REPLAY);
  });

  it('remembers at least half its capacity of the newest nonces', () => {
    const capacity = 64;
    const guard = new ReplayGuard(CLOCK_WINDOW_MS, capacity);
    for (let n = 0; n < 1_000; n++) guard.admit(datagram(n), NOW);
    for (let n = 1_000 - capacity / 2; n < 1_000; n++) expectCode(() => guard.admit(datagram(n), NOW), ErrorCode.REPLAY);
  });

  it('makes room by dropping expired nonces first', () => {
    const guard = new ReplayGuard(CLOCK_WINDOW_MS, 4);
    // Two nonces that stay inside the window for a long time go in first…
    guard.admit(datagram(1, NOW + 50_000), NOW);
    guard.admit(datagram(2, NOW + 50_000), NOW);
    // …then two that expire soon.
    guard.admit(datagram(3, NOW), NOW);
    guard.admit(datagram(4, NOW), NOW);
    const later = NOW + CLOCK_WINDOW_MS + 1_000;
    guard.admit(datagram(5, later), later);
    // The expired ones made the room; the long-lived ones, though inserted first, are still known.
    expectCode(() => guard.admit(datagram(1, NOW + 50_000), later), ErrorCode.REPLAY);
    expectCode(() => guard.admit(datagram(2, NOW + 50_000), later), ErrorCode.REPLAY);
    expectCode(() => guard.admit(datagram(5, later), later), ErrorCode.REPLAY);
  });

  it('distinct nonces never collide', () => {
    const guard = new ReplayGuard();
    const a = { publicKey: memberSigner.publicKey, nonce: counting(0, 16), timestamp: NOW };
    const b = { publicKey: memberSigner.publicKey, nonce: counting(1, 16), timestamp: NOW };
    guard.admit(a, NOW);
    expect(() => guard.admit(b, NOW)).not.toThrow();
  });

  describe('expiry stays cheap whatever the timestamps (issue 9, item 11)', () => {
    const CAPACITY = 65_536;
    const ADVERSARIAL = 2_000;

    /** 65 535 pairs that stay for the whole window, then pairs at the window's edge, expired 1 ms after they arrive. */
    function adversarial(guard: ReplayGuard): number {
      for (let n = 0; n < CAPACITY - 1; n++) guard.admit(datagram(n, NOW + CLOCK_WINDOW_MS), NOW);
      const start = performance.now();
      for (let i = 0; i < ADVERSARIAL; i++) {
        const now = NOW + i;
        guard.admit(datagram(CAPACITY + i, now - CLOCK_WINDOW_MS), now);
      }
      return (performance.now() - start) / ADVERSARIAL;
    }

    /** The same number of admits, all with the sender's clock equal to ours. */
    function benign(guard: ReplayGuard): number {
      for (let n = 0; n < CAPACITY - 1; n++) guard.admit(datagram(n), NOW);
      const start = performance.now();
      for (let i = 0; i < ADVERSARIAL; i++) guard.admit(datagram(CAPACITY + i, NOW + i), NOW + i);
      return (performance.now() - start) / ADVERSARIAL;
    }

    it('each admit touches O(1) remembered pairs, not the table', () => {
      const guard = new ReplayGuard(CLOCK_WINDOW_MS, CAPACITY);
      for (let n = 0; n < CAPACITY - 1; n++) guard.admit(datagram(n, NOW + CLOCK_WINDOW_MS), NOW);
      const before = guard.work.touched;
      for (let i = 0; i < ADVERSARIAL; i++) {
        const now = NOW + i;
        guard.admit(datagram(CAPACITY + i, now - CLOCK_WINDOW_MS), now);
      }
      // Each admit forgets at most the one pair it makes room for, plus its share of dropped slices.
      expect(guard.work.touched - before).toBeLessThanOrEqual(2 * ADVERSARIAL);
    });

    it('an adversarial pattern costs about what a benign one does per admit', () => {
      const slow = adversarial(new ReplayGuard(CLOCK_WINDOW_MS, CAPACITY));
      const fast = benign(new ReplayGuard(CLOCK_WINDOW_MS, CAPACITY));
      // Walking the table made this ~190x; a generous bound that a loaded machine still meets.
      expect(slow / Math.max(fast, 0.001)).toBeLessThan(20);
    });

    it('still refuses replays inside the window after the adversarial pattern', () => {
      const guard = new ReplayGuard(CLOCK_WINDOW_MS, CAPACITY);
      adversarial(guard);
      const now = NOW + ADVERSARIAL;
      // Long-lived pairs not yet evicted, and the newest short-lived one, are still refused.
      expectCode(() => guard.admit(datagram(CAPACITY - 2, NOW + CLOCK_WINDOW_MS), now), ErrorCode.REPLAY);
      const last = CAPACITY + ADVERSARIAL - 1;
      expectCode(() => guard.admit(datagram(last, now - 1 - CLOCK_WINDOW_MS), now - 1), ErrorCode.REPLAY);
    });

    it('forgets pairs once their slice of time has passed, and stays within capacity', () => {
      const guard = new ReplayGuard(1_000, 8);
      for (let n = 0; n < 8; n++) guard.admit(datagram(n), NOW);
      // Inside the window every one is a replay…
      for (let n = 0; n < 8; n++) expectCode(() => guard.admit(datagram(n), NOW + 500), ErrorCode.REPLAY);
      // …a ninth evicts one, and the rest are still remembered.
      guard.admit(datagram(8), NOW + 500);
      expectCode(() => guard.admit(datagram(7), NOW + 500), ErrorCode.REPLAY);
      expectCode(() => guard.admit(datagram(8), NOW + 500), ErrorCode.REPLAY);
      // Past the window (and its slice) they are stale by timestamp, and the table has emptied.
      expectCode(() => guard.admit(datagram(1), NOW + 2_000), ErrorCode.STALE);
      guard.admit(datagram(100, NOW + 2_000), NOW + 2_000);
      for (let n = 101; n < 108; n++) guard.admit(datagram(n, NOW + 2_000), NOW + 2_000);
      expectCode(() => guard.admit(datagram(100, NOW + 2_000), NOW + 2_000), ErrorCode.REPLAY);
    });
  });
});
