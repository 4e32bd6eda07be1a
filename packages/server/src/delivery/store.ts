import { createHash, hash } from 'node:crypto';
import { closeSync, constants, fstatSync, fsync, openSync, readSync, type BigIntStats } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  choosePieceSize, errnoCode, ErrorCode, formatBytes, fsyncDir, GroupcastError, hashFromHandle, isGroupcastError, PieceHasher,
  SMALL_FILE_BYTES, stateWriteError, writeFully, writeFullySync,
} from '@groupcast/shared';
import { loadPieces, PIECES_SUFFIX, savePieces, type StoredPieces } from './piece-file.js';

const INGEST_PREFIX = '.ingest-';
const fsyncAsync = promisify(fsync);
/** Beside a tree's manifest: its small files' bytes (ContentStore's layout). */
export const PACK_SUFFIX = '.pack';

/**
 * A file of at most one piece has the whole file's sha256 as its only piece hash (and an empty one has
 * none), so nothing is kept beside it: many small files cost no extra file each, nor space on a full disk.
 */
function onePiece(sha256: string, size: number): StoredPieces | undefined {
  const pieceSize = choosePieceSize(size);
  if (size > pieceSize) return undefined;
  return { pieceSize, hashes: size === 0 ? Buffer.alloc(0) : Buffer.from(sha256, 'hex') };
}
const SHA256_NAME = /^[0-9a-f]{64}$/;

/** Told after each chunk of an ingest: bytes copied and hashed so far, of the size the file had at its start. */
export type IngestProgress = (copied: number, size: number) => void;

export interface StoredFile {
  sha256: string;
  size: number;
}

/** A file retention took out of the store, and the space it gave back. */
export interface RemovedFile {
  name: string;
  bytes: number;
}

/**
 * Copies of distributed files. A distribution reads from here, never from the operator's path, so
 * editing or deleting the original cannot corrupt a transfer in flight, and a restart finds every byte
 * it promised. The layout of `<state>/store/`:
 * - `<sha256>`: a file's bytes, named by their SHA-256, so a file distributed again is stored once;
 *   `<sha256>.pieces` beside it when it has more than one piece (piece-file.ts).
 * - a tree (tree-store.ts): `<sha256>` is its manifest (the bytes TREE carries; their SHA-256 is the
 *   transfer's), `<sha256>.pack` the bytes of its small files (SMALL_FILE_BYTES at most) back to back
 *   in manifest order, so a tree of 10,000 small files is two store files, not 10,000 (a create costs
 *   this disk up to a millisecond). Its larger files are stored as any file, shared across versions.
 *   A pack goes with its manifest: retention keeps or removes both.
 * - `.ingest-*`: copies being made. Nothing is renamed to its final name before it is complete, and
 *   a crash leaves these for prune().
 */
