import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, type Stats } from 'node:fs';
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  choosePieceSize, decodeManifest, encodeManifest, errnoCode, fsyncDir, ErrorCode, GroupcastError, hashFromHandle, MAX_TREE_ENTRIES, MAX_TREE_MANIFEST_BYTES,
  LoopTurns, MAX_TREE_PIECES, MIN_PIECE_SIZE, MAX_PIECE_SIZE, PieceHasher, pieceCount, SMALL_FILE_BYTES, sortTreePaths, treeProblems,
  type EntryKind, type Manifest, type ManifestEntry,
} from '@groupcast/shared';
import type { SourceFile } from './byte-source.js';
import type { ContentStore, IngestProgress, StoredFile } from './store.js';

/**
 * Directory trees in the store (PROTOCOL.md §7.7; the layout is ContentStore's). The tree's manifest
 * (version 2) is named by its sha256, which is the transfer's sha256. Its small files (SMALL_FILE_BYTES
 * at most, by their stored size) are packed back to back, in manifest order, into `<sha256>.pack`:
 * an entry's place there is the sum of the small sizes before it, so the manifest is the pack's index.
 * A larger file is stored content-addressed like any distributed file, so one unchanged across versions
 * is stored once. A store from before packs holds every file of a tree content-addressed; it is still read.
 */

/**
 * Large files of one tree copied into the store at once (and hashed again when their pieces must be):
 * each copy is a dozen trips through the thread pool, and enough of them in flight keep it busy.
 */
const TREE_INGEST_CONCURRENCY = 32;
/** System calls packing a small file makes (open, two fstats, a read and the read that finds its end, close; its write is batched): what it costs the loop. */
const SMALL_INGEST_CALLS = 6;
/** Problems (symbolic links, special files) one refusal lists; the count says how many more. */
const MAX_LISTED = 20;
/** Tree manifests kept decoded in memory (the delivery of a tree to each member reads its own). */
const MANIFEST_CACHE = 8;

export interface WalkedEntry {
  path: string;
  kind: EntryKind;
  /** Permission bits only (no set-id, no sticky bit: those never travel). */
  mode: number;
  size: number;
  source: string;
}

export interface WalkedTree {
  root: string;
  entries: WalkedEntry[];
}

