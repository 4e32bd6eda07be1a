import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode, type Manifest, type ManifestEntry } from '../../packages/shared/src/index.js';
import { IncomingTree, stagedPath } from '../../packages/client/src/receive/tree-staging.js';

/**
 * A tree staged from DATA payloads that cut its small files anywhere (PROTOCOL.md §7.7): small files are
 * checked and written whole, one cut by a payload's end is held until its rest arrives, and a bad byte in
 * one is refused before anything of it is written, the offset back at that file's start.
 */
const PIECE = 262_144;
const sha = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest();

function fileEntry(path: string, content: Buffer, mode: number): ManifestEntry {
  const pieces: Buffer[] = [];
  for (let at = 0; at < content.length; at += PIECE) pieces.push(sha(content.subarray(at, at + PIECE)));
  return { kind: 'file', path, size: content.length, mode, sha256: sha(content), pieces: content.length > PIECE ? Buffer.concat(pieces) : content.length > 0 ? sha(content) : Buffer.alloc(0) };
}

const contents: Record<string, Buffer> = {
  'a/empty': Buffer.alloc(0),
  'a/five': randomBytes(5),
  'a/small': randomBytes(3000),
  'b/large': randomBytes(300_000),
  'b/medium': randomBytes(100_000),
  'b/run.sh': randomBytes(9000),
  'z-empty': Buffer.alloc(0),
};
const manifest: Manifest = {
  pieceSize: PIECE,
  tree: true,
  entries: [
    { kind: 'directory', path: 'a', size: 0, mode: 0o755, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) },
    ...['a/empty', 'a/five', 'a/small'].map((p) => fileEntry(p, contents[p]!, 0o644)),
    { kind: 'directory', path: 'b', size: 0, mode: 0o755, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) },
    ...['b/large', 'b/medium'].map((p) => fileEntry(p, contents[p]!, 0o644)),
    fileEntry('b/run.sh', contents['b/run.sh']!, 0o755),
    fileEntry('z-empty', contents['z-empty']!, 0o600),
  ],
};
const stream = Buffer.concat(manifest.entries.filter((e) => e.kind === 'file').map((e) => contents[e.path]!));

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-staging-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

async function feed(tree: IncomingTree, bytes: Buffer, chunk: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += chunk) {
    await tree.write(bytes.subarray(at, at + chunk));
    expect(tree.offset).toBe(Math.min(bytes.length, at + chunk) + (stream.length - bytes.length));
  }
}

describe('IncomingTree', () => {
  it.each([1_000, 2_999, 7_000, 65_536])('stages every file identical, with its mode, from payloads of %i bytes', async (chunk) => {
    const staging = join(dir, 'staging');
    const tree = await IncomingTree.open(staging, manifest, new AbortController().signal);
    await feed(tree, stream, chunk);
    expect(tree.complete).toBe(true);
    await tree.seal();
    for (const [path, content] of Object.entries(contents)) expect((await readFile(join(staging, path))).equals(content)).toBe(true);
    expect((await stat(join(staging, 'b/run.sh'))).mode & 0o777).toBe(0o755 & ~process.umask());
    expect((await stat(join(staging, 'z-empty'))).mode & 0o777).toBe(0o600 & ~process.umask());
  });

  it('refuses a small file with a bad byte across a payload boundary, and resumes from that file\'s start', async () => {
    const staging = join(dir, 'staging');
    const tree = await IncomingTree.open(staging, manifest, new AbortController().signal);
    const smallStart = 5; // after a/empty and a/five
    const bad = Buffer.from(stream);
    bad.writeUInt8(bad.readUInt8(smallStart + 2500) ^ 0xff, smallStart + 2500);
    await tree.write(bad.subarray(0, smallStart + 2000));
    expect(tree.offset).toBe(smallStart + 2000);
    await expect(tree.write(bad.subarray(smallStart + 2000, smallStart + 4000))).rejects.toMatchObject({ code: ErrorCode.CHECKSUM });
    await tree.keepVerified();
    expect(tree.offset).toBe(smallStart);
    await expect(stat(join(staging, 'a/small'))).rejects.toMatchObject({ code: 'ENOENT' });
    await tree.write(stream.subarray(smallStart));
    expect(tree.complete).toBe(true);
    await tree.seal();
    expect((await readFile(join(staging, 'a/small'))).equals(contents['a/small']!)).toBe(true);
  });
});

describe('stagedPath', () => {
  const at = (path: string): ManifestEntry => ({ kind: 'file', path, size: 0, mode: 0o644, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) });

  it('puts an entry under its staging directory, as resolving the two would', () => {
    for (const path of ['a', 'a/b/c', '.env', '..a', 'a..b/c', 'a/.b', 'a/b..']) {
      expect(stagedPath('staging/dir', at(path))).toBe(resolve('staging/dir', path));
      expect(stagedPath('/abs/dir', at(path))).toBe(resolve('/abs/dir', path));
    }
  });

  it.each(['', '.', '..', '../x', 'a/../../x', 'a/..', '/etc/passwd', 'a//b', 'a/./b', './a', 'a/', 'a/.'])('refuses %j, which could leave the directory', (path) => {
    expect(() => stagedPath('/abs/dir', at(path))).toThrow(expect.objectContaining({ code: ErrorCode.NAME }));
  });
});
