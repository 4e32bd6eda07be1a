import { hash } from 'node:crypto';
import { chmodSync, mkdirSync } from 'node:fs';
import { chmod, lstat, mkdir, rm } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import {
  errnoCode, ErrorCode, GroupcastError, LoopTurns, SMALL_FILE_BYTES, syncFileSystem, type Manifest, type ManifestEntry,
} from '@groupcast/shared';
import { CHECKPOINT_BYTES, IncomingFile } from './incoming-file.js';
import { writePartialSync } from './partial-file.js';

/**
 * A tree being received (PROTOCOL.md §7.7), staged in its partial directory `<partials>/<transfer>/`
 * at the paths of its manifest. The stream's bytes run over the files' concatenation; each file is an
 * IncomingFile (pieces checked as they complete, the whole file's SHA-256 at its end), one open at a
 * time, none fsynced on its own: the whole staging area is synced once, before it is placed.
 */

/** The mode a tree's entry is given: its permission bits (no set-id, no sticky bit) under this member's umask. */
export function appliedMode(mode: number, umask = process.umask()): number {
  return mode & 0o777 & ~umask;
}

/** The mode of a placed tree's own directory: what a directory made here would get. */
export const TREE_ROOT_MODE = 0o755;

/** A path that is absolute or has an empty, `.` or `..` component: one that could name something outside its directory. */
const ESCAPING = /(?:^|\/)\.{0,2}(?:\/|$)/;
/** The directory stagedPath resolved last, and what it resolved to: a tree's entries are staged in one directory. */
let resolvedDir: { dir: string; path: string } | undefined;

/**
 * Where an entry is staged; checked to stay inside the staging directory whatever the tree rule let
 * through (the same component rule, again, instead of normalizing 10,000 paths).
 */
export function stagedPath(dir: string, entry: ManifestEntry): string {
  if (ESCAPING.test(entry.path)) throw new GroupcastError(ErrorCode.NAME, `${JSON.stringify(entry.path)} resolves outside the tree`);
  if (resolvedDir?.dir !== dir) resolvedDir = { dir, path: resolve(dir) };
  return `${resolvedDir.path}${sep}${entry.path}`;
}

/**
 * Makes the staging directory and the tree's directories in it; true when the staging directory is new
 * (nothing to resume). Parents are listed before their children (tree-paths.ts), so each mkdir finds its
 * parent made. A tree sealed before a crash has its final modes (a read-only directory): owner-writable again.
 */
export async function makeStagingDirs(dir: string, manifest: Manifest): Promise<boolean> {
  const fresh = (await mkdir(dir, { recursive: true, mode: 0o700 })) !== undefined;
  // Synchronous, as a tree's small files are (SMALL_FILE_BYTES): the loop gets its turns.
  const turns = new LoopTurns();
  for (const entry of manifest.entries) {
    if (entry.kind !== 'directory') continue;
    const path = stagedPath(dir, entry);
    mkdirSync(path, { recursive: true, mode: 0o700 });
    chmodSync(path, 0o700);
    await turns.made(2);
  }
  return fresh;
}

/**
 * A staged file seeded as a hard link to the version being replaced (tree-seed.ts) shares its inode with
 * that version: it must never be chmodded, truncated or written here. Deleted instead, it comes again.
 */
export async function unshareStaged(path: string): Promise<void> {
  const stats = await lstat(path).catch(() => undefined);
  if (stats && stats.nlink > 1) await rm(path, { force: true });
}

/**
 * A complete staging area: every entry gets its mode (directories and resumed files were made
 * owner-writable so a resume could reopen them), but for those in `modeSet`, created with it, and the
 * whole area is made durable with one sync of its file system.
 */
export async function sealStagingArea(dir: string, manifest: Manifest, modeSet: ReadonlySet<ManifestEntry> = new Set()): Promise<void> {
  // Synchronous, the loop given its turns; the umask read once: process.umask() is two system calls each time.
  const turns = new LoopTurns();
  const umask = process.umask();
  for (const entry of manifest.entries) {
    if (modeSet.has(entry)) continue;
    chmodSync(stagedPath(dir, entry), appliedMode(entry.mode, umask));
    await turns.made();
  }
  await chmod(dir, appliedMode(TREE_ROOT_MODE));
  await syncFileSystem(dir);
}

