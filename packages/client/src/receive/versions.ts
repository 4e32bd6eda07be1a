import { constants, type BigIntStats } from 'node:fs';
import { copyFile, link, lstat, mkdir, readdir, readlink, rename, rm, symlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { errnoCode, ErrorCode, fsyncDir, GroupcastError, truncateUtf8, type Logger, type Manifest } from '@groupcast/shared';
import { existingAt, hashFile, VERSIONS_DIR, type Placement } from './download-area.js';
import type { ReceivedRecord } from './received-log.js';
import { appliedMode } from './tree-staging.js';

/**
 * New versions of what groupcast placed (docs/PROTOCOL.md §8.1 step 4, issue 11). A newer distribution
 * of a name replaces what is at `<root>/<group>/<name>` only if groupcast placed it and it is unchanged
 * since: the newest received-log record for that path exists and the file there still has the recorded
 * size and SHA-256. The switch is one rename() over the final path, so a reader opens either the old
 * version or the new one, never a mix. Old versions kept for rollback (`--keep-old N`) live in
 * `<root>/.groupcast-versions/<group>/<name>/<transfer-hex>`.
 */

/** Versions kept by default: none, as before versions existed (the replaced file is simply gone). */
export const DEFAULT_KEEP_OLD = 0;
/** The most old versions `--keep-old` may keep per name: each is a whole copy on the member's disk. */
export const MAX_KEEP_OLD = 100;

/** The bytes a temp name adds to the name: `.` before, `.gc-` and 32 hex digits after. */
const TEMP_NAME_EXTRA = 1 + 4 + 32;
/** File systems refuse a name longer than this (NAME_MAX), so a temp name shortens the name it carries. */
const NAME_MAX_BYTES = 255;

/** `<root>/.groupcast-versions/<group>/<name>`: every kept (or, for a tree, placed) version of one name. */
export function versionsFolder(root: string, group: string, name: string): string {
  return join(resolve(root), VERSIONS_DIR, group, name);
}

/** One version in the versions folder, named by the transfer that delivered it. */
export function versionPath(root: string, group: string, name: string, transferHex: string): string {
  return join(versionsFolder(root, group, name), transferHex);
}

/**
 * A temp name beside the final path, `<group>/.<name>.gc-<hex>`: on the same file system as the final
 * path, so a rename over it is atomic, and a dot name, so no group member mistakes it for a delivery.
 * A long name is shortened in it to stay within NAME_MAX.
 */
export function tempPathFor(placement: Placement, name: string, transferHex: string): string {
  return join(placement.groupDir, `.${truncateUtf8(name, NAME_MAX_BYTES - TEMP_NAME_EXTRA)}.gc-${transferHex}`);
}

/** What identifies one state of a file: a changed inode, size or time means it was touched since. */
export interface FileStamp {
  dev: number;
  ino: number;
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

function stampFrom(stats: BigIntStats): FileStamp {
  return { dev: Number(stats.dev), ino: Number(stats.ino), size: Number(stats.size), mtimeNs: stats.mtimeNs, ctimeNs: stats.ctimeNs };
}

async function stampOf(path: string): Promise<FileStamp | undefined> {
  try {
    const stats = await lstat(path, { bigint: true });
    if (!stats.isFile()) return undefined;
    return stampFrom(stats);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** A regular file at a path, as found: its stamp and, if asked, its SHA-256 (taken between two equal stamps). */
export interface FoundFile {
  stamp: FileStamp;
  sha256: Buffer | undefined;
}

/**
 * The regular file at `path` (undefined if there is none or it is something else), hashed only when its
 * size is one of `hashIfSize` (a size that cannot match is never read). The stamp is taken again after
 * hashing: a file written to, or swapped for another, meanwhile is reported with no hash (it matches nothing).
 */
export async function findFile(path: string, hashIfSize: readonly number[], signal?: AbortSignal): Promise<FoundFile | undefined> {
  const before = await stampOf(path);
  if (!before) return undefined;
  if (!hashIfSize.includes(before.size)) return { stamp: before, sha256: undefined };
  const sha256 = await hashFile(path, signal);
  const after = await stampOf(path);
  return { stamp: before, sha256: after && sameStamp(before, after) ? sha256 : undefined };
}

/** What a new distribution finds at its final path, and so what to do (PROTOCOL.md §8.1 step 4). */
export type Verdict =
  | { kind: 'absent' }
  /** This exact file is there already: "already present". */
  | { kind: 'present' }
  /** Groupcast placed what is there and it is unchanged since: the new version replaces it. */
  | { kind: 'replace'; replacing: Replacing }
  /** Anything else: never overwritten, NAME_CLASH. */
  | { kind: 'clash'; reason: string };

/**
 * Judges the final path for an offered file of `size` and `sha256`, given the newest received-log
 * record for that path. Hashes what is there at most once.
 */
export async function judgeExisting(
  path: string, offered: { name: string; size: number; sha256: Buffer }, record: ReceivedRecord | undefined, signal: AbortSignal,
): Promise<Verdict> {
  const existing = await existingAt(path);
  if (existing.kind === 'none') return { kind: 'absent' };
  if (existing.kind === 'not-a-file') return { kind: 'clash', reason: `${offered.name} exists and is not a regular file` };
  const found = await findFile(path, record ? [offered.size, record.size] : [offered.size], signal);
  if (!found) return { kind: 'absent' };
  if (found.stamp.size === offered.size && found.sha256?.equals(offered.sha256)) return { kind: 'present' };
  const why = record ? notReplaceable(found, record) : 'was not placed by groupcast';
  if (why || !record) return { kind: 'clash', reason: `${offered.name} exists with different content and ${why}` };
  return { kind: 'replace', replacing: { record, stamp: found.stamp } };
}

/** Why what is at a path may not be replaced, or undefined when it may (groupcast placed it, unchanged since). */
export function notReplaceable(found: FoundFile, record: ReceivedRecord): string | undefined {
  if ((record.kind ?? 'file') !== 'file') return 'was placed as a directory, not a file';
  if (found.stamp.size !== record.size || !found.sha256 || found.sha256.toString('hex') !== record.sha256) {
    return 'was changed since groupcast placed it';
  }
  return undefined;
}

/** The file about to be replaced: the record that placed it and its stamp when it was found unchanged. */
export interface Replacing {
  record: ReceivedRecord;
  stamp: FileStamp;
}

/**
 * Moves `source` (a complete, fsynced file on the same file system) over the final path in one rename,
 * then fsyncs the group folder. The file there is first checked to be the one found unchanged (same
 * inode, size and times), so a local edit during the transfer wins: NAME_CLASH, nothing replaced.
 * With `keep > 0` the old version is first hard-linked into `folder` (the name's versions folder; it
 * stays at the final path until the rename), and the folder is pruned to the newest `keep`.
 *
 * What remains: a write between the last check and the rename (microseconds), or one through a handle
 * opened before it, lands in the old inode, which is then kept (with `keep > 0`) or unlinked.
 */
export async function replaceAtomically(
  source: string, placement: Placement, replacing: Replacing, keep: number, folder: string, log: Logger,
): Promise<void> {
  const { record, stamp } = replacing;
  const now = await stampOf(placement.finalPath);
  if (!now || !sameStamp(now, stamp)) {
    throw new GroupcastError(ErrorCode.NAME, `${placement.finalPath} was changed locally while the new version was received`);
  }
  if (keep > 0) await keepOld(placement.finalPath, join(folder, record.transfer));
  await rename(source, placement.finalPath);
  try {
    await fsyncDir(placement.groupDir);
  } catch (err) {
    log.warn({ err, path: placement.finalPath }, 'new version placed, but the directory fsync failed');
  }
  if (keep > 0 || (await exists(folder))) await pruneVersions(folder, keep, log);
}

/**
 * Keeps the file at `finalPath` as `keptPath` before it is replaced: a hard link (same inode, no copy),
 * or a copy where links are not possible. Its folders are owner-only: old versions are not deliveries.
 */
export async function keepOld(finalPath: string, keptPath: string): Promise<void> {
  await mkdir(dirname(keptPath), { recursive: true, mode: 0o700 });
  await rm(keptPath, { force: true, recursive: true });
  try {
    await link(finalPath, keptPath);
  } catch (err) {
    if (errnoCode(err) !== 'EXDEV' && errnoCode(err) !== 'EPERM') throw err;
    await copyFile(finalPath, keptPath, constants.COPYFILE_EXCL);
  }
}

/**
 * Deletes all but the newest `keep` versions in a name's versions folder. Newest by change time: linking
 * a version in sets it, and nothing else touches the folder. Trouble is logged: the delivery is done.
 */
export async function pruneVersions(folder: string, keep: number, log: Logger, current?: string): Promise<string[]> {
  try {
    // A tree's folder also holds the version in place (`current`), which is never pruned.
    const entries = await Promise.all((await readdir(folder)).filter((name) => name !== current).map(async (name) => {
      const stats = await lstat(join(folder, name), { bigint: true });
      return { name, ctimeNs: stats.ctimeNs };
    }));
    entries.sort((a, b) => (a.ctimeNs === b.ctimeNs ? a.name.localeCompare(b.name) : a.ctimeNs > b.ctimeNs ? -1 : 1));
    const removed = entries.slice(keep).map((entry) => entry.name);
    for (const name of removed) await rm(join(folder, name), { force: true, recursive: true });
    if (removed.length > 0) log.info({ folder, removed, kept: keep }, 'deleted old versions beyond --keep-old');
    return removed;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') log.warn({ err, folder }, 'could not prune old versions');
    return [];
  }
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(() => true, () => false);
}

// ---- trees (PROTOCOL.md §7.7) ----
// A placed tree is `<root>/<group>/<name>`, a relative symbolic link to its version directory
// `<root>/.groupcast-versions/<group>/<name>/<transfer-hex>/`. A new version is staged, moved beside the
// old one, and a new link is renamed over the old link: a reader following the link sees one version.

/** The link's target, relative to the group folder, so the download directory can be moved whole. */
export function treeLinkTarget(group: string, name: string, transferHex: string): string {
  return join('..', VERSIONS_DIR, group, name, transferHex);
}

/** What a tree distribution finds at its final path. */
export type TreeVerdict =
  | { kind: 'absent' }
  /** This very tree is placed already (a crash before it was recorded): "already present". */
  | { kind: 'present' }
  /**
   * A tree groupcast placed, unchanged since (every file as its manifest says): the new version replaces
   * it. `stamps`: its files as they were found, so that the check again before the switch hashes only
   * what changed since (treeChange).
   */
  | { kind: 'replace'; record: ReceivedRecord; stamps: TreeStamps }
  | { kind: 'clash'; reason: string };

/** The tree offered, as judgeExistingTree needs it. */
export interface OfferedTree {
  group: string;
  name: string;
  transfer: string;
  manifest: Manifest;
}

/**
 * Judges the final path for a tree: nothing there; the link to this very tree, intact (present); the
 * link groupcast placed, pointing at the version the newest record names, with every entry as that
 * version's manifest says (replace); anything else (a file, a real directory, another link, a local
 * edit) is a clash. The group folder itself must be a real directory, not a link to elsewhere.
 */
export async function judgeExistingTree(
  placement: Placement, offered: OfferedTree, record: ReceivedRecord | undefined, manifestOf: (transferHex: string) => Promise<Manifest | undefined>,
  signal: AbortSignal, known?: TreeStamps,
): Promise<TreeVerdict> {
  const { group, name } = offered;
  const groupDir = await lstat(placement.groupDir).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (groupDir && !groupDir.isDirectory()) return { kind: 'clash', reason: `${group} exists and is not a directory` };
  const found = await lstat(placement.finalPath).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (!found) return { kind: 'absent' };
  if (!found.isSymbolicLink()) return { kind: 'clash', reason: `${name} exists and is not a tree groupcast placed` };
  const target = await readlink(placement.finalPath);
  if (target === treeLinkTarget(group, name, offered.transfer)
    && (await treeChange(join(placement.groupDir, target), offered.manifest, signal)).change === undefined) return { kind: 'present' };
  if (!record || record.kind !== 'tree') return { kind: 'clash', reason: `${name} exists and was not placed by groupcast as a tree` };
  if (target !== treeLinkTarget(group, name, record.transfer)) {
    return { kind: 'clash', reason: `${name} was changed since groupcast placed it (the link points elsewhere)` };
  }
  const manifest = await manifestOf(record.transfer);
  if (!manifest) return { kind: 'clash', reason: `${name}: the manifest of the version placed is missing, so it cannot be checked` };
  const checked = await treeChange(join(placement.groupDir, target), manifest, signal, known);
  if (checked.change !== undefined) return { kind: 'clash', reason: `${name} was changed since groupcast placed it: ${checked.change}` };
  return { kind: 'replace', record, stamps: checked.stamps };
}

/**
 * A placed tree's files as they were found matching its manifest (a later lstat with the same stamp
 * needs no hash), and when that check began (wall clock, ns).
 */
export interface TreeStamps {
  takenAtNs: bigint;
  files: Map<string, FileStamp>;
}

/**
 * How close to the check's start a file's ctime may be for its stamp to be trusted. Every write, chmod
 * or utimes sets ctime to the current time (no program can set it back), but in steps of the file
 * system's clock: a write in the same step as the stamp (a few milliseconds; a second, or two, on a coarse
 * file system) keeps ctime as it was, so a file changed that recently is hashed again (git's "racily clean").
 */
const RACY_STAMP_NS = 2_000_000_000n;

/** The file is as stamped, and was last changed long enough before the stamp that a later write shows in its ctime. */
function stampHolds(known: TreeStamps | undefined, path: string, now: FileStamp): boolean {
  const stamp = known?.files.get(path);
  return stamp !== undefined && stamp.ctimeNs < known!.takenAtNs - RACY_STAMP_NS && sameStamp(stamp, now);
}

export type TreeCheck = { change: string } | { change: undefined; stamps: TreeStamps };

/**
 * How a placed tree differs from its manifest (an entry added, missing, of another kind, size, mode or
 * content), or its files' stamps when it does not. A file whose stamp in `known` (an earlier check's)
 * still holds is not hashed again (stampHolds); every other file is. The known weakness: a file
 * rewritten with the same size and times while the clock was set back keeps its stamp.
 */
export async function treeChange(versionDir: string, manifest: Manifest, signal: AbortSignal, known?: TreeStamps): Promise<TreeCheck> {
  const takenAtNs = BigInt(Date.now()) * 1_000_000n;
  const present = new Map<string, BigIntStats>();
  const pending = [''];
  while (pending.length > 0) {
    const relative = pending.pop()!;
    for (const entry of await readdir(join(versionDir, relative))) {
      const path = relative ? `${relative}/${entry}` : entry;
      const stats = await lstat(join(versionDir, path), { bigint: true });
      present.set(path, stats);
      if (stats.isDirectory()) pending.push(path);
      if (present.size > manifest.entries.length) return { change: `${JSON.stringify(path)} was added` };
    }
  }
  const files = new Map<string, FileStamp>();
  for (const entry of manifest.entries) {
    const stats = present.get(entry.path);
    const shown = JSON.stringify(entry.path);
    if (!stats) return { change: `${shown} is missing` };
    if (entry.kind === 'directory' ? !stats.isDirectory() : !stats.isFile()) return { change: `${shown} is no longer a ${entry.kind}` };
    if (Number(stats.mode & 0o777n) !== appliedMode(entry.mode)) return { change: `${shown} has another mode` };
    if (entry.kind === 'directory') continue;
    const stamp = stampFrom(stats);
    if (stamp.size !== entry.size) return { change: `${shown} was edited` };
    if (!stampHolds(known, entry.path, stamp) && !(await hashFile(join(versionDir, entry.path), signal)).equals(entry.sha256)) return { change: `${shown} was edited` };
    files.set(entry.path, stamp);
  }
  return present.size === manifest.entries.length ? { change: undefined, stamps: { takenAtNs, files } } : { change: 'entries were added' };
}

/**
 * Makes `<group>/<name>` point at the placed version: a new link made beside it and renamed over the old
 * link (replace), or made at the final path itself, which refuses anything that appeared meanwhile
 * (absent). rename() of a link never replaces a real directory. Then the group folder is fsynced.
 */
export async function switchTree(placement: Placement, group: string, name: string, transferHex: string, replacing: boolean, log: Logger): Promise<void> {
  const target = treeLinkTarget(group, name, transferHex);
  if (replacing) {
    const temp = tempPathFor(placement, name, transferHex);
    await rm(temp, { force: true });
    await symlink(target, temp);
    await rename(temp, placement.finalPath);
  } else {
    await symlink(target, placement.finalPath);
  }
  try {
    await fsyncDir(placement.groupDir);
  } catch (err) {
    log.warn({ err, path: placement.finalPath }, 'tree placed, but the directory fsync failed');
  }
}
