import { spawnSync } from 'node:child_process';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { deliverTo } from '../versions/delivered.js';
import { Cluster, finalPath } from '../durability/cluster.js';
import { listTree, makeSampleTree, underUmask } from './tree-fixtures.js';

/**
 * A downloads directory with a default ACL (an administrator's way to share it with a team): under one,
 * the kernel ignores the umask and open's mode is only an upper bound, here cut to rw-r--r--. A tree's
 * files still get exactly their modes under the member's umask (before: its small files, created with
 * their mode rather than chmodded, lost the executable bit), and so the placed version still matches
 * its manifest, and the next version replaces it (before: "has another mode", a name clash for good).
 */
const setfacl = spawnSync('setfacl', ['--version']).status === 0;
if (!setfacl) console.warn('[tree-acl] skipped: needs setfacl (Debian package acl)');

const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';

afterAll(() => h.cleanup());

describe.skipIf(!setfacl)('a member whose downloads directory has a default ACL', () => {
  it('gives a tree exactly its modes, and the next version replaces it', async () => {
    const alice = await c.member('alice', [GROUP]);
    const acl = spawnSync('setfacl', ['-d', '-m', 'u::rw-,g::r--,o::r--', alice.downloads], { encoding: 'utf8' });
    expect(acl.status, acl.stderr).toBe(0);
    await c.startServer([{ name: GROUP, members: [alice] }]);
    await c.startOnline([alice]);
    const placed = `${finalPath(alice, GROUP, 'bundle')}/`;

    const v1 = join(await h.dir('v1'), 'bundle');
    await makeSampleTree(v1);
    await deliverTo(c, GROUP, alice, v1, 'bundle');
    const arrived = await listTree(placed);
    expect(arrived.find((entry) => entry.path === 'bin/run.sh')?.mode).toBe(0o755 & ~process.umask());
    expect(arrived).toEqual(underUmask(await listTree(v1)));

    const v2 = join(await h.dir('v2'), 'bundle');
    await cp(v1, v2, { recursive: true });
    await writeFile(join(v2, 'a', 'notes.txt'), 'notes v2\n');
    await deliverTo(c, GROUP, alice, v2, 'bundle');
    expect(await listTree(placed)).toEqual(underUmask(await listTree(v2)));
  });
});
