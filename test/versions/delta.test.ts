import { randomBytes } from 'node:crypto';
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { deliverTo, overwrite } from './delivered.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitForNew, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Only what changed travels (issue 11, PROTOCOL.md §7.5): a member replacing a version finds the new
 * version's pieces in the old file, says so in BITFIELD before ACCEPT, and the server's stream sends only
 * the pieces it lacks. Members run with --no-peers (Cluster's default): this is the server's stream.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
const SIZE = 64 * MiB;
/** The piece size the server chooses for 64 MiB (PROTOCOL.md §7.5: the smallest, 256 KiB). */
const PIECE = 256 * 1024;
let alice: Member;

afterAll(() => h.cleanup());

beforeAll(async () => {
  [alice] = await c.startGroup(GROUP, ['alice']);
});

const deliver = (path: string, name: string) => deliverTo(c, GROUP, alice, path, name);

describe('a new version of a large file', () => {
  it('changed in one 1 MiB region: only about that region travels, and the placed file is the new version', async () => {
    const dir1 = await h.dir('v1');
    const v1 = join(dir1, 'disk.img');
    await writeRandomFile(v1, SIZE);
    const first = await deliver(v1, 'disk.img');
    expect(first.bytesSent).toBe(SIZE);

    const v2 = join(await h.dir('v2'), 'disk.img');
    await copyFile(v1, v2);
    // Not aligned to pieces: 1 MiB starting inside a piece touches five of them.
    await overwrite(v2, 20 * MiB + 100_000, randomBytes(MiB));
    const v2sha = await sha256File(v2);
    const found = waitForNew(alice.daemon!, 'pieces found in the version being replaced', { file: 'disk.img' }, 60_000);
    const second = await deliver(v2, 'disk.img');
    expect(Number((await found).pieces)).toBe(SIZE / PIECE - 5);
    expect(second.bytesSent).toBeGreaterThanOrEqual(MiB);
    expect(second.bytesSent).toBeLessThanOrEqual(MiB + 2 * PIECE);
    expect(second.bytesSent).toBe(5 * PIECE);
    expect(await sha256File(finalPath(alice, GROUP, 'disk.img'))).toBe(v2sha);
    const status = (await c.deliveries()).find((d) => d.transfer === second.transfer)!;
    expect(status).toMatchObject({ state: 'delivered', bytesSent: 5 * PIECE });
  });

  it('pieces moved elsewhere in the file are found by hash, not only at the same index: nothing travels', async () => {
    const v1 = join(await h.dir('m1'), 'moved.bin');
    await writeRandomFile(v1, 8 * MiB + 12_345);
    await deliver(v1, 'moved.bin');
    // Version 2: pieces 0 and 7 swapped, and the short last piece unchanged.
    const handle = await open(v1, 'r');
    const piece0 = Buffer.alloc(PIECE);
    const piece7 = Buffer.alloc(PIECE);
    await handle.read(piece0, 0, PIECE, 0);
    await handle.read(piece7, 0, PIECE, 7 * PIECE);
    await handle.close();
    const v2 = join(await h.dir('m2'), 'moved.bin');
    await copyFile(v1, v2);
    await overwrite(v2, 0, piece7);
    await overwrite(v2, 7 * PIECE, piece0);
    const second = await deliver(v2, 'moved.bin');
    expect(second.bytesSent).toBe(0);
    expect(await sha256File(finalPath(alice, GROUP, 'moved.bin'))).toBe(await sha256File(v2));
  });
});