interface StagedFile {
  entry: ManifestEntry;
  /** Where its bytes start in the concatenation. */
  start: number;
  /** stagedPath, worked out once, when first needed (not before the ACCEPT: 10,000 of them take ~10 ms). */
  path?: string;
}

export class IncomingTree {
  private readonly files: StagedFile[];
  private index = 0;
  private current: IncomingFile | undefined;
  /** Small files and directories are made with synchronous calls (SMALL_FILE_BYTES): the loop gets its turns. */
  private readonly turns = new LoopTurns();
  /**
   * The first bytes of a small file that runs past the DATA frame that started it, kept (at most
   * SMALL_FILE_BYTES) until the rest arrives, so that it too is checked and written in one go.
   */
  private head: Buffer | undefined;
  /** Small files written whole with their final mode: sealing need not chmod them. */
  private readonly modeSet = new Set<ManifestEntry>();
  /** Read once: process.umask() is two system calls each time. */
  private readonly umask = process.umask();

  private constructor(
    readonly dir: string,
    private readonly manifest: Manifest,
    readonly size: number,
    private readonly checkpointBytes: number,
  ) {
    let start = 0;
    this.files = [];
    for (const entry of manifest.entries) {
      if (entry.kind !== 'file') continue;
      this.files.push({ entry, start });
      start += entry.size;
    }
  }

  /**
   * Opens the staging directory, making what is missing of it, and finds where to resume: files held
   * whole are rehashed and kept, the first one that is not is kept up to its last good piece, and
   * anything staged after it is deleted (the stream resends it in order).
   */
  static async open(dir: string, manifest: Manifest, signal: AbortSignal, checkpointBytes = CHECKPOINT_BYTES): Promise<IncomingTree> {
    const size = manifest.entries.reduce((sum, entry) => sum + (entry.kind === 'file' ? entry.size : 0), 0);
    const tree = new IncomingTree(dir, manifest, size, checkpointBytes);
    const fresh = await makeStagingDirs(dir, manifest);
    try {
      if (!fresh) await tree.resume(signal);
    } catch (err) {
      await tree.release();
      throw err;
    }
    return tree;
  }

  private async resume(signal: AbortSignal): Promise<void> {
    while (this.index < this.files.length) {
      const staged = this.files[this.index]!;
      const { entry } = staged;
      const path = this.pathOf(staged);
      await unshareStaged(path);
      // A file sealed read-only before a crash (or a small file written read-only) is reopened for writing like any partial.
      await chmod(path, 0o600).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
      const file = await IncomingFile.open(path, entry.size, signal, this.checkpointBytes, { pieceSize: this.manifest.pieceSize, hashes: entry.pieces });
      if (!file.complete) {
        this.current = file;
        break;
      }
      await file.release();
      if (!file.digest().equals(entry.sha256)) {
        // Every piece matched but the whole does not: the manifest lies about this file. Start it again.
        await rm(file.path, { force: true });
        throw new GroupcastError(ErrorCode.CHECKSUM, `${entry.path}: sha256 does not match the manifest`);
      }
      this.index++;
    }
    for (const staged of this.files.slice(this.index + 1)) await rm(this.pathOf(staged), { force: true });
  }

  private pathOf(staged: StagedFile): string {
    staged.path ??= stagedPath(this.dir, staged.entry);
    return staged.path;
  }

  /** Files held whole. */
  get filesDone(): number {
    return this.index;
  }

  get fileCount(): number {
    return this.files.length;
  }

  /** The offset in the concatenation the next DATA must carry (= verified bytes held). */
  get offset(): number {
    const at = this.files[this.index];
    return at ? at.start + (this.current?.offset ?? this.head?.length ?? 0) : this.size;
  }

  get complete(): boolean {
    return this.index >= this.files.length;
  }

