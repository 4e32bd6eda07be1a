import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Peer-assisted delivery on one host (loopback): members pull pieces from each other and from the
 * server, every copy verified, and the server sends each piece about once.
 */
const h = harness();
const c = new Cluster(h, { peers: true });
const GROUP = 'Developers';
const SIZE = 16 * MiB;
let members: Member[];

beforeAll(async () => {
  members = [];
  for (let i = 0; i < 4; i++) members.push(await c.member(`m${i}`, [GROUP]));
  await c.startServer([{ name: GROUP, members }]);
  await c.startOnline(members);
});

afterAll(() => h.cleanup());

describe('swarm on loopback', () => {
  it('every member ends with a verified copy and the server sends well under one copy each', async () => {
    const file = join(await h.dir('source'), 'swarm.bin');
    const sha256 = await writeRandomFile(file, SIZE);
    const ran = await c.distribute(GROUP, [file]);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    for (const member of members) expect(await sha256File(finalPath(member, GROUP, 'swarm.bin'))).toBe(sha256);
    const sent = (await c.deliveries()).reduce((sum, d) => sum + d.bytesSent, 0);
    expect(sent).toBeLessThan(2 * SIZE);
  });
});
