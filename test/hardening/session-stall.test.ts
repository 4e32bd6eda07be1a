import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId, type Identity } from '../../packages/shared/src/index.js';
import { CLIENT_BIN, SERVER_BIN, harness, idOf } from '../support/daemons.js';
import { identityIn, joinAs } from '../security/tools.js';
import { deliveries, HostileLink, MiB, startMember, startServer, type Server } from './session-tools.js';

/**
 * Members that accept an offer and then stop reading, while their PINGs keep the heartbeat happy, must
 * not hold the server's delivery slots forever. With `--concurrency 2` and two such members holding
 * both slots, an honest member that joins afterwards still gets its file; the stalled deliveries go
 * back to pending, charged, with the stall as the reason. The progress window is shortened for the
 * test (GC_PROGRESS_WINDOW_MS); the floor is the daemon's.
 */
const h = harness();
const STALLED = 2;
const WINDOW_MS = 2_000;

describe('a member that stops reading during a delivery', () => {
  let server: Server;
  let hostiles: Identity[];
  let honestState: string;
  const links: HostileLink[] = [];
  const pings: NodeJS.Timeout[] = [];

  beforeAll(async () => {
    hostiles = await Promise.all(Array.from({ length: STALLED }, async (_, i) => identityIn(await h.dir(`stall-${i}`), `stall-${i}`)));
    honestState = await h.dir('honest-state');
    const honestId = await idOf(h, CLIENT_BIN, honestState);
    server = await startServer(
      h, [{ name: 'Developers', members: [honestId, ...hostiles.map((id) => id.signer.id)] }],
      ['--concurrency', String(STALLED)], { GC_PROGRESS_WINDOW_MS: String(WINDOW_MS) },
    );
  });

  afterAll(async () => {
    for (const timer of pings) clearInterval(timer);
    for (const link of links) link.destroy();
    await h.cleanup();
  });

  it('the honest member still receives and verifies; the stalled deliveries are pending, charged, "stalled"', async () => {
    // The stalled members: joined, connected, and on OFFER they ACCEPT from 0 and read nothing more,
    // but PING every second so the server always hears from them.
    for (const identity of hostiles) {
      await joinAs(identity.signer, 'Developers', server.udpPort);
      const link = await HostileLink.open(server.tcpPort, identity, (frame, self) => {
        if (frame.type !== 'offer') return;
        self.send({ type: 'accept', transfer: frame.transfer, offset: 0 });
        self.stopReading();
      });
      link.hello(`stall-${links.length}`);
      links.push(link);
      pings.push(setInterval(() => link.send({ type: 'ping', time: Date.now() }), 1_000));
      await server.daemon.waitForMsg('member online', { member: identity.signer.id });
    }

    const file = join(await h.dir('files'), 'release.bin');
    const content = randomBytes(32 * MiB);
    await writeFile(file, content);
    const distribution = h.run(SERVER_BIN, ['distribute', 'Developers', file, '--state-dir', server.state, '--json'], 90_000)
      .catch((err: Error) => ({ code: null, stdout: '', stderr: err.message }));
    // Both slots are taken before the honest member exists: its delivery can only queue behind them.
    for (const link of links) await link.frame('offer');

    const started = Date.now();
    const downloads = await h.dir('honest-dl');
    const honest = startMember(h, server, 'honest', honestState, downloads, ['Developers']);
    await honest.waitForMsg('received', { file: 'release.bin' }, 60_000);
    const tookMs = Date.now() - started;
    const received = await readFile(join(downloads, 'Developers', 'release.bin'));
    expect(createHash('sha256').update(received).digest('hex')).toBe(createHash('sha256').update(content).digest('hex'));
    console.info(`honest delivery with ${STALLED} stalled members and --concurrency ${STALLED}: ${tookMs} ms`);

    const stalled = (await deliveries(server)).filter((d) => hostiles.some((id) => id.signer.id === d.member));
    expect(stalled).toHaveLength(STALLED);
    for (const delivery of stalled) {
      expect(delivery.state).toBe('pending');
      expect(delivery.reason).toMatch(/^stalled: took .* in 2\.0s, under the floor of 1\.00 MiB$/);
      expect(delivery.attempts).toBe(1);
    }
    for (const identity of hostiles) {
      const closed = server.daemon.logs.find((l) => l.msg === 'member connection closed' && l.member === shortId(identity.signer.id)
        && (l.err as { code?: string } | undefined)?.code === 'GC_ERR_STALLED');
      expect(closed, `a stall logged for ${identity.signer.id}`).toBeDefined();
    }
    // The operator's command is not held up by them either.
    const result = await distribution;
    expect(result.code, result.stderr).not.toBeNull();
  });
});
