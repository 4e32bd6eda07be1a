import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest, ManifestEntry } from '../../packages/shared/src/index.js';

/** What a tree is, for comparing two of them: every entry's path, kind, mode, size and content hash. */
export interface Listed {
  path: string;
  kind: 'file' | 'directory' | 'other';
  mode: number;
  size: number;
  sha256: string;
}

/** Lists `dir` (a placed tree's link is followed at the top only) in byte order of its paths. */
export async function listTree(dir: string): Promise<Listed[]> {
  const listed: Listed[] = [];
  const pending = [''];
  while (pending.length > 0) {
    const relative = pending.pop()!;
    for (const name of await readdir(join(dir, relative))) {
      const path = relative ? `${relative}/${name}` : name;
      const info = await lstat(join(dir, path));
      const kind = info.isDirectory() ? 'directory' : info.isFile() ? 'file' : 'other';
      const sha256 = kind === 'file' ? createHash('sha256').update(await readFile(join(dir, path))).digest('hex') : '';
      listed.push({ path, kind, mode: info.mode & 0o777, size: kind === 'file' ? info.size : 0, sha256 });
      if (kind === 'directory') pending.push(path);
    }
  }
  return listed.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
}

/** The listing a member should end with: the source's, modes under the member's umask (the test's own). */
export function underUmask(listed: Listed[]): Listed[] {
  const umask = process.umask();
  return listed.map((entry) => ({ ...entry, mode: entry.mode & ~umask }));
}

/**
 * The tree: nested directories, an empty directory, an executable script, a dotfile, a 0-byte
 * file, and files of one and of several pieces.
 */
export async function makeSampleTree(root: string, variant = 'v1'): Promise<void> {
  await mkdir(join(root, 'bin'), { recursive: true });
  await mkdir(join(root, 'a', 'b', 'c'), { recursive: true });
  await mkdir(join(root, 'empty'));
  await writeFile(join(root, 'bin', 'run.sh'), `#!/bin/sh\necho ${variant}\n`);
  await chmod(join(root, 'bin', 'run.sh'), 0o755);
  await writeFile(join(root, '.env'), `VERSION=${variant}\n`);
  await chmod(join(root, '.env'), 0o600);
  await writeFile(join(root, 'zero'), '');
  await writeFile(join(root, 'a', 'b', 'c', 'deep.bin'), randomBytes(300 * 1024));
  await writeFile(join(root, 'a', 'notes.txt'), `notes ${variant}\n`);
  await writeFile(join(root, 'big.bin'), randomBytes(1024 * 1024 + 17));
  await chmod(join(root, 'empty'), 0o750);
}

/** One entry of a hand-made tree: a directory, or a file with its content. */
export type Crafted = { path: string; dir: true } | { path: string; content: Buffer };

/**
 * A version-2 manifest over crafted entries, in the order given (a hostile server's may be in any),
 * with the concatenation of its files' bytes: what a server would stream.
 */
export function craftTree(entries: Crafted[], pieceSize = 262_144): { manifest: Manifest; data: Buffer } {
  const sha = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
  const manifestEntries = entries.map((entry): ManifestEntry => {
    if ('dir' in entry) return { kind: 'directory', path: entry.path, size: 0, mode: 0o755, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) };
    const pieces: Buffer[] = [];
    for (let at = 0; at < entry.content.length; at += pieceSize) pieces.push(sha(entry.content.subarray(at, at + pieceSize)));
    return { kind: 'file', path: entry.path, size: entry.content.length, mode: 0o644, sha256: sha(entry.content), pieces: Buffer.concat(pieces) };
  });
  const data = Buffer.concat(entries.flatMap((entry) => ('content' in entry ? [entry.content] : [])));
  return { manifest: { pieceSize, tree: true, entries: manifestEntries }, data };
}
