import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, rm, type FileHandle } from 'node:fs/promises';
import {
  Bitfield, ErrorCode, GroupcastError, hashFromHandle, heldPrefix, missingRanges, PieceMismatch, protocolViolation, TreePieces,
  verifyPiece, writeChunks, type ByteRange, type Manifest, type ManifestEntry,
} from '@groupcast/shared';
import { openPartial } from './partial-file.js';
import { PieceAssembly } from './piece-assembly.js';
import { makeStagingDirs, sealStagingArea, stagedPath } from './tree-staging.js';

/**
 * A tree's staging area as pieces (PROTOCOL.md §7.7, held pieces): what a member replacing a version
 * receives into after seeding it (tree-seed.ts). Opening scans every staged file and holds exactly the
 * pieces whose bytes match the new manifest, so a seeded area, one left by a kill, and both at once are
 * the same thing: a partial that trusts only verified data. The member says BITFIELD; the server's
 * stream then carries only the missing pieces over the concatenation (missingRanges, the rule both ends
 * share), each gathered, checked and written whole into its file. Memory: one piece.
 */

interface TreeFile {
  entry: ManifestEntry;
  path: string;
  /** Its pieces in all. */
  pieces: number;
  /** Pieces of it not yet held; at 0 the whole file's SHA-256 is checked. */
  missing: number;
}

/**
 * A staged file of several pieces, every one written (each checked as it came): read back whole and
 * checked by its SHA-256, so what is placed is what was checked; a mismatch deletes it (CHECKSUM: the
 * manifest's hashes disagree with each other). The stream's held pieces and a pulled tree both end a file so.
 */
export async function checkWholeFile(handle: FileHandle, entry: ManifestEntry, path: string): Promise<void> {
  const hash = createHash('sha256');
  await hashFromHandle(handle, entry.size, hash);
  if (hash.digest().equals(entry.sha256)) return;
  await rm(path, { force: true });
  throw new GroupcastError(ErrorCode.CHECKSUM, `${entry.path}: sha256 mismatch`);
}

export class HeldTree {
  readonly held: Bitfield;
  private ranges: ByteRange[] = [];
  private range = 0;
  private position = 0;
  /** The piece being gathered: its index and bytes so far. */
  /** The piece arriving: its index in the tree, and its frames (hashed against its file's piece list). */
  private piece: { index: number; assembly: PieceAssembly } | undefined;
  /** No missing piece lies before this one: the stream only moves forward. */
  private cursor = 0;
  private writing: { file: number; handle: FileHandle } | undefined;

  private constructor(
    readonly dir: string,
    private readonly manifest: Manifest,
    readonly layout: TreePieces,
    private readonly files: TreeFile[],
  ) {
    this.held = Bitfield.empty(layout.count);
  }

  /** Opens a (seeded) staging area: makes what is missing of it, and holds every staged piece that verifies. */
  static async open(dir: string, manifest: Manifest, signal: AbortSignal): Promise<HeldTree> {
    await makeStagingDirs(dir, manifest);
    const entries = manifest.entries.filter((entry) => entry.kind === 'file');
    const layout = new TreePieces(entries.map((entry) => entry.size), manifest.pieceSize);
    const files = entries.map((entry, index) => {
      const pieces = (index + 1 < entries.length ? layout.firstPiece(index + 1) : layout.count) - layout.firstPiece(index);
      return { entry, path: stagedPath(dir, entry), pieces, missing: pieces };
    });
    const tree = new HeldTree(dir, manifest, layout, files);
    for (let file = 0; file < files.length; file++) await tree.scan(file, signal);
    tree.ranges = missingRanges(tree.held, layout, tree.offset);
    tree.position = tree.ranges[0]?.start ?? layout.size;
    return tree;
  }

  get size(): number {
    return this.layout.size;
  }

  /** The ACCEPT offset: the bytes of the leading run of held pieces. */
  get offset(): number {
    return heldPrefix(this.held, this.layout);
  }

  /** Bytes still to come over the wire. */
  get missingBytes(): number {
    const ahead = this.ranges.slice(this.range).reduce((sum, { start, end }) => sum + end - start, 0);
    return ahead - (this.position - (this.ranges[this.range]?.start ?? this.position));
  }

  get filesDone(): number {
    return this.files.filter((file) => file.missing === 0).length;
  }

  get fileCount(): number {
    return this.files.length;
  }

  get complete(): boolean {
    return this.range >= this.ranges.length;
  }

