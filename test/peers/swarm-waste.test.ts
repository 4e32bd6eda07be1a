import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, harness, testPort } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { parseMetrics } from '../support/metrics.js';
import { Cluster, finalPath, MiB, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * What members upload to each other is what they need: a piece is fetched from a second peer only in
 * the endgame's last few pieces, not while the first copy is still being written, and not for half
 * the file. A second copy has no CANCEL, so every one of them takes the serving member's uplink from
 * members that still need other pieces — on links that limit, that doubled the time of a swarm.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 16 * MiB;
const PIECE = 256 * 1024;
/** ENDGAME_PIECES in the member's swarm: the most pieces a member may fetch twice. */
const ENDGAME_PIECES = 4;
const MEMBERS = 4;
const metricsPort = testPort();
let members: Member[];

const scrape = async (port: number): Promise<Map<string, number>> => parseMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());

beforeAll(async () => {
  members = [];
  for (let i = 0; i < MEMBERS; i++) members.push(await c.member(`w${i}`, [GROUP]));
  await c.startServer([{ name: GROUP, members }]);
  for (const [i, m] of members.entries()) {
    m.daemon = h.spawn(m.name, CLIENT_BIN, [
      '--join', GROUP, '--server-id', c.serverId, '--state-dir', m.state, '--downloads', m.downloads, '--name', m.name,
      ...c.network, '--peer-port', '0', '--metrics', `127.0.0.1:${metricsPort + i}`,
    ]);
  }
  for (const m of members) await c.online(m);
});

afterAll(() => h.cleanup());

describe('a swarm does not fetch what it already has coming', () => {
  it('bytes served to peers exceed the bytes kept from peers by at most the endgame\'s few pieces per member', async () => {
    const file = join(await h.dir('source'), 'waste.bin');
    const sha256 = await writeRandomFile(file, SIZE);
    const ran = await c.distribute(GROUP, [file]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    for (const m of members) expect(await sha256File(finalPath(m, GROUP, 'waste.bin'))).toBe(sha256);

    let served = 0;
    let kept = 0;
    for (let i = 0; i < MEMBERS; i++) {
      const metrics = await scrape(metricsPort + i);
      served += metrics.get('groupcast_peer_bytes_served_total')!;
      kept += metrics.get('groupcast_piece_bytes_received_total{source="peers"}')!;
    }
    expect(kept).toBeGreaterThan(SIZE);
    expect(served - kept).toBeLessThanOrEqual(MEMBERS * ENDGAME_PIECES * PIECE);
  });
});
