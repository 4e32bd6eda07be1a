import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, ErrorCode, fsyncDir, GroupcastError, hashFromHandle, PieceHasher, choosePieceSize } from '@groupcast/shared';
import { loadPieces, PIECES_SUFFIX, savePieces, type StoredPieces } from './delivery/piece-file.js';

const INGEST_PREFIX = '.ingest-';
const SHA256_NAME = /^[0-9a-f]{64}$/;

export interface StoredFile {
  sha256: string;
  size: number;
}

/**
 * Content-addressed copies of distributed files, named by sha256. A distribution reads from here,
 * never from the operator's path, so editing or deleting the original cannot corrupt a transfer in
 * flight, and a restart finds every byte it promised.
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
   * while no distribution is being recorded. Returns the names removed.
   */
  async prune(needed: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.dir)) {
      const stray = name.startsWith(INGEST_PREFIX) || (SHA256_NAME.test(name) && !needed.has(name))
        || (name.endsWith(PIECES_SUFFIX) && !needed.has(name.slice(0, -PIECES_SUFFIX.length)));
      if (!stray) continue;
      await rm(join(this.dir, name), { force: true });
      removed.push(name);
    }
    return removed;
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

  /** Copies (reflinks where the filesystem can), hashes the copy, fsyncs, and files it under its hash. */
  async ingest(source: string): Promise<StoredFile> {
    const temp = join(this.dir, `${INGEST_PREFIX}${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    try {
      const info = await stat(source);
      if (!info.isFile()) throw new GroupcastError(ErrorCode.USAGE, `${source} is not a regular file`);
      await copyFile(source, temp, constants.COPYFILE_FICLONE);
      const hash = createHash('sha256');
      const handle = await open(temp, 'r');
      let size: number;
      let pieces: PieceHasher;
      try {
        size = (await handle.stat()).size;
        // Pieces are hashed in the same read as the whole file.
        pieces = new PieceHasher(choosePieceSize(size));
        await hashFromHandle(handle, size, { update: (chunk) => { hash.update(chunk); pieces.update(chunk); } });
        await handle.sync();
      } finally {
        await handle.close();
      }
      const sha256 = hash.digest('hex');
      await savePieces(this.path(sha256), { pieceSize: pieces.pieceSize, hashes: pieces.digest() });
      await rename(temp, this.path(sha256));
      await fsyncDir(this.dir);
      return { sha256, size };
    } catch (err) {
      await rm(temp, { force: true });
      if (err instanceof GroupcastError) throw err;
      const reason = errnoCode(err) === 'ENOENT' ? 'no such file' : (err as Error).message;
      throw new GroupcastError(ErrorCode.NOT_FOUND, `cannot read ${source}: ${reason}`, { cause: err });
    }
  }
}
