import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../packages/shared/src/index.js';
import { ContentStore } from '../../packages/server/src/delivery/store.js';
import { concatenatedSource } from '../../packages/server/src/delivery/byte-source.js';
import { TreeManifests, walkTree } from '../../packages/server/src/delivery/tree-store.js';
import { makeSampleTree } from './tree-fixtures.js';

/**
 * A tree's small files are packed into one store file with ingest's checks (store.ts TreePack), and
 * the stored tree reads back as the concatenation of its files (tree-store.ts).
 */
let dir: string;
let store: ContentStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-ingest-small-'));
  store = new ContentStore(join(dir, 'state'));
  await store.open();
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const temporaries = async (): Promise<string[]> => (await readdir(store.dir)).filter((name) => name.startsWith('.ingest-'));

/** Every file of a walked tree's source, in manifest order, concatenated: what the stream must send. */
async function concatenation(source: string): Promise<Buffer> {
  const walked = await walkTree(source);
  return Buffer.concat(await Promise.all(walked.entries.filter((e) => e.kind === 'file').map((e) => readFile(e.source))));
}

async function readAll(sources: Parameters<typeof concatenatedSource>[0], size: number): Promise<Buffer> {
  const source = concatenatedSource(sources);
  try {
    const into = Buffer.alloc(size);
    expect(await source.read(into, 0)).toBe(size);
    return into;
  } finally {
    await source.close();
  }
}

describe('TreePack', () => {
  it('packs small files back to back, named after the tree once committed, and leaves no partial copy', async () => {
    const [a, b] = [randomBytes(10_240), randomBytes(3)];
    await writeFile(join(dir, 'a'), a);
    await writeFile(join(dir, 'b'), b);
    const pack = store.openPack();
    expect(await pack.append(join(dir, 'a'))).toEqual({ sha256: sha256(a), size: a.length });
    expect(await pack.append(join(dir, 'b'))).toEqual({ sha256: sha256(b), size: b.length });
    const tree = 'ab'.repeat(32);
    await pack.sync();
    await pack.commit(tree);
    await pack.discard();
    expect((await readFile(store.packPath(tree))).equals(Buffer.concat([a, b]))).toBe(true);
    expect(await temporaries()).toEqual([]);
  });

  it('packs more small files than its write buffer holds, in order, each at the sum of the sizes before it', async () => {
    // 40 files of up to 256 KiB: about 6 MiB, several times what is read before a write.
    const files = Array.from({ length: 40 }, (_, i) => randomBytes(i % 3 === 0 ? 262_144 : 150_000 + i));
    await Promise.all(files.map((bytes, i) => writeFile(join(dir, `many-${i}`), bytes)));
    const pack = store.openPack();
    for (const [i, bytes] of files.entries()) expect(await pack.append(join(dir, `many-${i}`))).toEqual({ sha256: sha256(bytes), size: bytes.length });
    const tree = 'cd'.repeat(32);
    await pack.sync();
    await pack.commit(tree);
    await pack.discard();
    expect((await readFile(store.packPath(tree))).equals(Buffer.concat(files))).toBe(true);
  });

  it('leaves a file over the small size to ingest', async () => {
    await writeFile(join(dir, 'large'), randomBytes(300_000));
    const pack = store.openPack();
    try {
      expect(await pack.append(join(dir, 'large'))).toBeUndefined();
    } finally {
      await pack.discard();
    }
  });

  it('refuses a symbolic link and a FIFO swapped in for a file, without following or waiting', async () => {
    await writeFile(join(dir, 'small'), randomBytes(10));
    await symlink(join(dir, 'small'), join(dir, 'link'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    const pack = store.openPack();
    try {
      await expect(pack.append(join(dir, 'link'))).rejects.toMatchObject({ code: ErrorCode.USAGE });
      await expect(pack.append(join(dir, 'fifo'))).rejects.toMatchObject({ code: ErrorCode.USAGE, message: expect.stringContaining('FIFO') });
    } finally {
      await pack.discard();
    }
  });

  it('left uncommitted (a crash mid-ingest), is a temporary that prune removes', async () => {
    const pack = store.openPack();
    await pack.append(join(dir, 'small'));
    expect(await temporaries()).toHaveLength(1);
    await store.prune(new Set());
    expect(await temporaries()).toEqual([]);
    await pack.discard();
  });
});

describe('a stored tree', () => {
  it('keeps its small files in its pack only, and reads back as its files one after the other', async () => {
    const source = join(dir, 'site');
    await makeSampleTree(source);
    const before = new Set(await readdir(store.dir));
    const stored = await new TreeManifests(store).ingest(await walkTree(source));
    const added = (await readdir(store.dir)).filter((name) => !before.has(name)).sort();
    const loaded = await new TreeManifests(store).load(stored.sha256);
    // The sample's two files over the small size, each with its pieces, the manifest and the pack: nothing per small file.
    expect(loaded.files).toHaveLength(2);
    expect(added).toEqual([stored.sha256, `${stored.sha256}.pack`, ...loaded.files.flatMap((f) => [f, `${f}.pieces`])].sort());
    expect((await readAll(loaded.sources, stored.size)).equals(await concatenation(source))).toBe(true);
  });

  it('is delivered from the manifest it was stored with, the same as reading it back gives', async () => {
    const source = join(dir, 'kept-site');
    await makeSampleTree(source, 'kept');
    const manifests = new TreeManifests(store);
    const stored = await manifests.ingest(await walkTree(source));
    const kept = await manifests.load(stored.sha256);
    const read = await new TreeManifests(store).load(stored.sha256);
    expect(kept.bytes.equals(read.bytes)).toBe(true);
    expect(kept.manifest).toEqual(read.manifest);
    expect(kept.sources).toEqual(read.sources);
    expect(kept.files).toEqual(read.files);
  });

  it('stored before packs (every file content-addressed, no pack), is read from its files', async () => {
    const source = join(dir, 'old-site');
    await makeSampleTree(source, 'old');
    const walked = await walkTree(source);
    const stored = await new TreeManifests(store).ingest(walked);
    await rm(store.packPath(stored.sha256));
    for (const entry of walked.entries) if (entry.kind === 'file') await store.ingest(entry.source);
    const loaded = await new TreeManifests(store).load(stored.sha256);
    expect(loaded.sources.every((s) => !s.path.endsWith('.pack'))).toBe(true);
    expect(loaded.files).toHaveLength(walked.entries.filter((e) => e.kind === 'file').length);
    expect((await readAll(loaded.sources, stored.size)).equals(await concatenation(source))).toBe(true);
  });
});
