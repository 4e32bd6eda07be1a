import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId, type Identity } from '../../packages/shared/src/index.js';
import { harness } from '../support/daemons.js';
import { identityIn } from '../security/tools.js';
import { connectionCounters, HostileLink, MiB, rssOf, startServer, type Server } from './session-tools.js';

/**
 * A member that says HELLO, stops reading and streams PINGs must not grow the server: every PONG goes
 * out through the session's one write path, which does not answer faster than the member reads, and a
 * member that keeps output waiting without taking it is disconnected (the progress window is shortened
 * for the test with GC_PROGRESS_WINDOW_MS). The flood is bounded: 64 MiB of PINGs, written once.
 */
const h = harness();
const FLOOD_BYTES = 64 * MiB;
const PING_FRAME = 13; // length (4), type (1), time (8)
/** Far above what the fixed server keeps for a member (a few MiB), far below what the unbounded one did (about 21x the flood). */
const RSS_GROWTH_LIMIT = 128 * MiB;

/** `count` PING frames back to back, in one buffer. */
function pings(count: number): Buffer {
  const buffer = Buffer.alloc(count * PING_FRAME);
  for (let i = 0; i < count; i++) {
    const at = i * PING_FRAME;
    buffer.writeUInt32BE(9, at);
    buffer.writeUInt8(7, at + 4);
    buffer.writeBigUInt64BE(BigInt(i), at + 5);
  }
  return buffer;
}

describe('a member that floods PINGs and reads nothing', () => {
  let server: Server;
  let hostile: Identity;
  let link: HostileLink | undefined;

  beforeAll(async () => {
    hostile = await identityIn(await h.dir('flooder'), 'flooder');
    server = await startServer(h, [{ name: 'Developers', members: [hostile.signer.id] }], [], { GC_PROGRESS_WINDOW_MS: '2000' });
  });

  afterAll(async () => {
    link?.destroy();
    await h.cleanup();
  });

  it('keeps the server\'s memory bounded and is disconnected as stalled', async () => {
    const pid = server.daemon.proc.pid!;
    link = await HostileLink.open(server.tcpPort, hostile);
    link.hello('flooder');
    await server.daemon.waitForMsg('member online', { member: hostile.signer.id });
    const before = await rssOf(pid);
    link.stopReading();

    const batch = pings(Math.floor(MiB / PING_FRAME));
    for (let sent = 0; sent < FLOOD_BYTES; sent += batch.length) link.socket.write(batch);

    let peak = before;
    const sampler = setInterval(() => {
      rssOf(pid).then((rss) => (peak = Math.max(peak, rss)), () => undefined);
    }, 50);
    try {
      await server.daemon.waitForLog(
        (l) => l.msg === 'member connection closed' && l.member === shortId(hostile.signer.id)
          && (l.err as { code?: string } | undefined)?.code === 'GC_ERR_STALLED',
        30_000, 'the flooder disconnected as stalled',
      );
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, await rssOf(pid));
    console.info(`server RSS under a ${FLOOD_BYTES / MiB} MiB PING flood: ${(before / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB`);
    expect(peak - before).toBeLessThan(RSS_GROWTH_LIMIT);

    // Reading again shows the member the end of the connection; the server counted the stall and still answers.
    link.socket.resume();
    await link.whenClosed();
    expect((await connectionCounters(server)).stalled).toBe(1);
  });
});
