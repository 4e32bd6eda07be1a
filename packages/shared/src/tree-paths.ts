import { ErrorCode, GroupcastError } from './errors.js';
import { fileNameProblem } from './names.js';
import type { EntryKind } from './wire/manifest.js';

/**
 * The rules for a directory tree's paths (PROTOCOL.md §8.3), checked by the server at `distribute`
 * and again by the member before it writes anything: a tree's paths are names from the wire too.
 */

/** Entries one tree may have (files and directories): a large build output, and a bounded manifest. */
export const MAX_TREE_ENTRIES = 65_536;
/** Bytes of one entry's path (UTF-8), Linux's PATH_MAX: a member could not open a longer one anyway. */
export const MAX_TREE_PATH = 4096;
/** Problems one refusal lists: enough to fix a tree, bounded whatever the tree holds. */
export const MAX_TREE_PROBLEMS = 20;

export interface TreePath {
  path: string;
  /** Absent: a file. */
  kind?: EntryKind | undefined;
}

/**
 * The key under which two paths collide on some member's file system: a case-insensitive one (APFS,
 * NTFS) or one that normalizes Unicode (HFS+). Over-approximated on purpose (upper then lower folds ß
 * and ss together): we do not know the member's file system, so what could collide anywhere is refused.
 */
function collisionKey(path: string): string {
  return path.normalize('NFC').toUpperCase().toLowerCase().normalize('NFC');
}

/** Why one path is unsafe on its own, or undefined. */
function pathProblem(path: string): string | undefined {
  if (Buffer.byteLength(path) > MAX_TREE_PATH) return `is longer than ${MAX_TREE_PATH} bytes`;
  for (const component of path.split('/')) {
    const problem = fileNameProblem(component);
    if (problem) return `has a component that ${problem}`;
  }
  return undefined;
}

const shown = (path: string): string => JSON.stringify(path.length > 120 ? `${path.slice(0, 120)}…` : path);

/**
 * Every problem of a tree's entries, at most MAX_TREE_PROBLEMS of them: over MAX_TREE_ENTRIES; a path
 * that is unsafe (each `/`-separated component must pass the file-name rule, dotfiles allowed); out of
 * byte order or repeated; whose parent is not listed before it as a directory; or that collides with an
 * earlier one after NFC and case folding. Empty: the tree may be written.
 */
export function treeProblems(entries: readonly TreePath[]): string[] {
  if (entries.length > MAX_TREE_ENTRIES) return [`the tree has ${entries.length} entries, limit ${MAX_TREE_ENTRIES}`];
  const problems: string[] = [];
  const directories = new Set<string>();
  const keys = new Map<string, string>();
  let previous: Buffer | undefined;
  for (const { path, kind } of entries) {
    if (problems.length >= MAX_TREE_PROBLEMS) break;
    const problem = pathProblem(path);
    if (problem) {
      problems.push(`${shown(path)} ${problem}`);
      continue;
    }
    const bytes = Buffer.from(path);
    if (previous && Buffer.compare(previous, bytes) >= 0) problems.push(`${shown(path)} is out of order or listed twice`);
    previous = bytes;
    const slash = path.lastIndexOf('/');
    if (slash >= 0 && !directories.has(path.slice(0, slash))) problems.push(`${shown(path)} comes before (or without) its directory`);
    const key = collisionKey(path);
    const earlier = keys.get(key);
    if (earlier !== undefined) problems.push(`${shown(path)} and ${shown(earlier)} are the same name on a case-insensitive or normalizing file system`);
    else keys.set(key, path);
    if (kind === 'directory') directories.add(path);
  }
  return problems;
}

/** Throws NAME listing the tree's problems, if it has any. */
export function validateTree(entries: readonly TreePath[]): void {
  const problems = treeProblems(entries);
  if (problems.length > 0) throw new GroupcastError(ErrorCode.NAME, `unsafe tree: ${problems.join('; ')}`);
}