  /**
   * Writes the next bytes of the concatenation, across as many files as they span. A piece that does
   * not match throws PieceMismatch (the file in progress keeps its good pieces: keepVerified); a file
   * whose SHA-256 does not match throws CHECKSUM and is deleted.
   */
  async write(payload: Uint8Array): Promise<void> {
    let at = 0;
    while (at < payload.length) {
      const taken = this.takeSmall(payload, at);
      if (taken !== undefined) {
        at += taken;
        await this.turns.made();
        continue;
      }
      const file = await this.currentFile();
      const take = Math.min(file.size - file.offset, payload.length - at);
      if (take > 0) await file.write(payload.subarray(at, at + take));
      at += take;
      if (file.complete) await this.closeFile(file);
    }
    // Empty files after the last byte are made too, so a complete tree has all its files.
    while (!this.complete && this.files[this.index]!.entry.size === 0) {
      if (this.takeSmall(payload, payload.length) === undefined) await this.closeFile(await this.currentFile());
      await this.turns.made();
    }
  }

  /**
   * The next file's bytes from `payload` at `at` when it is a small file started afresh (at most one
   * piece, whose only piece hash is its SHA-256, so that one check is both): once all of it is in, it is
   * checked before it is written, then written with one open, write and close, created with its final
   * mode. Returns the bytes taken, or undefined when the next file is not like that.
   */
  private takeSmall(payload: Uint8Array, at: number): number | undefined {
    const staged = this.files[this.index];
    if (this.current || !staged) return undefined;
    const { entry } = staged;
    if (entry.size > SMALL_FILE_BYTES || entry.size > this.manifest.pieceSize) return undefined;
    const held = this.head?.length ?? 0;
    const take = Math.min(entry.size - held, payload.length - at);
    const part = payload.subarray(at, at + take);
    if (held + take < entry.size) {
      // A copy: the frame's payload is a view into the reader's buffer.
      this.head = Buffer.concat([this.head ?? Buffer.alloc(0), part]);
      return take;
    }
    const bytes = this.head ? Buffer.concat([this.head, part]) : part;
    this.head = undefined;
    if (!hash('sha256', bytes, 'buffer').equals(entry.sha256)) {
      throw new GroupcastError(ErrorCode.CHECKSUM, `${entry.path}: sha256 mismatch`);
    }
    writePartialSync(this.pathOf(staged), bytes, appliedMode(entry.mode, this.umask));
    this.modeSet.add(entry);
    this.index++;
    return take;
  }

  /** The file bytes go to next: the one in progress, or the next one started afresh. */
  private async currentFile(): Promise<IncomingFile> {
    if (this.current) return this.current;
    const staged = this.files[this.index];
    if (!staged) throw new GroupcastError(ErrorCode.PROTOCOL, 'bytes past the end of the tree');
    // Nothing is staged from here on (resume deleted it), so the file starts empty.
    const { entry } = staged;
    const signal = new AbortController().signal;
    this.current = await IncomingFile.open(this.pathOf(staged), entry.size, signal, this.checkpointBytes, { pieceSize: this.manifest.pieceSize, hashes: entry.pieces });
    return this.current;
  }

  private async closeFile(file: IncomingFile): Promise<void> {
    const { entry } = this.files[this.index]!;
    this.current = undefined;
    await file.release();
    if (!file.digest().equals(entry.sha256)) {
      await rm(file.path, { force: true });
      throw new GroupcastError(ErrorCode.CHECKSUM, `${entry.path}: sha256 mismatch`);
    }
    this.index++;
  }

  /** After a piece failed its check: the file in progress keeps its verified pieces, for the retry. */
  async keepVerified(): Promise<void> {
    await this.takeCurrent()?.keepVerified();
  }

  /** The file in progress, no longer this tree's to close (a small file's head in memory is dropped: it resumes from its start). */
  private takeCurrent(): IncomingFile | undefined {
    this.head = undefined;
    const file = this.current;
    this.current = undefined;
    return file;
  }

  /**
   * Complete: gives every entry its mode (but the small files written with it) and makes the whole
   * staging area durable with one sync of its file system.
   */
  async seal(): Promise<void> {
    await this.release();
    await sealStagingArea(this.dir, this.manifest, this.modeSet);
  }

  /** Closes the file in progress and keeps everything, for a resume. */
  async release(): Promise<void> {
    await this.takeCurrent()?.release();
  }

  /** Deletes the staging area, returning its space. */
  async discard(): Promise<void> {
    await this.release();
    await rm(this.dir, { recursive: true, force: true });
  }
}
