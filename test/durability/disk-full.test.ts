import { createHash, randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, Outcome, type Frame, type PeerId } from '@groupcast/shared';
import { Receiver } from '../../packages/client/src/receive/receiver.js';
import { harness } from '../support/daemons.js';
import { listFiles, sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, Mounts, partialDir, waitUntil, writeRandomFile, type Member } from './cluster.js';

/**
 * A member whose download directory is an 8 MiB tmpfs is offered a 20 MiB file: it declines at once
 * ("insufficient space"), twice, and the delivery fails for good with that reason in the operator's
 * output and in status. Nothing partial is left on its disk; the other member gets the file.
 */
const root = process.getuid?.() === 0;
if (!root) console.warn('[disk-full] skipped: mounting a tmpfs needs root');

const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
const mounts = new Mounts(h);
let tiny = '';
let alice: Member;
let bob: Member;

afterAll(() => mounts.cleanup([alice?.daemon]));

describe.skipIf(!root)('a member out of disk space', () => {
  beforeAll(async () => {
    tiny = await mounts.tmpfs('8m');
    alice = await c.member('alice', [GROUP], tiny);
    bob = await c.member('bob', [GROUP]);
    await c.startServer([{ name: GROUP, members: [alice, bob] }]);
    await c.startOnline([alice, bob]);
  });

  it('declines with "insufficient space", fails cleanly after the second try, and the other member is unaffected', async () => {
    const file = join(await h.dir('source'), 'large.bin');
    const sha256 = await writeRandomFile(file, 20 * MiB);
    const result = await c.distribute(GROUP, [file]);
    expect(result.code, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toMatch(/alice.*large\.bin failed: insufficient space: need 20971520 bytes/);
    expect(result.stdout).toMatch(/1 delivered, 0 pending, 1 failed/);

    const declines = alice.daemon!.logs.filter((l) => l.msg === 'declined' && l.file === 'large.bin');
    expect(declines.map((l) => l.outcome)).toEqual(['insufficient space', 'insufficient space']);
    const failed = (await c.deliveries()).find((d) => d.member === alice.id);
    expect(failed).toMatchObject({ state: 'failed', attempts: 2, bytesSent: 0 });
    expect(failed?.reason).toMatch(/^insufficient space: need 20971520 bytes, have \d+$/);

    expect(await listFiles(tiny)).toEqual([]);
    expect(await readdir(partialDir(alice))).toEqual([]);
    expect(await sha256File(finalPath(bob, GROUP, 'large.bin'))).toBe(sha256);
  });
});

describe.skipIf(!root)('the disk filling up mid-transfer', () => {
  it('answers RESULT "insufficient space" with the write error, deletes the partial, places nothing', async () => {
    const downloads = await mounts.tmpfs('1m');
    const receiver = new Receiver({
      log: createLogger({ name: 'test', level: 'silent' }), downloads, stateDir: await h.dir('receiver-state'), wants: () => true,
    });
    await receiver.start();
    const sent: Frame[] = [];
    const session = receiver.openSession({ send: (frame) => sent.push(frame) }, 'SERVER' as PeerId);
    const content = randomBytes(768 * 1024);
    const transfer = randomBytes(16);
    await session.handle({
      type: 'offer', transfer, group: GROUP, name: 'big.bin', size: content.length, sha256: createHash('sha256').update(content).digest(),
    });
    await waitUntil(() => sent.length > 0, 'an answer to the offer', 5_000);
    expect(sent[0]).toEqual({ type: 'accept', transfer, offset: 0 });
    // Free space passed the check; now something else takes most of it.
    await writeFile(join(downloads, 'filler'), Buffer.alloc(512 * 1024));
    for (let offset = 0; offset < content.length; offset += 64 * 1024) {
      await session.handle({ type: 'data', transfer, offset, payload: content.subarray(offset, offset + 64 * 1024) });
    }
    expect(sent.slice(1)).toEqual([{ type: 'result', transfer, outcome: Outcome.NO_SPACE, message: expect.stringMatching(/^write failed: ENOSPC/) }]);
    expect(await listFiles(downloads)).toEqual([join(downloads, 'filler')]);
    await receiver.close();
  });
});
