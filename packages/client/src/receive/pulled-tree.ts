import { closeSync, constants, openSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import {
  ErrorCode, GroupcastError, LoopTurns, manifestHashes, SMALL_FILE_BYTES, spanLength, writeChunks,
  type Bitfield, type Manifest, type ManifestEntry, type TreePieces,
} from '@groupcast/shared';
import { checkWholeFile, HeldTree } from './held-tree.js';
import { openPartial, writePartialSync } from './partial-file.js';
import { stagedPath } from './tree-staging.js';
import type { PieceStore } from '../peer/swarm.js';

/**
 * A tree pulled from peers and the server (PROTOCOL.md §7.7, *Pulled*): its staging area as a piece
 * store for the swarm. Pieces arrive in any order, each already checked by the swarm against the
 * manifest, and are written into their file at their place in it; a file of more than one piece is
 * read back and checked by its SHA-256 once its last piece is written, before that piece is held (so
 * the tree is never complete with a file that does not match). Opening scans the staging area as a
 * resume does (held-tree.ts): a kill -9, a seeded new version, or both, hold exactly the pieces whose
 * bytes match. Peers are served from the staged files, and once the tree is placed from the placed
 * version (servePlaced), which is never written again.
 */

interface PulledFile {
  entry: ManifestEntry;
  /** Its pieces in all, and those written (or held at opening) so far: at `pieces`, it is whole. */
  pieces: number;
  written: number;
}

/** A file of one piece no larger than SMALL_FILE_BYTES: written and read whole, with synchronous calls. */
function isSmall(file: PulledFile): boolean {
  return file.pieces === 1 && file.entry.size <= SMALL_FILE_BYTES;
}

export class PulledTree implements PieceStore {
  readonly layout: TreePieces;
  readonly hashes: Buffer;
  readonly held: Bitfield;
  private readonly files: PulledFile[];
  /** Where peers are served from: the staging area, then the placed version. */
  private servingDir: string;
  /** The file last read for a peer, kept open: peers ask for a file's pieces one after another. */
  private reading: { file: number; handle: FileHandle } | undefined;
  /** Small files are written and read with synchronous calls (SMALL_FILE_BYTES): the loop gets its turns. */
  private readonly turns = new LoopTurns();

  private constructor(private readonly staged: HeldTree, manifest: Manifest) {
    this.layout = staged.layout;
    this.held = staged.held;
    this.hashes = manifestHashes(manifest);
    this.servingDir = staged.dir;
    const entries = manifest.entries.filter((entry) => entry.kind === 'file');
    this.files = entries.map((entry, file) => {
      const first = this.layout.firstPiece(file);
      const pieces = (file + 1 < entries.length ? this.layout.firstPiece(file + 1) : this.layout.count) - first;
      let written = 0;
      for (let piece = first; piece < first + pieces; piece++) if (this.held.has(piece)) written++;
      return { entry, pieces, written };
    });
  }

  /** Opens (a seeded, or resumed) staging area: its directories made, every staged piece that matches held. */
  static async open(dir: string, manifest: Manifest, signal: AbortSignal): Promise<PulledTree> {
    return new PulledTree(await HeldTree.open(dir, manifest, signal), manifest);
  }

  get dir(): string {
    return this.staged.dir;
  }

  get size(): number {
    return this.layout.size;
  }

  /** Bytes held in verified pieces: what ACCEPT says (§7.6). */
  get heldBytes(): number {
    let bytes = 0;
    for (let piece = 0; piece < this.held.length; piece++) if (this.held.has(piece)) bytes += spanLength(this.layout, piece);
    return bytes;
  }

  get filesDone(): number {
    return this.files.filter((file) => file.written === file.pieces).length;
  }

  get fileCount(): number {
    return this.files.length;
  }

  get complete(): boolean {
    return this.held.complete;
  }

  /**
   * Writes a piece the swarm verified into its file. The last piece of a file of several is held only
   * once the whole file's SHA-256 matches (read back: other pieces of it were written from other
   * buffers); a mismatch deletes the file and throws CHECKSUM (the manifest lies about it).
   */
  async write(piece: number, chunks: readonly Uint8Array[], release?: () => void): Promise<void> {
    const file = this.layout.fileOf(piece);
    const pulled = this.files[file]!;
    const path = stagedPath(this.staged.dir, pulled.entry);
    if (isSmall(pulled)) {
      // Its one piece is the whole file, checked by the swarm (its hash is the file's): one open, write, close.
      writePartialSync(path, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
      release?.();
      pulled.written = 1;
      this.held.set(piece);
      await this.turns.made(3);
      return;
    }
    const handle = await openPartial(path);
    try {
      await writeChunks(handle, chunks, this.layout.span(piece).start - this.layout.fileStart(file));
      release?.();
      // Counted after the write: the piece that makes the file whole is written after every other one of it.
      if (++pulled.written === pulled.pieces && pulled.pieces > 1) await checkWholeFile(handle, pulled.entry, path);
    } finally {
      await handle.close();
    }
    this.held.set(piece);
  }

  /** Reads held bytes for a peer: a DATA frame's worth, within one piece and so one file. Not hashed again (§7.6). */
  async readInto(position: number, into: Buffer): Promise<void> {
    const file = this.layout.fileOf(this.layout.pieceAt(position));
    if (isSmall(this.files[file]!)) return this.readSmall(file, position, into);
    const handle = await this.readHandle(file);
    const { bytesRead } = await handle.read(into, 0, into.length, position - this.layout.fileStart(file));
    if (bytesRead !== into.length) throw new GroupcastError(ErrorCode.CLOSED, `${this.files[file]!.entry.path} is shorter than its held pieces`);
  }

  private async readSmall(file: number, position: number, into: Buffer): Promise<void> {
    const fd = openSync(stagedPath(this.servingDir, this.files[file]!.entry), constants.O_RDONLY | constants.O_NOFOLLOW);
    let bytesRead: number;
    try {
      bytesRead = readSync(fd, into, 0, into.length, position - this.layout.fileStart(file));
    } finally {
      closeSync(fd);
    }
    if (bytesRead !== into.length) throw new GroupcastError(ErrorCode.CLOSED, `${this.files[file]!.entry.path} is shorter than its held pieces`);
    await this.turns.made(3);
  }

  private async readHandle(file: number): Promise<FileHandle> {
    if (this.reading?.file === file) return this.reading.handle;
    await this.closeReading();
    const handle = await open(stagedPath(this.servingDir, this.files[file]!.entry), constants.O_RDONLY | constants.O_NOFOLLOW);
    this.reading = { file, handle };
    return handle;
  }

  private async closeReading(): Promise<void> {
    const reading = this.reading;
    this.reading = undefined;
    await reading?.handle.close().catch(() => undefined);
  }

  /** Placed: peers are served from the placed version's directory (the staged paths moved there). */
  async servePlaced(versionDir: string): Promise<void> {
    await this.closeReading();
    this.servingDir = versionDir;
  }

  /** Complete: empty files made, every entry's mode, one sync of the staging area. */
  async seal(): Promise<void> {
    await this.closeReading();
    await this.staged.seal();
  }

  /** A bad piece is never written: what is held stays for the retry. */
  async keepVerified(): Promise<void> {
    await this.release();
  }

  /** Stops reading and keeps everything, for a resume. */
  async release(): Promise<void> {
    await this.closeReading();
    await this.staged.release();
  }

  /** Deletes the staging area, returning its space. */
  async discard(): Promise<void> {
    await this.closeReading();
    await this.staged.discard();
  }
}
