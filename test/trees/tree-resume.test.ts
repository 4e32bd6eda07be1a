import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, SERVER_BIN } from '../support/daemons.js';
import { Cluster, finalPath, MiB, partialDir, waitForNew, waitUntil, type Member } from '../durability/cluster.js';
import { listTree, underUmask } from './tree-fixtures.js';

/**
 * A member killed (-9) in the middle of a tree resumes it (PROTOCOL.md §7.7): the files it finished are
 * kept, the one it was in is kept up to its last good piece, and the tree ends verified and identical.
 * A tree the operator cancels in the middle is not resumed: the member deletes what it staged.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;

afterAll(() => h.cleanup());

beforeAll(async () => {
  [alice] = await c.startGroup(GROUP, ['alice']);
});

const BIG = 8 * MiB;
const SMALL = 100 * 1024;

describe('kill -9 of the member mid-tree', () => {
  it('resumes within the file it was in, after the files it had, and ends identical', async () => {
    const source = join(await h.dir('src'), 'data');
    await mkdir(join(source, '99-after', 'empty'), { recursive: true });
    for (const i of [1, 2, 3]) await writeFile(join(source, `00-small-${i}`), randomBytes(SMALL));
    // Small files are staged with their final modes (no chmod at the end): one read-only, one executable,
    // staged before the kill, still get theirs after the resume.
    await chmod(join(source, '00-small-1'), 0o444);
    await chmod(join(source, '00-small-2'), 0o755);
    await writeFile(join(source, '50-big.bin'), randomBytes(BIG));
    for (const i of [1, 2, 3]) await writeFile(join(source, '99-after', `f${i}`), randomBytes(SMALL));
    const total = 6 * SMALL + BIG;

    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'data' });
    // Slow enough (4 MB/s) that the kill lands while the big file is arriving.
    const ran = c.distribute(GROUP, [source, '--rate', '4M', '--timeout', '2m']);
    const transfer = String((await recorded).transfer);
    const staged = join(partialDir(alice), transfer, '50-big.bin');
    await waitUntil(async () => (await stat(staged).then((s) => s.size, () => 0)) > 2 * MiB, 'the big file half staged');
    await alice.daemon!.stop('SIGKILL');

    c.startMember(alice);
    const resumed = await alice.daemon!.waitForMsg('resuming a tree', { transfer }, 60_000);
    const bigStart = 3 * SMALL;
    expect(resumed.filesHeld).toBe(3);
    expect(Number(resumed.offset)).toBeGreaterThan(bigStart);
    expect(Number(resumed.offset)).toBeLessThan(bigStart + BIG);
    await alice.daemon!.waitForMsg('received a tree', { transfer }, 120_000);
    expect((await ran).code).toBe(0);
    expect(await listTree(`${finalPath(alice, GROUP, 'data')}/`)).toEqual(underUmask(await listTree(source)));
    // What was held was not sent again: well under twice the tree.
    const [delivery] = (await c.deliveries()).filter((d) => d.transfer === transfer);
    expect(delivery!.bytesSent).toBeLessThan(total * 1.5);
  });
});

describe('cancel mid-tree', () => {
  it('the member deletes what it staged of the tree, reports it cancelled and places nothing', async () => {
    const source = join(await h.dir('src'), 'cancelled');
    await mkdir(source);
    await writeFile(join(source, '00-small'), randomBytes(SMALL));
    await writeFile(join(source, '50-big.bin'), randomBytes(BIG));

    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'cancelled' });
    // Slow enough (2 MB/s) that the cancel lands while the big file is arriving.
    const ran = c.distribute(GROUP, [source, '--rate', '2M', '--timeout', '2m']);
    const transfer = String((await recorded).transfer);
    const staging = join(partialDir(alice), transfer);
    await waitUntil(async () => (await stat(join(staging, '50-big.bin')).then((s) => s.size, () => 0)) > MiB, 'the big file partly staged');

    const seen = waitForNew(alice.daemon!, 'cancelled by the server', { transfer });
    const cancelled = await h.run(SERVER_BIN, ['cancel', transfer, '--state-dir', c.serverState]);
    expect(cancelled.code, cancelled.stdout + cancelled.stderr).toBe(0);
    await seen;
    await expect(stat(staging)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(finalPath(alice, GROUP, 'cancelled'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(alice.daemon!.logs.some((l) => l.msg === 'received a tree' && l.transfer === transfer)).toBe(false);
    expect((await ran).code).toBe(1);
  });
});
