import { afterAll, describe, expect, it } from 'vitest';
import { encodeFrame, shortId, type Identity } from '../../packages/shared/src/index.js';
import { harness } from '../support/daemons.js';
import { identityIn } from '../security/tools.js';
import { connectionCounters, HostileLink, MiB, rssOf, startServer, type Server } from './session-tools.js';

/**
 * A member that says HELLO, stops reading and streams PINGs must not grow the server: every PONG goes
 * out through the session's one write path, which does not answer faster than the member reads, and a
 * member that keeps output waiting without taking it is disconnected: by the progress deadline (its window
 * shortened for the test with GC_PROGRESS_WINDOW_MS), or with the default window by the heartbeat (its
 * timeout shortened with --heartbeat-timeout, as the default 15 s would be too, well inside the window),
 * which sees that the member talks but takes nothing. The flood is bounded: 64 MiB of PINGs, written once.
 */
const h = harness();
const FLOOD_BYTES = 64 * MiB;
/** Far above what the fixed server keeps for a member (a few MiB), far below what the unbounded one did (about 21x the flood). */
const RSS_GROWTH_LIMIT = 128 * MiB;

/** `count` PING frames back to back, in one buffer. */
function pings(count: number): Buffer {
  const ping = encodeFrame({ type: 'ping', time: Date.now() });
  const buffer = Buffer.alloc(count * ping.length);
  for (let i = 0; i < count; i++) ping.copy(buffer, i * ping.length);
  return buffer;
}

/** Floods from a member that said HELLO and reads nothing; resolves with the server's close of it and its RSS before and at the peak. */
async function flood(server: Server, hostile: Identity, links: HostileLink[]) {
  const pid = server.daemon.proc.pid!;
  const link = await HostileLink.open(server.tcpPort, hostile);
  links.push(link);
  link.hello('flooder');
  await server.daemon.waitForMsg('member online', { member: hostile.signer.id });
  const before = await rssOf(pid);
  link.stopReading();

  const batch = pings(MiB / 16);
  for (let sent = 0; sent < FLOOD_BYTES; sent += batch.length) link.socket.write(batch);

  let peak = before;
  const sampler = setInterval(() => {
    rssOf(pid).then((rss) => (peak = Math.max(peak, rss)), () => undefined);
  }, 50);
  try {
    const closed = await server.daemon.waitForLog(
      (l) => l.msg === 'member connection closed' && l.member === shortId(hostile.signer.id),
      40_000, 'the flooder disconnected',
    );
    peak = Math.max(peak, await rssOf(pid));
    // Reading again shows the member the end of the connection.
    link.socket.resume();
    await link.whenClosed();
    return { err: closed.err as { code?: string; message?: string } | undefined, before, peak };
  } finally {
    clearInterval(sampler);
  }
}

describe('a member that floods PINGs and reads nothing', () => {
  const links: HostileLink[] = [];

  afterAll(async () => {
    for (const link of links) link.destroy();
    await h.cleanup();
  });

  it.concurrent('keeps the server\'s memory bounded, and the progress deadline disconnects it as stalled', async () => {
    const hostile = await identityIn(await h.dir('flooder'), 'flooder');
    const server = await startServer(h, [{ name: 'Developers', members: [hostile.signer.id] }], [], { GC_PROGRESS_WINDOW_MS: '2000' });
    const { err, before, peak } = await flood(server, hostile, links);
    console.info(`server RSS under a ${FLOOD_BYTES / MiB} MiB PING flood: ${(before / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB`);
    expect(peak - before).toBeLessThan(RSS_GROWTH_LIMIT);
    expect(err?.code).toBe('GC_ERR_STALLED');
    expect(err?.message).toMatch(/^stalled: took .* in 2\.0s, under the floor of 1\.00 MiB$/);
    // Counted, and the server still answers.
    expect((await connectionCounters(server)).stalled).toBe(1);
  });

  it.concurrent('with the daemon\'s progress window the heartbeat finds it first, as a stall, not as a dead link', async () => {
    const hostile = await identityIn(await h.dir('flooder-default'), 'flooder');
    const server = await startServer(h, [{ name: 'Developers', members: [hostile.signer.id] }], ['--heartbeat-timeout', '5s']);
    const { err, before, peak } = await flood(server, hostile, links);
    expect(peak - before).toBeLessThan(RSS_GROWTH_LIMIT);
    expect(err).toMatchObject({ code: 'GC_ERR_STALLED', message: 'stalled: took no output for 5.0s' });
    expect((await connectionCounters(server)).stalled).toBe(1);
  });
});
