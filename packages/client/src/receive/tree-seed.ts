import { constants } from 'node:fs';
import { chmod, copyFile, link, lstat, rm } from 'node:fs/promises';
import { errnoCode, pieceCount, type Manifest, type ManifestEntry } from '@groupcast/shared';
import { seedFromOldVersion } from './held-pieces.js';
import { appliedMode, stagedPath, unshareStaged } from './tree-staging.js';

/**
 * Only what changed travels, for a tree (PROTOCOL.md §7.7): before a member answers the OFFER of a new
 * version, it fills the staging area from the version it replaces. A file whose SHA-256 the old version
 * holds (at the same path, or at any other) is hard-linked in when its mode is the one the new entry
 * gets, copied otherwise (a chmod on a link would change the old version too); a changed file of many
 * pieces gets the pieces it shares with the old file at its path, as a single file does (held-pieces.ts).
 * Nothing here is trusted: the staging area is then scanned like any partial (held-tree.ts), and only
 * pieces whose bytes match the new manifest count as held.
 *
 * Linking is safe because a placed version is never written again: a new version is a new directory,
 * pruning only unlinks, and a staged link is never chmodded, truncated or written (unshareStaged).
 */

export interface SeedCounts {
  /** Files hard-linked from the old version. */
  linked: number;
  /** Files copied whole from it (their mode differs). */
  copied: number;
  /** Pieces of changed files copied from the old file at the same path. */
  pieces: number;
}

/** An old version's regular files by SHA-256, the one at the same path first when it has that hash. */
function oldFilesByHash(old: Manifest): Map<string, ManifestEntry[]> {
  const byHash = new Map<string, ManifestEntry[]>();
  for (const entry of old.entries) {
    if (entry.kind !== 'file' || entry.size === 0) continue;
    const key = entry.sha256.toString('hex');
    const list = byHash.get(key);
    if (list) list.push(entry);
    else byHash.set(key, [entry]);
  }
  return byHash;
}

/**
 * Seeds `stagingDir` (its directories made) for `manifest` from the placed version `oldDir` with manifest
 * `old`. Whatever fails (the old version changed or vanished, another file system) only means less is
 * seeded: the rest comes over the wire.
 */
export async function seedTreeFromVersion(stagingDir: string, manifest: Manifest, oldDir: string, old: Manifest, signal: AbortSignal): Promise<SeedCounts> {
  const counts: SeedCounts = { linked: 0, copied: 0, pieces: 0 };
  const byHash = oldFilesByHash(old);
  const oldByPath = new Map(old.entries.map((entry) => [entry.path, entry]));
  for (const entry of manifest.entries) {
    if (entry.kind !== 'file' || entry.size === 0) continue;
    signal.throwIfAborted();
    const target = stagedPath(stagingDir, entry);
    const same = (byHash.get(entry.sha256.toString('hex')) ?? []).filter((candidate) => candidate.size === entry.size);
    const whole = same.find((candidate) => candidate.path === entry.path) ?? same[0];
    if (whole) {
      const how = await seedWholeFile(stagedPath(oldDir, whole), target, appliedMode(entry.mode)).catch(() => undefined);
      if (how) counts[how]++;
      if (how) continue;
    }
    const before = oldByPath.get(entry.path);
    if (before?.kind !== 'file' || pieceCount(entry.size, manifest.pieceSize) < 2) continue;
    await unshareStaged(target);
    counts.pieces += await seedFromOldVersion(stagedPath(oldDir, before), target, entry.size, { pieceSize: manifest.pieceSize, hashes: entry.pieces }, signal)
      .catch(() => 0);
  }
  return counts;
}

/** Puts the old file at `target`: a hard link when its mode is already `mode`, else a private copy. Undefined: neither could be made. */
async function seedWholeFile(source: string, target: string, mode: number): Promise<'linked' | 'copied' | undefined> {
  const stats = await lstat(source);
  if (!stats.isFile()) return undefined;
  // Whatever a previous attempt staged here gives way: the old version has this file whole.
  await rm(target, { force: true });
  if ((stats.mode & 0o777) === mode) {
    try {
      await link(source, target);
      return 'linked';
    } catch (err) {
      // Another file system, or links not allowed there: a copy does as well.
      if (errnoCode(err) === 'EEXIST') throw err;
    }
  }
  await copyFile(source, target, constants.COPYFILE_EXCL);
  await chmod(target, 0o600);
  return 'copied';
}
