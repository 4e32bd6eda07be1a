import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, open, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCode, Journal, LOCK_NAME, StateLock } from '../../packages/shared/src/index.js';
import { ContentStore } from '../../packages/server/src/delivery/store.js';
import { harness } from '../support/daemons.js';
import { MiB } from '../durability/cluster.js';

/** The storage pieces on their own: the journal on a full disk, the state-directory lock, the store's refusals. */
const root = process.getuid?.() === 0;
if (!root) console.warn('[storage-units] journal on a full disk skipped: mounting a tmpfs needs root');

const h = harness();
const mounts: string[] = [];

afterAll(async () => {
  try {
    for (const dir of mounts) execFileSync('umount', [dir]);
  } finally {
    await h.cleanup();
  }
});

type Line = { n: number; pad: string };
const isLine = (value: unknown): value is Line => typeof (value as Line | null)?.n === 'number';

describe.skipIf(!root)('the journal on a disk that fills up', () => {
  it('an append cut short fails and is taken off again, so the next one after space is freed is read back', async () => {
    const dir = join(await h.dir('tmpfs'), 'mnt');
    await mkdir(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    mounts.push(dir);
    const path = join(dir, 'journal.jsonl');
    const journal = new Journal<Line>(path, isLine);
    await journal.append({ n: 1, pad: '' });
    const good = (await stat(path)).size;

    const filler = join(dir, 'filler');
    const fd = openSync(filler, 'w');
    try {
      for (let i = 0; i < 64; i++) writeSync(fd, Buffer.alloc(4096));
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    } finally {
      closeSync(fd);
    }
    // Longer than what is left of the journal's page: the write is cut short there, then fails.
    await expect(journal.append({ n: 2, pad: 'x'.repeat(8192) })).rejects.toMatchObject({ code: 'ENOSPC' });
    expect((await stat(path)).size).toBe(good);

    await rm(filler);
    await journal.append({ n: 3, pad: '' });
    await journal.close();
    expect(await new Journal<Line>(path, isLine).replay()).toEqual({ records: [{ n: 1, pad: '' }, { n: 3, pad: '' }], torn: 0 });
  });
});

describe('the state-directory lock', () => {
  it('is exclusive while held, and free again once closed', async () => {
    const dir = await h.dir('lock');
    const lock = await StateLock.acquire(dir, 'group-server');
    await expect(StateLock.acquire(dir, 'group-server')).rejects.toMatchObject({
      code: ErrorCode.STATE_DIR, message: expect.stringContaining(`in use by another group-server (pid ${process.pid})`),
    });
    await lock.close();
    await lock.close();
    await (await StateLock.acquire(dir, 'group-server')).close();
    expect(await readdir(dir)).toEqual([]);
  });

  it('takes over a lock whose holder is gone (a dead pid, a reused pid) or that is junk', async () => {
    const dead = spawnSync('true').pid;
    for (const stale of [`${dead}:1`, `${process.pid}:0`, 'junk', 'a file']) {
      const dir = await h.dir('stale-lock');
      if (stale === 'a file') await writeFile(join(dir, LOCK_NAME), '');
      else await symlink(stale, join(dir, LOCK_NAME));
      const lock = await StateLock.acquire(dir, 'group-client');
      await lock.close();
      expect(await readdir(dir), stale).toEqual([]);
    }
  });
});

describe('what the store refuses', () => {
  it('a directory and a device, as not regular files; nothing is left in the store', async () => {
    const store = new ContentStore(await h.dir('store-state'));
    await store.open();
    await expect(store.ingest(await h.dir('a-directory'))).rejects.toMatchObject({ code: ErrorCode.USAGE, message: expect.stringMatching(/not a regular file \(a directory\)/) });
    await expect(store.ingest('/dev/null')).rejects.toMatchObject({ code: ErrorCode.USAGE, message: expect.stringMatching(/not a regular file \(a device\)/) });
    expect(await readdir(store.dir)).toEqual([]);
  });

  it('a file that keeps changing while it is copied, after retrying; no partial copy is left', async () => {
    const store = new ContentStore(await h.dir('store-state'));
    await store.open();
    const path = join(await h.dir('source'), 'changing.bin');
    await writeFile(path, Buffer.alloc(32 * MiB, 1));
    const file = await open(path, 'r+');
    let writing = true;
    const writer = (async () => {
      // Bounded: stops when the ingest settles, or after this many writes.
      for (let i = 0; writing && i < 100_000; i++) {
        await file.write(Buffer.alloc(64 * 1024, i % 256), 0, 64 * 1024, (i % 2) * 30 * MiB);
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    try {
      await expect(store.ingest(path)).rejects.toMatchObject({ code: ErrorCode.SOURCE_CHANGED });
    } finally {
      writing = false;
      await writer;
      await file.close();
    }
    expect(await readdir(store.dir)).toEqual([]);
    expect((await store.ingest(path)).size).toBe(32 * MiB);
  });
});
