import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeManifest } from '../../packages/shared/src/index.js';
import { harness, SERVER_BIN } from '../support/daemons.js';
import { Cluster, waitForNew, type Member } from '../durability/cluster.js';
import { makeSampleTree } from './tree-fixtures.js';

/**
 * Retention of a tree (PROTOCOL.md §7.7): the store keeps the tree's manifest, its pack of small files
 * and every large file it names while a delivery of it is still to happen, and gives them all back once
 * none is.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let away: Member;

afterAll(() => h.cleanup());

beforeAll(async () => {
  // `away` joins once, so the tree is for it too, and then goes offline: its delivery stays pending.
  [alice, away] = await c.startGroup(GROUP, ['alice', 'away'], ['--backlog', 'none']);
  await away.daemon!.stop('SIGTERM');
  await c.server!.waitForMsg('member offline', { member: away.id });
});

const stored = async (): Promise<string[]> => (await readdir(join(c.serverState, 'store'))).filter((name) => /^[0-9a-f]{64}(\.pack)?$/.test(name)).sort();
const prune = async (): Promise<void> => {
  const ran = await h.run(SERVER_BIN, ['prune', '--state-dir', c.serverState]);
  expect(ran.code, ran.stdout + ran.stderr).toBe(0);
};

describe('a stored tree', () => {
  it('keeps its manifest, pack and large files while a delivery is pending, and gives them back when none is', async () => {
    const source = join(await h.dir('src'), 'site');
    await makeSampleTree(source);
    const recorded = waitForNew(c.server!, 'distribution recorded', { file: 'site' });
    const ran = await c.distribute(GROUP, [source]);
    // 3: delivered to alice, pending for the member away.
    expect(ran.code, ran.stdout + ran.stderr).toBe(3);
    const { transfer } = await recorded;
    const status = JSON.parse((await h.run(SERVER_BIN, ['status', '--json', '--state-dir', c.serverState])).stdout) as { transfers: Array<{ id: string; sha256: string }> };
    const sha256 = status.transfers.find((t) => t.id === transfer)!.sha256;
    const manifest = decodeManifest(await readFile(join(c.serverState, 'store', sha256)));
    // Files of at most 256 KiB are in the pack; the sample has two larger ones.
    const large = [...new Set(manifest.entries.filter((e) => e.kind === 'file' && e.size > 256 * 1024).map((e) => e.sha256.toString('hex')))];
    expect(large).toHaveLength(2);
    const needed = [sha256, `${sha256}.pack`, ...large].sort();

    await prune();
    expect(await stored()).toEqual(needed);

    const cancelled = await h.run(SERVER_BIN, ['cancel', String(transfer), '--state-dir', c.serverState]);
    expect(cancelled.code, cancelled.stdout + cancelled.stderr).toBe(0);
    await prune();
    expect(await stored()).toEqual([]);
  });
});
