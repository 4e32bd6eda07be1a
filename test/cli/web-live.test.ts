import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Distributor } from '../../packages/server/src/delivery/distributor.js';
import type { Membership } from '../../packages/server/src/control/membership.js';
import type { StatusView } from '../../packages/server/src/operator/operations.js';
import { LiveStatus, MAX_EVENT_STREAMS, MAX_STREAM_BUFFERED_BYTES, WEB_PUSH_INTERVAL_MS } from '../../packages/server/src/web/live-status.js';
import { waitUntil } from '../durability/cluster.js';

/**
 * The web view's event streams under a flood of events and a reader that does not read: pushes are
 * coalesced (a burst of progress events costs one snapshot), and a stream whose buffer passes the
 * bound is dropped, not grown.
 */
const MEMBER = 'AAAAAAA-AAAAAAA' as never;

const status = (position: number): StatusView => ({
  server: { id: 'S', name: 'srv', startedAt: 0, interface: '127.0.0.1', tcpPort: 1 },
  groups: [],
  members: [],
  transfers: [{
    id: 't1', name: 'f', group: 'G', size: 100, createdAt: 0,
    deliveries: [{ member: MEMBER, memberName: 'm', state: 'sending', reason: '', waiting: 'sending', bytesSent: position }],
  }],
}) as never;

/** A stand-in for an HTTP response: records what is written, and how much is said to wait unread. */
class FakeStream extends EventEmitter {
  writes: string[] = [];
  writableLength = 0;
  destroyed = false;
  writeHead(): this {
    return this;
  }
  write(text: string): boolean {
    this.writes.push(text);
    return true;
  }
  end(): this {
    return this;
  }
  destroy(): void {
    this.destroyed = true;
    this.emit('close');
  }
  get statuses(): string[] {
    return this.writes.filter((w) => w.startsWith('event: status'));
  }
}

function setup() {
  const distributor = new EventEmitter();
  const membership = new EventEmitter();
  let builds = 0;
  const live = new LiveStatus({
    log: pino({ level: 'silent' }),
    status: async () => status(++builds),
    distributor: distributor as unknown as Distributor,
    membership: membership as unknown as Membership,
  });
  return { live, distributor, builds: () => builds };
}

describe('web view event streams', () => {
  it('coalesces a burst of progress events into one push per interval', async () => {
    const { live, distributor, builds } = setup();
    const stream = new FakeStream();
    try {
      live.open(stream as unknown as ServerResponse);
      await waitUntil(() => stream.statuses.length === 1, 'the first snapshot');
      for (let i = 0; i < 1_000; i++) distributor.emit('progress', 't1', MEMBER, i);
      await waitUntil(() => stream.statuses.length === 2, 'the coalesced push', 10 * WEB_PUSH_INTERVAL_MS);
      expect(builds()).toBe(2);
      expect(JSON.parse(stream.statuses[1]!.split('data: ')[1]!).transfers[0].deliveries[0].position).toBe(999);
    } finally {
      live.close();
    }
  });

  it('drops a stream that lets more than the bound wait unread, and keeps serving the others', async () => {
    const { live, distributor } = setup();
    const slow = new FakeStream();
    const fine = new FakeStream();
    try {
      live.open(slow as unknown as ServerResponse);
      live.open(fine as unknown as ServerResponse);
      await waitUntil(() => fine.statuses.length >= 1 && slow.statuses.length >= 1, 'the first snapshots');
      slow.writableLength = MAX_STREAM_BUFFERED_BYTES + 1;
      distributor.emit('progress', 't1', MEMBER, 50);
      await waitUntil(() => slow.destroyed, 'the slow stream dropped', 10 * WEB_PUSH_INTERVAL_MS);
      expect(live.counters.dropped).toBe(1);
      const seen = fine.statuses.length;
      distributor.emit('progress', 't1', MEMBER, 60);
      await waitUntil(() => fine.statuses.length > seen, 'the other stream served on', 10 * WEB_PUSH_INTERVAL_MS);
    } finally {
      live.close();
    }
  });

  it(`answers a stream past ${MAX_EVENT_STREAMS} with 503 and keeps none of it`, () => {
    const { live } = setup();
    try {
      for (let i = 0; i < MAX_EVENT_STREAMS; i++) live.open(new FakeStream() as unknown as ServerResponse);
      const extra = new FakeStream();
      let code = 0;
      extra.writeHead = ((status: number) => {
        code = status;
        return extra;
      }) as never;
      live.open(extra as unknown as ServerResponse);
      expect(code).toBe(503);
      expect(live.counters.refused).toBe(1);
    } finally {
      live.close();
    }
  });
});
