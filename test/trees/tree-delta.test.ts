import { randomBytes } from 'node:crypto';
import { chmod, cp, mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { deliverTo, overwrite } from '../versions/delivered.js';
import { Cluster, finalPath, MiB, partialDir, waitForNew, waitUntil, type Member } from '../durability/cluster.js';
import { listTree, underUmask } from './tree-fixtures.js';

/**
 * Only what changed travels, for a tree (issue 11, PROTOCOL.md §7.7): a member replacing a tree version
 * seeds its staging area from the version in place (links, copies, a changed file's shared pieces), says
 * BITFIELD before ACCEPT, and the server's stream carries only the missing pieces over the concatenation.
 * Members run with --no-peers (Cluster's default): this is the server's stream. Bytes are the server's
 * per-delivery count (its "delivered" line), as test/versions/delta.test.ts does for a file.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
/** The piece size the server chooses for these trees (PROTOCOL.md §7.5: the smallest). */
const PIECE = 256 * 1024;
const BIG = 8 * MiB;
let alice: Member;

afterAll(() => h.cleanup());

beforeAll(async () => {
  alice = await c.member('alice', [GROUP]);
  // One old version kept: the test sees that seeding by hard links leaves it as it was, and that pruning it does no harm.
  alice.args = ['--keep-old', '1'];
  await c.startServer([{ name: GROUP, members: [alice] }]);
  await c.startOnline([alice]);
});

const deliver = (path: string, name: string) => deliverTo(c, GROUP, alice, path, name);

/** Version 1: small files, a script, an 8 MiB file, nested. */
async function makeVersion1(root: string): Promise<void> {
  await mkdir(join(root, 'conf'), { recursive: true });
  await mkdir(join(root, 'data'), { recursive: true });
  await writeFile(join(root, 'conf', 'app.conf'), 'level=1\n');
  await writeFile(join(root, 'conf', 'unchanged.bin'), randomBytes(300 * 1024));
  await writeFile(join(root, 'run.sh'), '#!/bin/sh\necho v1\n', { mode: 0o755 });
  await writeFile(join(root, 'removed.txt'), 'gone in v2\n');
  await writeFile(join(root, 'data', 'big.img'), randomBytes(BIG));
}

/** Version 2 of `v1` at `v2`: one small file changed, one added, one removed, the big file changed in one aligned piece. */
async function makeVersion2(v1: string, v2: string): Promise<number> {
  await cp(v1, v2, { recursive: true });
  await writeFile(join(v2, 'conf', 'app.conf'), 'level=2\n');
  const added = randomBytes(40 * 1024);
  await writeFile(join(v2, 'conf', 'added.bin'), added);
  await rm(join(v2, 'removed.txt'));
  await overwrite(join(v2, 'data', 'big.img'), 12 * PIECE, randomBytes(PIECE));
  return 'level=2\n'.length + added.length + PIECE;
}

describe('a new version of a tree', () => {
  it('sends only what changed: the result is the new version, unchanged files are not re-sent', async () => {
    const v1 = join(await h.dir('t1'), 'bundle');
    await makeVersion1(v1);
    const first = await deliver(v1, 'bundle');
    const v1Bytes = (await listTree(v1)).reduce((sum, entry) => sum + entry.size, 0);
    expect(first.bytesSent).toBe(v1Bytes);

    const v2 = join(await h.dir('t2'), 'bundle');
    const changed = await makeVersion2(v1, v2);
    const seeded = waitForNew(alice.daemon!, 'seeded a tree from the version being replaced', {}, 60_000);
    const second = await deliver(v2, 'bundle');
    // Three changed files: the changed bytes, at most two pieces more per file (here exactly the changed bytes).
    expect(second.bytesSent).toBeLessThanOrEqual(changed + 3 * 2 * PIECE);
    expect(second.bytesSent).toBe(changed);
    // conf/unchanged.bin and run.sh are linked (same mode), big.img gets 31 of its 32 pieces from the old file.
    expect(await seeded).toMatchObject({ linked: 2, copied: 0, pieces: BIG / PIECE - 1 });
    const placed = `${finalPath(alice, GROUP, 'bundle')}/`;
    expect(await listTree(placed)).toEqual(underUmask(await listTree(v2)));
    const status = (await c.deliveries()).find((d) => d.transfer === second.transfer)!;
    expect(status).toMatchObject({ state: 'delivered', bytesSent: changed });
    // The version kept is version 1 exactly, and shares the unchanged file with version 2.
    const kept = join(alice.downloads, '.groupcast-versions', GROUP, 'bundle', first.transfer);
    expect(await listTree(kept)).toEqual(underUmask(await listTree(v1)));
    expect((await stat(join(placed, 'conf', 'unchanged.bin'))).ino).toBe((await stat(join(kept, 'conf', 'unchanged.bin'))).ino);

    // Version 3 prunes version 1 (--keep-old 1): version 2, placed and sharing its files, stays whole.
    const v3 = join(await h.dir('t3'), 'bundle');
    await cp(v2, v3, { recursive: true });
    await writeFile(join(v3, 'conf', 'app.conf'), 'level=3\n');
    const third = await deliver(v3, 'bundle');
    expect(third.bytesSent).toBe('level=3\n'.length);
    expect(await listTree(placed)).toEqual(underUmask(await listTree(v3)));
    const keptNow = join(alice.downloads, '.groupcast-versions', GROUP, 'bundle', second.transfer);
    expect(await listTree(keptNow)).toEqual(underUmask(await listTree(v2)));
  });

  it('a file whose mode changed is copied, not linked: the version kept keeps its mode', async () => {
    const v1 = join(await h.dir('m1'), 'tools');
    await mkdir(v1);
    await writeFile(join(v1, 'tool'), randomBytes(64 * 1024), { mode: 0o644 });
    await writeFile(join(v1, 'same'), randomBytes(64 * 1024), { mode: 0o644 });
    const first = await deliver(v1, 'tools');
    const v2 = join(await h.dir('m2'), 'tools');
    await cp(v1, v2, { recursive: true });
    await chmod(join(v2, 'tool'), 0o755);
    const seeded = waitForNew(alice.daemon!, 'seeded a tree from the version being replaced', {}, 60_000);
    const second = await deliver(v2, 'tools');
    expect(await seeded).toMatchObject({ linked: 1, copied: 1, pieces: 0 });
    expect(second.bytesSent).toBe(0);
    expect(await listTree(`${finalPath(alice, GROUP, 'tools')}/`)).toEqual(underUmask(await listTree(v2)));
    // Version 1, kept, still has its own modes: the copy, not a link, got the new one.
    expect(await listTree(join(alice.downloads, '.groupcast-versions', GROUP, 'tools', first.transfer))).toEqual(underUmask(await listTree(v1)));
  });

  it('kill -9 mid-delta resumes from the verified staging area and ends identical', async () => {
    const v1 = join(await h.dir('k1'), 'disk');
    await mkdir(v1);
    await writeFile(join(v1, 'a.img'), randomBytes(BIG));
    await writeFile(join(v1, 'keep.bin'), randomBytes(200 * 1024));
    await deliver(v1, 'disk');
    const v2 = join(await h.dir('k2'), 'disk');
    await cp(v1, v2, { recursive: true });
    // Half of a.img changes: 4 MiB travel, slowly, so the kill lands while they arrive.
    await overwrite(join(v2, 'a.img'), 2 * MiB, randomBytes(4 * MiB));
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'disk' });
    const ran = c.distribute(GROUP, [v2, '--rate', '1M', '--timeout', '2m']);
    const transfer = String((await recorded).transfer);
    await alice.daemon!.waitForMsg('pieces held of a new tree version', { transfer }, 60_000);
    const staged = join(partialDir(alice), transfer, 'a.img');
    // Seeded pieces end at 2 MiB and past 6 MiB; one streamed piece at least must be in before the kill.
    const streamedIn = async (): Promise<boolean> => {
      const handle = await open(staged, 'r');
      try {
        const probe = Buffer.alloc(16);
        await handle.read(probe, 0, 16, 2 * MiB);
        return probe.some((byte) => byte !== 0);
      } finally {
        await handle.close();
      }
    };
    await waitUntil(streamedIn, 'a changed piece staged');
    await alice.daemon!.stop('SIGKILL');
    c.startMember(alice);
    const resumed = await alice.daemon!.waitForMsg('pieces held of a new tree version', { transfer }, 60_000);
    // What was streamed in before the kill is held: less than the changed 4 MiB is missing.
    expect(Number(resumed.missingBytes)).toBeLessThan(4 * MiB);
    expect(Number(resumed.held)).toBeGreaterThan(BIG / PIECE / 2 + 1);
    await alice.daemon!.waitForMsg('received a tree; replaced the earlier version', { transfer }, 120_000);
    expect((await ran).code).toBe(0);
    expect(await listTree(`${finalPath(alice, GROUP, 'disk')}/`)).toEqual(underUmask(await listTree(v2)));
    const [delivery] = (await c.deliveries()).filter((d) => d.transfer === transfer);
    // The changed 4 MiB, and what was in flight at the kill: never the unchanged 4 MiB and keep.bin again.
    expect(delivery!.bytesSent).toBeLessThan(4 * MiB + 2 * MiB);
    expect((await stat(join(`${finalPath(alice, GROUP, 'disk')}/`, 'keep.bin'))).size).toBe(200 * 1024);
  }, 180_000);
});
