import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { concatenatedSource, type SourceFile } from '../../packages/server/src/delivery/byte-source.js';

/** A tree's files read as one run of bytes (PROTOCOL.md §7.7: DATA offsets run over the concatenation). */
let dir: string;
let files: SourceFile[];
let whole: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-concat-'));
  const sizes = [0, 5, 0, 0, 300_000, 1, 0, 70_000, 0];
  const contents = sizes.map((size) => randomBytes(size));
  // As a tree is stored: the small files in runs of one pack file (a run after the large file starts
  // where the first ended), a large one in a file of its own.
  const pack = join(dir, 'pack');
  const packed = contents.filter((content) => content.length <= 256 * 1024);
  await writeFile(pack, Buffer.concat([randomBytes(7), ...packed]));
  let offset = 7;
  files = await Promise.all(contents.map(async (content, i) => {
    if (content.length <= 256 * 1024) {
      const file = { path: pack, offset, size: content.length };
      offset += content.length;
      return file;
    }
    const path = join(dir, `f${i}`);
    await writeFile(path, content);
    return { path, offset: 0, size: content.length };
  }));
  whole = Buffer.concat(contents);
});

afterAll(() => rm(dir, { recursive: true, force: true }));

describe('concatenatedSource', () => {
  it.each([
    ['the start', 0, 3], ['across empty files into the next', 2, 10], ['a whole large file and past it', 5, 300_002],
    ['from inside a file to the end', 300_004, 70_002], ['the last byte', 370_005, 1], ['everything', 0, 370_006],
  ])('reads %s', async (_what, position, length) => {
    const source = concatenatedSource(files);
    try {
      const into = Buffer.alloc(length);
      expect(await source.read(into, position)).toBe(length);
      expect(into.equals(whole.subarray(position, position + length))).toBe(true);
    } finally {
      await source.close();
    }
  });

  it('reads short at the end, and nothing past it', async () => {
    const source = concatenatedSource(files);
    try {
      const into = Buffer.alloc(100);
      expect(await source.read(into, whole.length - 10)).toBe(10);
      expect(await source.read(into, whole.length)).toBe(0);
    } finally {
      await source.close();
    }
  });

  it('sequential reads in DATA-sized chunks give back the concatenation', async () => {
    const source = concatenatedSource(files);
    const parts: Buffer[] = [];
    try {
      for (let at = 0; at < whole.length; at += 65_536) {
        const into = Buffer.alloc(Math.min(65_536, whole.length - at));
        await source.read(into, at);
        parts.push(into);
      }
    } finally {
      await source.close();
    }
    expect(Buffer.concat(parts).equals(whole)).toBe(true);
  });
});