export class ContentStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'store');
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Deletes what no transfer needs: copies a crash left half-ingested, and files whose transfer was
   * never recorded (a crash between ingest and the outbox write) or has been forgotten. Call only
   * while no distribution is being recorded. Returns the files removed and their sizes.
   */
  async prune(needed: ReadonlySet<string>): Promise<RemovedFile[]> {
    const removed: RemovedFile[] = [];
    const beside = (name: string, suffix: string): boolean => name.endsWith(suffix) && !needed.has(name.slice(0, -suffix.length));
    const strays = (await readdir(this.dir)).filter((name) => name.startsWith(INGEST_PREFIX) || (SHA256_NAME.test(name) && !needed.has(name))
      || beside(name, PIECES_SUFFIX) || beside(name, PACK_SUFFIX));
    // A tree's manifest goes before its pack: a pass cut short never leaves a manifest whose pack is gone.
    strays.sort((a, b) => Number(!SHA256_NAME.test(a)) - Number(!SHA256_NAME.test(b)));
    for (const name of strays) {
      const path = join(this.dir, name);
      const bytes = await stat(path).then((info) => info.size, () => 0);
      await rm(path, { force: true });
      removed.push({ name, bytes });
    }
    return removed;
  }

  /** Whether the store still holds the file (retention may have removed it). */
  has(sha256: string): Promise<boolean> {
    return stat(this.path(sha256)).then((info) => info.isFile(), () => false);
  }

  path(sha256: string): string {
    if (!SHA256_NAME.test(sha256)) throw new GroupcastError(ErrorCode.NOT_FOUND, `not a sha256: ${sha256}`);
    return join(this.dir, sha256);
  }

  /**
   * The piece hashes of a stored file, computed at ingest and kept beside it as `<sha256>.pieces`.
   * A file stored before pieces existed (or whose pieces file is damaged) is hashed again once.
   */
  async pieces(sha256: string, size: number): Promise<StoredPieces> {
    const single = onePiece(sha256, size);
    if (single) return single;
    const path = this.path(sha256);
    const kept = await loadPieces(path, size);
    if (kept) return kept;
    const hasher = new PieceHasher(choosePieceSize(size));
    const handle = await open(path, 'r');
    try {
      await hashFromHandle(handle, size, hasher);
    } finally {
      await handle.close();
    }
    const stored = { pieceSize: hasher.pieceSize, hashes: hasher.digest() };
    await savePieces(path, stored);
    return stored;
  }

  /**
   * Copies the file into the store and files it under its sha256. The source is opened once, and
   * everything else is done on that handle: it is opened without following a symbolic link and
   * without waiting (a FIFO or a device swapped in for a file is refused at once, never read), and
   * copied and hashed in one pass, so the hash is that of the bytes stored. A file changed while it is
   * copied is copied again, then refused (SOURCE_CHANGED): what is stored is a version that existed.
   * The copy is fsynced before it is renamed; `syncDir: false` (a tree's files) leaves the fsync of the
   * store's directory, which makes the rename durable, to the caller, who does it once for all.
   */
  async ingest(source: string, options: { progress?: IngestProgress | undefined; syncDir?: boolean } = {}): Promise<StoredFile> {
    const handle = await openSource(source);
    try {
      for (let attempt = 1; attempt <= INGEST_ATTEMPTS; attempt++) {
        const stored = await this.storeFrom(source, handle, options.syncDir ?? true, options.progress);
        if (stored) return stored;
      }
      throw sourceChanged(source);
    } finally {
      await handle.close();
    }
  }

  /** Where a tree's small files are kept, named by the tree's manifest's sha256. */
  packPath(treeSha256: string): string {
    return `${this.path(treeSha256)}${PACK_SUFFIX}`;
  }

  /** A pack being written for a tree whose manifest is not known yet: TreePack.commit names it. */
  openPack(): TreePack {
    return new TreePack(this, this.ingestPath());
  }

  /** A fresh name for a copy being made: prune() takes what a crash leaves under this prefix. */
  ingestPath(): string {
    return join(this.dir, `${INGEST_PREFIX}${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  }

  /** One copy of the open source into the store; undefined if the source changed meanwhile. */
  private async storeFrom(source: string, handle: FileHandle, syncDir: boolean, progress?: IngestProgress): Promise<StoredFile | undefined> {
    const temp = this.ingestPath();
    let needed = 0;
    try {
      const before = await statOf(source, handle);
      needed = Number(before.size);
      const hash = createHash('sha256');
      const target = await open(temp, 'wx', 0o600);
      let size: number;
      let pieces: PieceHasher;
      try {
        // Pieces are hashed in the same pass as the whole file.
        pieces = new PieceHasher(choosePieceSize(needed));
        let copied = 0;
        const digest = (chunk: Buffer): void => {
          hash.update(chunk);
          pieces.update(chunk);
          progress?.((copied += chunk.length), needed);
        };
        size = await copyFrom(handle, target, digest, (err) => sourceError(source, err), needed);
        await target.sync();
      } finally {
        await target.close();
      }
      if (!unchanged(before, await statOf(source, handle), size)) {
        await rm(temp, { force: true });
        return undefined;
      }
      const sha256 = hash.digest('hex');
      if (!onePiece(sha256, size)) await savePieces(this.path(sha256), { pieceSize: pieces.pieceSize, hashes: pieces.digest() });
      await rename(temp, this.path(sha256));
      if (syncDir) await fsyncDir(this.dir);
      return { sha256, size };
    } catch (err) {
      await rm(temp, { force: true });
      // What is not the source's fault is the store's: its free space is measured without the partial copy.
      throw isGroupcastError(err) ? err : await this.storeError(source, needed, err);
    }
  }

  /** A failed write into the store: a full disk says how much was needed and how much is free. */
  async storeError(source: string, needed: number, err: unknown): Promise<GroupcastError> {
    const free = await statfs(this.dir).then((fs) => fs.bavail * fs.bsize, () => undefined);
    const room = needed > 0 && free !== undefined ? ` (needs ${formatBytes(needed)}, ${formatBytes(free)} free)` : '';
    return stateWriteError(`cannot store ${source}${room}`, join(this.dir, 'file'), err);
  }
}

/**
 * Bytes of small files read into a tree pack's buffer before it is written: a few large writes instead
 * of one per file. Room for four of the largest (each read one byte past its size).
 */
const PACK_BATCH = 4 * (SMALL_FILE_BYTES + 1);

/**
 * A tree's small files (SMALL_FILE_BYTES at most) written one after the other into one file in the
 * store, in the order they are appended (the tree's manifest order). Each is read with synchronous
 * calls — a dozen microseconds on the loop instead of a dozen trips through the thread pool — with
 * ingest's checks: opened without following a link or waiting, a regular file, read whole, kept only
 * if it did not change meanwhile (else read again, then SOURCE_CHANGED). Files are read straight into
 * a buffer (PACK_BATCH) that is written when full. Written under a temporary name, fsynced (sync), then named
 * after the manifest (commit; the caller fsyncs the store's directory): a crash before leaves nothing
 * prune() keeps.
 */
export class TreePack {
  private fd: number | undefined;
  /** Bytes appended, written or still in the batch. */
  private size = 0;
  private readonly batch = Buffer.allocUnsafe(PACK_BATCH);
  /** Bytes at the batch's start not written yet: the pack's last ones. */
  private batched = 0;
  /** The source appended last: a write that fails is named by it. */
  private lastSource = "the tree's small files";

  constructor(private readonly store: ContentStore, private readonly temp: string) {}

  /**
   * Appends the file's bytes; undefined (nothing appended) when it is larger than a small file by now:
   * ingest it as any file. Every call it makes is synchronous (a write only when the batch is full):
   * a caller appending many in a row holds the loop, and gives it turns (LoopTurns).
   */
  async append(source: string): Promise<StoredFile | undefined> {
    this.lastSource = source;
    // The temporary is made at the first append (a crash mid-ingest leaves it to prune()), then written as the batch fills.
    if (this.fd === undefined || this.batch.length - this.batched < SMALL_FILE_BYTES + 1) await this.flush();
    const length = readSmallSource(source, this.batch, this.batched);
    if (length === undefined) return undefined;
    const bytes = this.batch.subarray(this.batched, this.batched + length);
    this.batched += length;
    this.size += length;
    return { sha256: hash('sha256', bytes, 'hex'), size: length };
  }

  /** Writes the batch, making the pack's temporary first if need be: its descriptor. A failure is the store's, named by the source appended last. */
  private async flush(): Promise<number> {
    try {
      this.fd ??= openSync(this.temp, 'wx', 0o600);
      writeFullySync(this.fd, this.batch.subarray(0, this.batched), this.size - this.batched);
    } catch (err) {
      // A full disk says how much was needed and how much is free.
      throw await this.store.storeError(this.lastSource, this.batched, err);
    }
    this.batched = 0;
    return this.fd;
  }

  /** Writes what is left and syncs the pack, once every file is appended: its manifest can be built meanwhile. */
  async sync(): Promise<void> {
    try {
      // A tree without small files has an empty pack (flush makes it): every tree has one.
      const fd = await this.flush();
      // On the thread pool: the loop keeps serving other members while the disk takes the pack.
      await fsyncAsync(fd);
    } finally {
      this.closeFd();
    }
  }

  /** Names the synced pack after the tree's manifest (a pack of the same tree there has the same bytes). */
  async commit(treeSha256: string): Promise<void> {
    await rename(this.temp, this.store.packPath(treeSha256));
  }

  /** Drops what was written (a failed ingest). */
  async discard(): Promise<void> {
    this.closeFd();
    await rm(this.temp, { force: true });
  }

  private closeFd(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/**
 * A small source's bytes, with ingest's checks (TreePack.append), read into `target` at `at` (room for
 * SMALL_FILE_BYTES + 1): their length, or undefined when it is not small (any more).
 */
function readSmallSource(source: string, target: Buffer, at: number): number | undefined {
  let fd: number;
  try {
    fd = openSync(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw sourceError(source, err);
  }
  try {
    let before = statSyncOf(source, fd);
    if (!before.isFile()) throw new GroupcastError(ErrorCode.USAGE, `${source} is not a regular file (${kindOf(before)})`);
    for (let attempt = 1; attempt <= INGEST_ATTEMPTS; attempt++) {
      if (before.size > BigInt(SMALL_FILE_BYTES)) return undefined;
      const length = readWholeSync(source, fd, target.subarray(at, at + Number(before.size) + 1));
      const after = statSyncOf(source, fd);
      if (unchanged(before, after, length)) return length;
      before = after;
    }
    throw sourceChanged(source);
  } finally {
    closeSync(fd);
  }
}

/** How many times a source that changes while being copied is copied before it is refused. */
const INGEST_ATTEMPTS = 3;
/** Bytes per read and write of a copy: large enough that system calls cost little next to the hashing. */
const COPY_CHUNK = 1024 * 1024;

/**
 * Opens an operator's file to store it: not through a symbolic link in its last component (a link
 * swapped in must not make the server read its own key), not waiting for a FIFO's writer, and only
 * if the open handle is a regular file.
 */
async function openSource(source: string): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw sourceError(source, err);
  }
  try {
    const info = await statOf(source, handle);
    if (!info.isFile()) throw new GroupcastError(ErrorCode.USAGE, `${source} is not a regular file (${kindOf(info)})`);
    return handle;
  } catch (err) {
    await handle.close();
    throw err;
  }
}

function statOf(source: string, handle: FileHandle): Promise<BigIntStats> {
  return handle.stat({ bigint: true }).catch((err: unknown) => {
    throw sourceError(source, err);
  });
}

function sourceChanged(source: string): GroupcastError {
  return new GroupcastError(
    ErrorCode.SOURCE_CHANGED,
    `${source} changed while being stored (${INGEST_ATTEMPTS} tries): distribute it once nothing writes to it any more, or distribute a copy`,
  );
}

function statSyncOf(source: string, fd: number): BigIntStats {
  try {
    return fstatSync(fd, { bigint: true });
  } catch (err) {
    throw sourceError(source, err);
  }
}

/**
 * Reads a small source from its start into `buffer` until its end (one byte less than the buffer
 * holds, or more if it grew: one byte past is enough to tell), synchronously: the bytes read. A read
 * error is the source's.
 */
function readWholeSync(source: string, fd: number, buffer: Buffer): number {
  let position = 0;
  try {
    for (;;) {
      const read = readSync(fd, buffer, position, buffer.length - position, position);
      position += read;
      if (read === 0 || position === buffer.length) return position;
    }
  } catch (err) {
    throw sourceError(source, err);
  }
}

function kindOf(info: BigIntStats): string {
  if (info.isFIFO()) return 'a FIFO';
  if (info.isDirectory()) return 'a directory';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  if (info.isSocket()) return 'a socket';
  return 'not a file';
}

/** The source is as it was when its copy began: same file, same size as copied, not written since. */
function unchanged(before: BigIntStats, after: BigIntStats, copied: number): boolean {
  return after.ino === before.ino && after.dev === before.dev && after.size === before.size && BigInt(copied) === before.size
    && after.mtimeNs === before.mtimeNs && after.ctimeNs === before.ctimeNs;
}

/**
 * The one mapping of a failure to open or read an operator's file to what the operator can do about
 * it. The server reads the file as the user it runs as, which may see another file system than the
 * operator's shell (a service with PrivateTmp has its own /tmp).
 */
function sourceError(source: string, err: unknown): GroupcastError {
  if (isGroupcastError(err)) return err;
  const code = errnoCode(err);
  if (code === 'ENOENT') {
    return new GroupcastError(ErrorCode.NOT_FOUND, `cannot read ${source}: no such file as the server sees it (a service with PrivateTmp cannot see /tmp)`, { cause: err });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new GroupcastError(ErrorCode.NOT_FOUND, `cannot read ${source}: permission denied to the user the server runs as (uid ${process.getuid?.() ?? '?'}): `
      + 'give that user read access, or copy the file somewhere it can read', { cause: err });
  }
  if (code === 'ELOOP') {
    return new GroupcastError(ErrorCode.USAGE, `${source} is a symbolic link: name the file it points to (the server does not follow links to the files it distributes)`, { cause: err });
  }
  if (code === 'ENXIO') return new GroupcastError(ErrorCode.USAGE, `${source} is not a regular file (a socket)`, { cause: err });
  return new GroupcastError(ErrorCode.NOT_FOUND, `cannot read ${source}: ${(err as Error).message}`, { cause: err });
}

/**
 * Copies `source` from its start to its end into `target` in one pass, handing each chunk to
 * `consume` (the hashes) while it is written, and reading the next chunk meanwhile. Returns the bytes
 * copied. A read error is mapped by `readError` (it is the source's); a write error is left as it is
 * (it is the store's). `expected`, the size the source had, sizes the buffers: a small file (a tree holds
 * thousands) costs two small buffers, not two COPY_CHUNKs; one that grew meanwhile is still copied whole.
 */
async function copyFrom(
  source: FileHandle,
  target: FileHandle,
  consume: (chunk: Buffer) => void,
  readError: (err: unknown) => GroupcastError,
  expected: number,
): Promise<number> {
  // Two buffers: one being read into while the other's chunk is hashed and written.
  let current = Buffer.alloc(Math.min(COPY_CHUNK, expected + 1));
  let spare = Buffer.alloc(current.length);
  const read = (buffer: Buffer, position: number): Promise<Buffer> => source.read(buffer, 0, buffer.length, position).then(
    ({ bytesRead }) => buffer.subarray(0, bytesRead),
    (err: unknown) => Promise.reject(readError(err)),
  );
  let position = 0;
  let reading = read(current, position);
  let writing: Promise<void> = Promise.resolve();
  try {
    for (;;) {
      const chunk = await reading;
      // The spare buffer, which the last write used, is free once that write is done.
      await writing;
      if (chunk.length === 0) return position;
      [current, spare] = [spare, current];
      reading = read(current, position + chunk.length);
      // Kept from counting as unhandled while the loop waits on the other one; awaited above.
      reading.catch(() => undefined);
      // The write and the hashing only read the chunk: they overlap.
      writing = writeFully(target, chunk, position);
      writing.catch(() => undefined);
      consume(chunk);
      position += chunk.length;
    }
  } finally {
    // Neither handle may be closed while an operation on it is in flight.
    await Promise.allSettled([reading, writing]);
  }
}
