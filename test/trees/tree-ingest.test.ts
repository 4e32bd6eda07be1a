import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../packages/shared/src/index.js';
import { ContentStore } from '../../packages/server/src/delivery/store.js';

/** A tree's small file copied into the store synchronously keeps ingest's checks (store.ts ingestSmall). */
let dir: string;
let store: ContentStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-ingest-small-'));
  store = new ContentStore(join(dir, 'state'));
  await store.open();
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('ContentStore.ingestSmall', () => {
  it('stores the bytes under their sha256 and leaves no partial copy', async () => {
    const content = randomBytes(10_240);
    await writeFile(join(dir, 'small'), content);
    const stored = await store.ingestSmall(join(dir, 'small'));
    expect(stored).toEqual({ sha256: createHash('sha256').update(content).digest('hex'), size: content.length });
    expect((await readFile(store.path(stored!.sha256))).equals(content)).toBe(true);
    expect((await readdir(store.dir)).filter((name) => name.startsWith('.ingest-'))).toEqual([]);
  });

  it('leaves a file over the small size to ingest', async () => {
    await writeFile(join(dir, 'large'), randomBytes(300_000));
    expect(await store.ingestSmall(join(dir, 'large'))).toBeUndefined();
  });

  it('refuses a symbolic link and a FIFO swapped in for a file, without following or waiting', async () => {
    await symlink(join(dir, 'small'), join(dir, 'link'));
    await expect(store.ingestSmall(join(dir, 'link'))).rejects.toMatchObject({ code: ErrorCode.USAGE });
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    await expect(store.ingestSmall(join(dir, 'fifo'))).rejects.toMatchObject({ code: ErrorCode.USAGE, message: expect.stringContaining('FIFO') });
  });
});
