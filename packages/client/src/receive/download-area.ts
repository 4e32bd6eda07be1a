import { createHash } from 'node:crypto';
import { link, lstat, mkdir, open, readdir, rm, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import {
  errnoCode, ErrorCode, fsyncDir, GroupcastError, hashFromHandle, validateFileName, validateGroupName, type Logger,
} from '@groupcast/shared';

/**
 * Where received files go: `<root>/<group>/<name>`, with partial data in `<root>/.groupcast-partial/`
 * and versions in `<root>/.groupcast-versions/` (dot names no group can have). The path decisions here are pure, so they can be tested alone.
 */
export const PARTIAL_DIR = '.groupcast-partial';
/** Placed tree versions and kept old versions (versions.ts): reserved like PARTIAL_DIR, no group can have it. */
export const VERSIONS_DIR = '.groupcast-versions';

export interface Placement {
  groupDir: string;
  finalPath: string;
}

/**
 * The final path for a file from the wire, or a NAME error. The names are validated first; the
 * resolved path is then checked to sit directly in `<root>/<group>`, so no name — whatever a future
 * validator lets through — can steer a write elsewhere.
 */
export function placementFor(root: string, group: string, name: string): Placement {
  validateGroupName(group);
  validateFileName(name);
  const base = resolve(root);
  const groupDir = resolve(base, group);
  const finalPath = resolve(groupDir, name);
  if (dirname(groupDir) !== base || dirname(finalPath) !== groupDir) {
    throw new GroupcastError(ErrorCode.NAME, `${JSON.stringify(`${group}/${name}`)} resolves outside ${base}`);
  }
  return { groupDir, finalPath };
}

/** A transfer id as partial files are named: 16 bytes in lower-case hex. */
const TRANSFER_HEX = /^[0-9a-f]{32}$/;

export function partialPathFor(root: string, transferHex: string): string {
  if (!TRANSFER_HEX.test(transferHex)) throw new GroupcastError(ErrorCode.PROTOCOL, `bad transfer id ${transferHex}`);
  return join(resolve(root), PARTIAL_DIR, transferHex);
}

/**
 * Where to resume from, given how many bytes a partial already holds. More than the file's size
 * means the partial is not this file's: start over.
 */
export function resumeOffset(held: number | undefined, size: number): number {
  return held !== undefined && held <= size ? held : 0;
}

/**
 * A partial untouched this long belongs to a transfer no server will offer again (it expired while
 * this member was away, or access was revoked): far past any sensible retention, so safe to reclaim.
 */
export const PARTIAL_MAX_AGE_MS = 30 * 24 * 3600 * 1000;

/** Deletes partials not written to for `maxAgeMs`; returns their names (transfer ids). */
export async function reclaimStalePartials(root: string, now: number, maxAgeMs = PARTIAL_MAX_AGE_MS): Promise<string[]> {
  const dir = join(resolve(root), PARTIAL_DIR);
  const removed: string[] = [];
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const stats = await lstat(path);
    if (now - stats.mtimeMs < maxAgeMs) continue;
    await rm(path, { force: true, recursive: true });
    removed.push(name);
  }
  return removed;
}

/** Transfer ids of the partials held (files in the partial folder named like one), at most `max` of them. */
export async function heldPartials(root: string, max: number): Promise<string[]> {
  const names = await readdir(join(resolve(root), PARTIAL_DIR));
  return names.filter((name) => TRANSFER_HEX.test(name)).slice(0, max);
}

/** A NO_SPACE message if the free space cannot take `needed` more bytes, else undefined. */
export function spaceShortfall(stats: { bavail: number; bsize: number }, needed: number): string | undefined {
  const have = stats.bavail * stats.bsize;
  return have < needed ? `insufficient space: need ${needed} bytes, have ${have}` : undefined;
}

/** What is already at the final path. */
export type Existing = { kind: 'none' } | { kind: 'file'; size: number } | { kind: 'not-a-file' };

export async function existingAt(path: string): Promise<Existing> {
  try {
    const stats = await lstat(path);
    return stats.isFile() ? { kind: 'file', size: stats.size } : { kind: 'not-a-file' };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { kind: 'none' };
    throw err;
  }
}

/** SHA-256 of a whole file, through shared's one-buffer reader: memory stays flat whatever its size. */
export async function hashFile(path: string, signal?: AbortSignal): Promise<Buffer> {
  const hash = createHash('sha256');
  const handle = await open(path, 'r');
  try {
    await hashFromHandle(handle, (await handle.stat()).size, hash, signal);
  } finally {
    await handle.close();
  }
  return hash.digest();
}

/**
 * Moves a complete, fsynced partial to its final name. `link` refuses to replace anything (EEXIST),
 * so a file that appeared meanwhile is never overwritten. Failures before the link throw and leave
 * nothing final; after the link the file is delivered, and cleanup trouble is only logged.
 */
export async function placeFile(partialPath: string, placement: Placement, log: Logger): Promise<void> {
  const { groupDir, finalPath } = placement;
  await mkdir(groupDir, { recursive: true, mode: 0o755 });
  // mkdir succeeds over a symlink to a directory; a group folder that points elsewhere is refused.
  if (!(await lstat(groupDir)).isDirectory()) {
    throw new GroupcastError(ErrorCode.NAME, `${groupDir} exists and is not a directory`);
  }
  await link(partialPath, finalPath);
  try {
    await unlink(partialPath);
    await fsyncDir(groupDir);
  } catch (err) {
    log.warn({ err, path: finalPath }, 'file placed, but cleanup or directory fsync failed');
  }
}