/** What a file or directory is, for a refusal: only regular files and directories travel. */
function refusedKind(info: { isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  return 'a device';
}

/**
 * Waits for all of `work`, then throws the first failure or gives their values: work running at once is
 * settled before anything it uses is discarded on a failure (the pack, its file), so none is left running.
 */
async function settleAll<T extends readonly unknown[] | []>(work: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const outcomes = await Promise.allSettled(work);
  for (const outcome of outcomes) if (outcome.status === 'rejected') throw outcome.reason;
  return outcomes.map((outcome) => (outcome as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

/**
 * Lists a directory for distribution: regular files, directories (empty ones too) and their modes, in
 * byte order of their paths. Anything else inside (a symbolic link, a FIFO, a socket, a device) and any
 * path the tree rule refuses is listed in one USAGE error, before anything is stored.
 */
export async function walkTree(root: string): Promise<WalkedTree> {
  const entries: WalkedEntry[] = [];
  const refused: string[] = [];
  const pending = [''];
  const turns = new LoopTurns();
  while (pending.length > 0 && entries.length <= MAX_TREE_ENTRIES) {
    const relative = pending.pop()!;
    // Synchronous, as the lstat below: a look-up in the page cache, not a trip through the thread pool.
    let names: string[] = [];
    try {
      names = readdirSync(join(root, relative));
    } catch (err) {
      refused.push(`${relative || '.'} cannot be read (${errnoCode(err) ?? (err as Error).message})`);
    }
    await turns.made();
    for (const name of names) {
      // Past the cap the tree is refused anyway (treeProblems says so): stop listing it.
      if (entries.length > MAX_TREE_ENTRIES) break;
      const path = relative ? `${relative}/${name}` : name;
      const source = join(root, path);
      let info: Stats;
      try {
        info = lstatSync(source);
      } catch (err) {
        refused.push(`${path} cannot be read (${errnoCode(err) ?? (err as Error).message})`);
        continue;
      } finally {
        await turns.made();
      }
      if (info.isDirectory()) {
        entries.push({ path, kind: 'directory', mode: info.mode & 0o777, size: 0, source });
        pending.push(path);
      } else if (info.isFile()) {
        entries.push({ path, kind: 'file', mode: info.mode & 0o777, size: info.size, source });
      } else {
        refused.push(`${path} is ${refusedKind(info)}`);
      }
    }
  }
  const sorted = sortTreePaths(entries);
  const problems = [...refused, ...treeProblems(sorted)];
  if (problems.length > 0) {
    const more = problems.length > MAX_LISTED ? `\n  … and ${problems.length - MAX_LISTED} more` : '';
    throw new GroupcastError(
      ErrorCode.USAGE,
      `${root} cannot be distributed as a tree (only regular files and directories travel; nothing was stored):\n  ${problems.slice(0, MAX_LISTED).join('\n  ')}${more}`,
    );
  }
  return { root, entries: sorted };
}

export interface StoredTree {
  sha256: string;
  /** The sum of its files' sizes: what the stream carries. */
  size: number;
  files: number;
}

/** A tree just stored, with its manifest as written (bytes) and as built (what decoding them gives). */
interface WrittenTree extends StoredTree {
  bytes: Buffer;
  manifest: Manifest;
}

/** One piece size for the whole tree: the smallest power of two that keeps it within MAX_TREE_PIECES. */
function treePieceSize(sizes: readonly number[]): number {
  let pieceSize = MIN_PIECE_SIZE;
  const total = (size: number): number => sizes.reduce((sum, s) => sum + pieceCount(s, size), 0);
  while (pieceSize < MAX_PIECE_SIZE && total(pieceSize) > MAX_TREE_PIECES) pieceSize *= 2;
  return pieceSize;
}

/** A stored file's piece hashes at the tree's piece size: kept ones when they match it, else hashed again. */
async function piecesAt(store: ContentStore, sha256: string, size: number, pieceSize: number): Promise<Buffer> {
  if (size === 0) return Buffer.alloc(0);
  if (size <= pieceSize) return Buffer.from(sha256, 'hex');
  if (choosePieceSize(size) === pieceSize) return (await store.pieces(sha256, size)).hashes;
  const hasher = new PieceHasher(pieceSize);
  const handle = await open(store.path(sha256), 'r');
  try {
    await hashFromHandle(handle, size, hasher);
  } finally {
    await handle.close();
  }
  return hasher.digest();
}

/** Runs `work` over `items`, `limit` at a time, keeping the results in order. */
async function inBatches<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let first = 0; first < items.length; first += limit) {
    results.push(...await Promise.all(items.slice(first, first + limit).map(work)));
  }
  return results;
}

/**
 * Copies a walked tree into the store: its small files into a new pack (synchronously, in manifest
 * order), its larger ones content-addressed meanwhile; then writes its manifest. Each of these few
 * files is fsynced before its rename, and the store's directory once after them all (not a sync of the
 * whole file system, which would wait for whatever else is writing to it): the caller records the
 * distribution only after this returns. A file that shrank to a small size after the walk is refused
 * as changed: the pack holds every file of the tree that is small by its stored size.
 */
async function storeTree(store: ContentStore, tree: WalkedTree, progress?: IngestProgress): Promise<WrittenTree> {
  const files = tree.entries.filter((entry) => entry.kind === 'file');
  // Progress over the whole tree: the bytes copied of every file so far, of what the walk found.
  const total = files.reduce((sum, file) => sum + file.size, 0);
  let copied = 0;
  const ingestLarge = async (file: WalkedEntry): Promise<StoredFile> => {
    let mine = 0;
    const stored = await store.ingest(file.source, {
      syncDir: false,
      progress: (position) => {
        copied += position - mine;
        mine = position;
        progress?.(copied, total);
      },
    });
    if (stored.size <= SMALL_FILE_BYTES) {
      throw new GroupcastError(ErrorCode.SOURCE_CHANGED, `${file.source} changed while being stored (it shrank): distribute the tree once nothing writes to it any more`);
    }
    return stored;
  };
  const pack = store.openPack();
  try {
    const stored: StoredFile[] = [];
    const packSmall = async (): Promise<void> => {
      const turns = new LoopTurns();
      for (const [index, file] of files.entries()) {
        if (file.size > SMALL_FILE_BYTES) continue;
        const small = await pack.append(file.source);
        // Grown past the small size since the walk: stored as a large file, in order all the same.
        stored[index] = small ?? await ingestLarge(file);
        if (small) progress?.((copied += small.size), total);
        await turns.made(SMALL_INGEST_CALLS);
      }
    };
    const large = [...files.keys()].filter((index) => files[index]!.size > SMALL_FILE_BYTES);
    const storeLarge = inBatches(large, TREE_INGEST_CONCURRENCY, async (index) => {
      stored[index] = await ingestLarge(files[index]!);
    });
    // Both run at once: the large copies wait on the thread pool while the loop packs small files.
    await settleAll([packSmall(), storeLarge]);
    // The disk takes the pack while the manifest is built.
    const [, { bytes, manifest }] = await settleAll([pack.sync(), treeManifest(store, tree, stored)]);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await pack.commit(sha256);
    const temp = store.ingestPath();
    try {
      await writeSynced(temp, bytes);
      await rename(temp, store.path(sha256));
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    await fsyncDir(store.dir);
    return { sha256, size: stored.reduce((sum, file) => sum + file.size, 0), files: files.length, bytes, manifest };
  } finally {
    // After a commit there is nothing left to discard.
    await pack.discard();
  }
}

/** Writes a new file and fsyncs it. */
async function writeSynced(path: string, bytes: Buffer): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The manifest of a tree whose files are `stored` (in the order of its file entries), and its encoding. */
async function treeManifest(store: ContentStore, tree: WalkedTree, stored: readonly StoredFile[]): Promise<{ bytes: Buffer; manifest: Manifest }> {
  const pieceSize = treePieceSize(stored.map((file) => file.size));
  const hashes = await inBatches(stored, TREE_INGEST_CONCURRENCY, (file) => piecesAt(store, file.sha256, file.size, pieceSize));
  let next = 0;
  const entries = tree.entries.map((entry): ManifestEntry => {
    if (entry.kind === 'directory') return { kind: 'directory', path: entry.path, size: 0, mode: entry.mode, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) };
    const index = next++;
    const file = stored[index]!;
    return { kind: 'file', path: entry.path, size: file.size, mode: entry.mode, sha256: Buffer.from(file.sha256, 'hex'), pieces: hashes[index]! };
  });
  const manifest: Manifest = { pieceSize, entries, tree: true };
  const bytes = encodeManifest(manifest);
  if (bytes.length > MAX_TREE_MANIFEST_BYTES) {
    throw new GroupcastError(ErrorCode.USAGE, `${tree.root}: its manifest would be ${bytes.length} bytes, over ${MAX_TREE_MANIFEST_BYTES}: distribute it in parts`);
  }
  return { bytes, manifest };
}

export interface LoadedTree {
  /** The manifest as stored and sent: its sha256 is the transfer's. */
  bytes: Buffer;
  manifest: Manifest;
  /** Where its file entries' bytes are, in manifest order, runs in one store file joined: the stream reads them as one. */
  sources: SourceFile[];
  /** The store files it needs besides its manifest and its pack: its large files. */
  files: string[];
}

/**
 * Where the bytes of a tree's files are: each small one at its place in the pack (when the tree has
 * one), each other in its own store file. Runs that follow each other in one store file are one source.
 */
function treeSources(store: ContentStore, manifest: Manifest, pack: string | undefined): { sources: SourceFile[]; files: string[] } {
  const sources: SourceFile[] = [];
  const files = new Set<string>();
  let packed = 0;
  for (const entry of manifest.entries) {
    if (entry.kind !== 'file') continue;
    let next: SourceFile;
    if (pack !== undefined && entry.size <= SMALL_FILE_BYTES) {
      next = { path: pack, offset: packed, size: entry.size };
      packed += entry.size;
    } else {
      const sha256 = entry.sha256.toString('hex');
      files.add(sha256);
      next = { path: store.path(sha256), offset: 0, size: entry.size };
    }
    const last = sources.at(-1);
    if (last?.path === next.path && last.offset + last.size === next.offset) last.size += next.size;
    else sources.push(next);
  }
  return { sources, files: [...files] };
}

/**
 * Reads stored tree manifests, the last few kept decoded: a tree delivered to many members, and the
 * retention pass asking which files trees still need, read each manifest once — also when they all ask
 * at once, as a tree's deliveries to every member do when it is recorded (a loading one is shared).
 */
export class TreeManifests {
  private readonly cache = new Map<string, Promise<LoadedTree>>();

  constructor(private readonly store: ContentStore) {}

  /**
   * Copies a walked tree into the store (storeTree) and keeps its manifest as built: its deliveries,
   * which start as soon as it is recorded, need not read and decode it again.
   */
  async ingest(tree: WalkedTree, progress?: IngestProgress): Promise<StoredTree> {
    const { bytes, manifest, ...stored } = await storeTree(this.store, tree, progress);
    this.keep(stored.sha256, Promise.resolve({ bytes, manifest, ...treeSources(this.store, manifest, this.store.packPath(stored.sha256)) }));
    return stored;
  }

  load(sha256: string): Promise<LoadedTree> {
    const cached = this.cache.get(sha256);
    if (cached) return cached;
    const loading = this.read(sha256);
    this.keep(sha256, loading);
    // A failed read is not kept: the next delivery tries again.
    loading.catch(() => {
      if (this.cache.get(sha256) === loading) this.cache.delete(sha256);
    });
    return loading;
  }

  private keep(sha256: string, loaded: Promise<LoadedTree>): void {
    this.cache.delete(sha256);
    this.cache.set(sha256, loaded);
    if (this.cache.size > MANIFEST_CACHE) this.cache.delete(this.cache.keys().next().value!);
  }

  private async read(sha256: string): Promise<LoadedTree> {
    const bytes = await readFile(this.store.path(sha256));
    const manifest = decodeManifest(bytes);
    const pack = this.store.packPath(sha256);
    const packed = await stat(pack).then((info) => info.isFile(), () => false);
    return { bytes, manifest, ...treeSources(this.store, manifest, packed ? pack : undefined) };
  }

  /** The store files a tree needs besides its manifest and pack; none when the manifest is gone already. */
  async contents(sha256: string): Promise<string[]> {
    const loaded = await this.load(sha256).catch(() => undefined);
    return loaded?.files ?? [];
  }
}
