import { randomBytes } from 'node:crypto';
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitForNew, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Only what changed travels, on the swarm's pull path (PROTOCOL.md §7.5, §7.6): members replacing a
 * version seed their partial from the old file before they open it, so their BITFIELD already lists
 * those pieces and neither the server nor a peer sends them.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 16 * MiB;
const PIECE = 256 * 1024;
let members: Member[];

beforeAll(async () => {
  members = await c.startGroup(GROUP, ['m0', 'm1']);
});

afterAll(() => h.cleanup());

describe('a new version pulled through the swarm', () => {
  it('each member takes only the changed pieces, from the server or its peer', async () => {
    const v1 = join(await h.dir('v1'), 'swarm.img');
    await writeRandomFile(v1, SIZE);
    const first = await c.distribute(GROUP, [v1]);
    expect(first.code, first.stdout + first.stderr).toBe(0);

    const v2 = join(await h.dir('v2'), 'swarm.img');
    await copyFile(v1, v2);
    const handle = await open(v2, 'r+');
    await handle.write(randomBytes(MiB), 0, MiB, 4 * MiB);
    await handle.close();
    const sha256 = await sha256File(v2);
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'swarm.img' });
    const seeded = members.map((m) => waitForNew(m.daemon!, 'pieces found in the version being replaced', { file: 'swarm.img' }, 60_000));
    const ran = await c.distribute(GROUP, [v2]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    const transfer = String((await recorded).transfer);
    for (const found of seeded) expect(Number((await found).pieces)).toBe(SIZE / PIECE - 4);
    // The swarm's path, not the stream: each member pulled, starting from the seeded pieces.
    for (const member of members) {
      const pulled = await member.daemon!.waitForMsg('resuming from held pieces', { transfer });
      expect(Number(pulled.held), member.name).toBe(SIZE / PIECE - 4);
    }
    const deliveries = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(deliveries).toHaveLength(2);
    for (const d of deliveries) {
      expect(d.bytesSent + d.bytesFromPeers, d.member).toBeGreaterThanOrEqual(MiB);
      expect(d.bytesSent + d.bytesFromPeers, d.member).toBeLessThanOrEqual(MiB + 2 * PIECE);
    }
    for (const member of members) expect(await sha256File(finalPath(member, GROUP, 'swarm.img'))).toBe(sha256);
  });
});
