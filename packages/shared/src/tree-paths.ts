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
function collisionKey(path: string, ascii: boolean): string {
  // ASCII is its own NFC form, and folds by lower case alone.
  if (ascii) return path.toLowerCase();
  return path.normalize('NFC').toUpperCase().toLowerCase().normalize('NFC');
}

const ASCII = /^[\x00-\x7f]*$/;

/** Byte order of two paths' UTF-8: the order of their UTF-16 code units when both are ASCII. */
function byteOrder(a: string, aAscii: boolean, b: string, bAscii: boolean): number {
  if (aAscii && bAscii) return a < b ? -1 : a > b ? 1 : 0;
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Entries in the order a tree lists them (treeProblems checks it): byte order of their paths' UTF-8. */
export function sortTreePaths<T extends TreePath>(entries: readonly T[]): T[] {
  const keyed = entries.map((entry) => ({ entry, ascii: ASCII.test(entry.path) }));
  keyed.sort((a, b) => byteOrder(a.entry.path, a.ascii, b.entry.path, b.ascii));
  return keyed.map(({ entry }) => entry);
}

/**
 * Why one path is unsafe on its own, or undefined. With `parentChecked` (its directory is an earlier
 * entry, which passed this check) only its last component is new.
 */
function pathProblem(path: string, parentChecked: boolean): string | undefined {
  if (Buffer.byteLength(path) > MAX_TREE_PATH) return `is longer than ${MAX_TREE_PATH} bytes`;
  const components = parentChecked ? [path.slice(path.lastIndexOf('/') + 1)] : path.split('/');
  for (const component of components) {
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
  let previous: { path: string; ascii: boolean } | undefined;
  for (const { path, kind } of entries) {
    if (problems.length >= MAX_TREE_PROBLEMS) break;
    const slash = path.lastIndexOf('/');
    const parentListed = slash >= 0 && directories.has(path.slice(0, slash));
    const problem = pathProblem(path, parentListed);
    if (problem) {
      problems.push(`${shown(path)} ${problem}`);
      continue;
    }
    const ascii = ASCII.test(path);
    if (previous && byteOrder(previous.path, previous.ascii, path, ascii) >= 0) problems.push(`${shown(path)} is out of order or listed twice`);
    previous = { path, ascii };
    if (slash >= 0 && !parentListed) problems.push(`${shown(path)} comes before (or without) its directory`);
    const key = collisionKey(path, ascii);
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
