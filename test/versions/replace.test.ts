import { createHash } from 'node:crypto';
import { appendFile, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, waitForNew, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * New versions (issue 11, PROTOCOL.md §8.1 step 4): a newer distribution of a name replaces the file
 * groupcast placed there if it is unchanged since, in one rename; anything edited locally is a name
 * clash and stays as it is; --keep-old N keeps the previous N versions.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let alice: Member;
let keeper: Member;

afterAll(() => h.cleanup());

beforeAll(async () => {
  alice = await c.member('alice', [GROUP]);
  keeper = await c.member('keeper', ['Keepers']);
  keeper.args = ['--keep-old', '2'];
  await c.startServer([{ name: GROUP, members: [alice] }, { name: 'Keepers', members: [keeper] }]);
  await c.startOnline([alice, keeper]);
});

/** Distributes a new version of `name` (random bytes) and returns its hash, transfer id and the command's result. */
async function distributeVersion(group: string, name: string, size: number, extra: string[] = []) {
  const file = join(await h.dir('version'), name);
  const sha256 = await writeRandomFile(file, size);
  const recorded = waitForNew(c.server!, 'distribution recorded', { file: name });
  const ran = c.distribute(group, [file], extra);
  const transfer = String((await recorded).transfer);
  return { sha256, transfer, ran: await ran };
}

async function receivedLog(member: Member): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(join(member.state, 'received.jsonl'), 'utf8');
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
}

function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('a newer distribution of a name', () => {
  it('replaces the version groupcast placed: the new contents, logged and recorded as a replacement', async () => {
    const v1 = await distributeVersion(GROUP, 'tool.bin', 1 * MiB);
    expect(v1.ran.code, v1.ran.stdout + v1.ran.stderr).toBe(0);
    const v2 = await distributeVersion(GROUP, 'tool.bin', 2 * MiB);
    expect(v2.ran.code, v2.ran.stdout + v2.ran.stderr).toBe(0);
    expect(await sha256File(finalPath(alice, GROUP, 'tool.bin'))).toBe(v2.sha256);
    const line = await alice.daemon!.waitForMsg('received', { transfer: v2.transfer });
    expect(line.replaces).toBe(v1.transfer);
    const records = await receivedLog(alice);
    expect(records.at(-1)).toMatchObject({ transfer: v2.transfer, sha256: v2.sha256, kind: 'file', replaces: v1.transfer });
    // Nothing is left beside it: no temp names, no kept versions by default.
    expect(await readdir(join(alice.downloads, GROUP))).toEqual(['tool.bin']);
  });

  it('a reader looping over the file during the replacement always reads one whole version', async () => {
    const v1 = await distributeVersion(GROUP, 'data.bin', 8 * MiB);
    expect(v1.ran.code, v1.ran.stdout).toBe(0);
    const path = finalPath(alice, GROUP, 'data.bin');
    const file = join(await h.dir('version'), 'data.bin');
    const v2sha = await writeRandomFile(file, 8 * MiB);
    const replaced = waitForNew(alice.daemon!, 'received', { file: 'data.bin' }, 60_000);
    let done = false;
    void replaced.then(() => (done = true), () => (done = true));
    const distributing = c.distribute(GROUP, [file], ['--rate', '8M']);
    const seen = new Map<string, number>();
    // Bounded: at most MAX_READS whole reads, and it stops once the member says the switch is made.
    const MAX_READS = 10_000;
    for (let reads = 0; !done && reads < MAX_READS; reads++) {
      const digest = sha256Of(await readFile(path));
      seen.set(digest, (seen.get(digest) ?? 0) + 1);
    }
    await replaced;
    const last = sha256Of(await readFile(path));
    seen.set(last, (seen.get(last) ?? 0) + 1);
    expect([...seen.keys()].sort()).toEqual([v1.sha256, v2sha].sort());
    expect(last).toBe(v2sha);
    expect((await distributing).code).toBe(0);
  });

  it('a file edited locally is never overwritten: NAME_CLASH, reported to the server, the edit intact', async () => {
    const v1 = await distributeVersion(GROUP, 'notes.txt', 64 * 1024);
    expect(v1.ran.code).toBe(0);
    const path = finalPath(alice, GROUP, 'notes.txt');
    await appendFile(path, 'my local change\n');
    const edited = await sha256File(path);
    const v2 = await distributeVersion(GROUP, 'notes.txt', 64 * 1024);
    expect(v2.ran.code, v2.ran.stdout + v2.ran.stderr).toBe(1);
    expect(v2.ran.stdout).toMatch(/notes\.txt failed: name clash: notes\.txt exists with different content and was changed since groupcast placed it/);
    const delivery = (await c.deliveries()).find((d) => d.transfer === v2.transfer)!;
    expect(delivery).toMatchObject({ state: 'failed', reason: expect.stringMatching(/name clash/) });
    expect(await sha256File(path)).toBe(edited);
  });

  it('a local edit while the new version is on its way still wins (checked again just before the switch)', async () => {
    const v1 = await distributeVersion(GROUP, 'big.bin', 1 * MiB);
    expect(v1.ran.code).toBe(0);
    const path = finalPath(alice, GROUP, 'big.bin');
    const file = join(await h.dir('version'), 'big.bin');
    await writeRandomFile(file, 8 * MiB);
    const accepted = waitForNew(alice.daemon!, 'accepted', { file: 'big.bin' }, 30_000);
    // 8 MiB at 2 MB/s: the edit below lands seconds before the last byte.
    const distributing = c.distribute(GROUP, [file], ['--rate', '2M']);
    await accepted;
    await appendFile(path, 'edited while the next version was coming\n');
    const edited = await sha256File(path);
    const ran = await distributing;
    expect(ran.code, ran.stdout + ran.stderr).toBe(1);
    expect(ran.stdout).toMatch(/big\.bin failed: name clash: big\.bin was changed locally while receiving; not replaced/);
    expect(await sha256File(path)).toBe(edited);
    expect(await readdir(join(alice.downloads, '.groupcast-partial'))).toEqual([]);
  });

  it('--keep-old 2 keeps exactly the two previous versions after four distributions', async () => {
    const versions = [];
    for (let i = 0; i < 4; i++) {
      const v = await distributeVersion('Keepers', 'app.bin', 256 * 1024 + i);
      expect(v.ran.code, v.ran.stdout + v.ran.stderr).toBe(0);
      versions.push(v);
    }
    expect(await sha256File(finalPath(keeper, 'Keepers', 'app.bin'))).toBe(versions[3]!.sha256);
    const folder = join(keeper.downloads, '.groupcast-versions', 'Keepers', 'app.bin');
    const kept = (await readdir(folder)).sort();
    expect(kept).toEqual([versions[1]!.transfer, versions[2]!.transfer].sort());
    expect(await sha256File(join(folder, versions[1]!.transfer))).toBe(versions[1]!.sha256);
    expect(await sha256File(join(folder, versions[2]!.transfer))).toBe(versions[2]!.sha256);
  });
});
