import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { Cluster, finalPath, waitForNew, type Member } from '../durability/cluster.js';
import { listTree, makeSampleTree, underUmask } from './tree-fixtures.js';

/**
 * Directories (issue 11, PROTOCOL.md §7.7): `distribute <group> <dir>` sends the tree as one transfer,
 * and the member places it at `<group>/<name>` as a link to its version directory, identical to the source.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let bob: Member;

afterAll(() => h.cleanup());

beforeAll(async () => {
  alice = await c.member('alice', [GROUP]);
  bob = await c.member('bob', [GROUP]);
  await c.startServer([{ name: GROUP, members: [alice, bob] }]);
  await c.startOnline([alice, bob]);
});

describe('distribute a directory', () => {
  it('arrives identical at every member: paths, kinds, modes, sizes and contents, as one transfer', async () => {
    const source = join(await h.dir('src'), 'site');
    await makeSampleTree(source);
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'site' });
    const ran = await c.distribute(GROUP, [`${source}/`, '--json']);
    expect(ran.code, ran.stdout + ran.stderr).toBe(0);
    const result = JSON.parse(ran.stdout) as { transfers: Array<{ kind?: string; files?: number; name: string }>; deliveries: Array<{ state: string; files?: number }> };
    expect(result.transfers).toHaveLength(1);
    expect(result.transfers[0]).toMatchObject({ name: 'site', kind: 'tree', files: 6 });
    expect(result.deliveries.map((d) => [d.state, d.files])).toEqual([['delivered', 6], ['delivered', 6]]);
    const transfer = String((await recorded).transfer);
    const expected = underUmask(await listTree(source));
    for (const member of [alice, bob]) {
      const placed = finalPath(member, GROUP, 'site');
      expect((await lstat(placed)).isSymbolicLink()).toBe(true);
      expect(await readlink(placed)).toBe(join('..', '.groupcast-versions', GROUP, 'site', transfer));
      expect(await listTree(`${placed}/`)).toEqual(expected);
      // Nothing else is left: no staging, no temp link.
      expect(await readdir(join(member.downloads, '.groupcast-partial'))).toEqual([]);
      expect(await readdir(join(member.downloads, GROUP))).toEqual(['site']);
    }
    const status = await c.statusText();
    expect(status).toContain('site/ (6 files)');
  });
});