  /**
   * Reads one staged file and holds its pieces that match. A file not a regular file, longer than its
   * entry, or a hard link (to the old version) that does not hold every piece is deleted: it is written
   * again, and a link must never be. A file whose pieces all match but whose whole SHA-256 does not
   * (the manifest lies about it) is deleted and refused, as a resume does.
   */
  private async scan(file: number, signal: AbortSignal): Promise<void> {
    const { entry, path } = this.files[file]!;
    const stats = await lstat(path).catch(() => undefined);
    if (!stats) return;
    if (!stats.isFile() || stats.size > entry.size) {
      await rm(path, { recursive: true, force: true });
      return;
    }
    const staged = this.files[file]!;
    const first = this.layout.firstPiece(file);
    const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    const whole = createHash('sha256');
    const verified: number[] = [];
    try {
      for (let index = first; index < first + staged.pieces; index++) {
        signal.throwIfAborted();
        const { start, end } = this.layout.span(index);
        const data = Buffer.alloc(end - start);
        const { bytesRead } = await handle.read(data, 0, data.length, start - this.layout.fileStart(file));
        if (bytesRead !== data.length || !verifyPiece(entry.pieces, index - first, data)) continue;
        verified.push(index);
        // Whole-file hash over the prefix of good pieces; used only when every piece is good.
        if (verified.length === index - first + 1) whole.update(data);
      }
    } finally {
      await handle.close();
    }
    if (verified.length === staged.pieces && !whole.digest().equals(entry.sha256)) {
      await rm(path, { force: true });
      throw new GroupcastError(ErrorCode.CHECKSUM, `${entry.path}: sha256 does not match the manifest`);
    }
    if (verified.length < staged.pieces && stats.nlink > 1) {
      await rm(path, { force: true });
      return;
    }
    for (const index of verified) this.held.set(index);
    staged.missing = staged.pieces - verified.length;
  }

  /** Takes one DATA frame's payload; throws PROTOCOL for an offset out of turn, PieceMismatch for a bad piece, CHECKSUM for a bad file. */
  async write(offset: number, payload: Uint8Array): Promise<void> {
    const current = this.ranges[this.range];
    if (!current || offset !== this.position) throw protocolViolation(`DATA at offset ${offset}, expected ${this.position}`);
    if (offset + payload.length > current.end) throw protocolViolation(`DATA past the end of a missing range at ${current.end}`);
    let at = 0;
    while (at < payload.length) {
      const piece = (this.piece ??= this.pieceAt(this.position));
      const { assembly } = piece;
      const take = Math.min(this.layout.span(piece.index).end - this.position, payload.length - at);
      assembly.add(this.position, payload.subarray(at, at + take));
      at += take;
      this.position += take;
      if (assembly.complete) await this.closePiece(piece.index, assembly);
    }
    if (this.position === current.end) {
      this.range++;
      this.position = this.ranges[this.range]?.start ?? this.layout.size;
    }
  }

  /** The missing piece that starts at `position` (ranges start and end on piece boundaries). */
  private pieceAt(position: number): { index: number; assembly: PieceAssembly } {
    while (this.cursor < this.layout.count && this.layout.span(this.cursor).end <= position) this.cursor++;
    const index = this.cursor;
    if (index >= this.layout.count) throw protocolViolation(`DATA at ${position}, past the tree's last piece`);
    const { start, end } = this.layout.span(index);
    if (start !== position) throw protocolViolation(`DATA at ${position} does not start a piece`);
    // Numbered within its file: a file's piece hashes are listed per entry.
    const inFile = index - this.layout.firstPiece(this.layout.fileOf(index));
    return { index, assembly: new PieceAssembly(inFile, start, end - start) };
  }

  private async closePiece(index: number, assembly: PieceAssembly): Promise<void> {
    this.piece = undefined;
    const file = this.layout.fileOf(index);
    const staged = this.files[file]!;
    if (!assembly.matches(staged.entry.pieces)) throw new PieceMismatch(index);
    const handle = await this.handleFor(file);
    await writeChunks(handle, assembly.chunks, this.layout.span(index).start - this.layout.fileStart(file));
    this.held.set(index);
    staged.missing--;
    // One piece: its hash is the file's. More: the whole file is read back, so what is placed is what was checked.
    // Its pieces stay set on a mismatch: the failed delivery ends this staging's use, and the retry rescans.
    if (staged.missing === 0 && staged.pieces > 1) await checkWholeFile(handle, staged.entry, staged.path);
  }

  /** The open handle of the file being written; one at a time, files come in order. Nothing written is a link (scan deleted those). */
  private async handleFor(file: number): Promise<FileHandle> {
    if (this.writing?.file === file) return this.writing.handle;
    await this.closeWriting();
    this.writing = { file, handle: await openPartial(this.files[file]!.path) };
    return this.writing.handle;
  }

  private async closeWriting(): Promise<void> {
    const writing = this.writing;
    this.writing = undefined;
    await writing?.handle.close();
  }

  /** Complete: empty files made, every entry's mode, one sync of the staging area. */
  async seal(): Promise<void> {
    await this.closeWriting();
    for (const { entry, path } of this.files) if (entry.size === 0) await (await openPartial(path)).close();
    await sealStagingArea(this.dir, this.manifest);
  }

  /** A bad piece is never written: what is held stays for the retry. */
  async keepVerified(): Promise<void> {
    await this.release();
  }

  /** Closes the file being written and keeps everything, for a resume. */
  async release(): Promise<void> {
    this.piece = undefined;
    await this.closeWriting().catch(() => undefined);
  }

  /** Deletes the staging area, returning its space. */
  async discard(): Promise<void> {
    await this.release();
    await rm(this.dir, { recursive: true, force: true });
  }
}
