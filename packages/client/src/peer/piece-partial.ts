import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Bitfield, ErrorCode, filePieces, GroupcastError, pieceCount, pieceLength, verifyPiece, writeChunks, type PieceLayout } from '@groupcast/shared';
import type { PieceSpec } from '../receive/incoming-file.js';
import { openPartial, PartialFile } from '../receive/partial-file.js';
import type { PieceStore } from './swarm.js';

/**
 * How far ahead of the prefix hash a piece may be and still be hashed from the buffers it arrived in:
 * one further on waits for the hash to read back every held piece before it, so it is read back too
 * rather than kept. Bounds the memory the hash holds to about this plus one piece, whatever the file's
 * size: on one box a member whose low piece came late held every piece that arrived while the hash read
 * back the run behind it (444 MiB for a 1 GiB file, 4 members).
 */
export const HASH_HOLD_BYTES = 2 * 1024 * 1024;

/**
 * A transfer's partial when pieces arrive in any order, from the server and from peers: a file of the
 * full size (sparse until written) and the set of pieces it holds. Nothing is trusted from a previous
 * run: opening re-reads the partial and holds exactly the pieces whose bytes match the manifest, so a
 * restarted member resumes from its pieces without a separate record to get out of step.
 */
export class PiecePartial extends PartialFile implements PieceStore {
  readonly layout: PieceLayout;
  /**
   * The whole-file SHA-256, fed in piece order as the verified prefix grows: a piece that arrives next
   * in order is hashed from the buffers it was verified and written from; one that arrived ahead is
   * read back and hashed when the prefix reaches it. So the whole file is still checked before it is
   * placed, without reading all of it again at the end.
   */
  private readonly fileHash: Hash = createHash('sha256');
  /** Pieces [0, hashedPieces) are in fileHash. */
  private hashedPieces = 0;
  /** Steps of the prefix hash, one after another (pieces are written concurrently). */
  private hashing: Promise<void> = Promise.resolve();
  private hashError: unknown;
  private readBack: Buffer | undefined;

  private constructor(
    path: string,
    readonly size: number,
    readonly pieces: PieceSpec,
    handle: FileHandle,
    readonly held: Bitfield,
  ) {
    super(path, handle);
    this.layout = filePieces(size, pieces.pieceSize);
  }

  get hashes(): Buffer {
    return this.pieces.hashes;
  }

  static async open(path: string, size: number, pieces: PieceSpec, signal: AbortSignal): Promise<PiecePartial> {
    const handle = await openPartial(path);
    try {
      const existing = (await handle.stat()).size;
      if (existing > size) await handle.truncate(0);
      const held = Bitfield.empty(pieceCount(size, pieces.pieceSize));
      const partial = new PiecePartial(path, size, pieces, handle, held);
      await partial.verifyHeld(Math.min(existing, size), signal);
      if (existing !== size) await handle.truncate(size);
      return partial;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Re-reads what a previous run left and holds the pieces that match; the prefix that matches is hashed on the way. */
  private async verifyHeld(upTo: number, signal: AbortSignal): Promise<void> {
    for (let piece = 0; piece < this.held.length && piece * this.pieces.pieceSize < upTo; piece++) {
      signal.throwIfAborted();
      const data = await this.readRaw(piece);
      if (!data || !verifyPiece(this.pieces.hashes, piece, data)) continue;
      this.held.set(piece);
      if (piece === this.hashedPieces) {
        this.fileHash.update(data);
        this.hashedPieces++;
      }
    }
  }

  /** Bytes held, counting each held piece at its length. */
  get heldBytes(): number {
    let bytes = 0;
    for (let i = 0; i < this.held.length; i++) if (this.held.has(i)) bytes += pieceLength(i, this.size, this.pieces.pieceSize);
    return bytes;
  }

  /**
   * Writes a piece the caller has verified, from the buffers it arrived in, and moves the prefix hash on
   * in the background (it may read pieces back; the piece is held, and can be announced, at once).
   * `release` is called once the buffers are no longer read: after the write, or after the hash took
   * them; not after a failed write (the transfer fails, and the collector takes them).
   */
  async write(piece: number, chunks: readonly Uint8Array[], release?: () => void): Promise<void> {
    await writeChunks(this.openHandle(), chunks, piece * this.pieces.pieceSize);
    this.held.set(piece);
    // The buffers are kept for the hash only if the prefix will reach this piece soon: without waiting
    // for another piece, and within HASH_HOLD_BYTES of where the hash is. The others are read back
    // later instead of held in memory. Decided here, not in the step: a step that named `chunks` would
    // hold them until it ran, and steps queue up behind read-backs (on one CPU-bound box nearly every
    // piece arrives ahead, and a member held ~1,000 queued 256 KiB pieces, 250 MiB, until its prefix caught up).
    if (this.hashesSoon(piece)) this.queueHashStep({ piece, chunks }, release);
    else {
      release?.();
      this.queueHashStep(undefined, undefined);
    }
  }

  private queueHashStep(inMemory: { piece: number; chunks: readonly Uint8Array[] } | undefined, release: (() => void) | undefined): void {
    this.hashing = this.hashing
      .then(() => (this.hashError ? undefined : this.extendPrefix(inMemory)))
      .catch((err: unknown) => {
        this.hashError = err;
      })
      .finally(release);
  }

  private hashesSoon(piece: number): boolean {
    if ((piece - this.hashedPieces) * this.pieces.pieceSize > HASH_HOLD_BYTES) return false;
    for (let i = this.hashedPieces; i < piece; i++) if (!this.held.has(i)) return false;
    return true;
  }

  /** Feeds the prefix hash every held piece from where it stands: `inMemory` from its buffers, the others read back. */
  private async extendPrefix(inMemory: { piece: number; chunks: readonly Uint8Array[] } | undefined): Promise<void> {
    while (this.hashedPieces < this.held.length && this.held.has(this.hashedPieces)) {
      if (inMemory?.piece === this.hashedPieces) {
        for (const chunk of inMemory.chunks) this.fileHash.update(chunk);
      } else {
        const length = pieceLength(this.hashedPieces, this.size, this.pieces.pieceSize);
        // One buffer for every piece read back: the steps run one at a time, and the hash copies what it takes.
        this.readBack ??= Buffer.alloc(this.pieces.pieceSize);
        const data = this.readBack.subarray(0, length);
        await this.readInto(this.hashedPieces * this.pieces.pieceSize, data);
        this.fileHash.update(data);
      }
      this.hashedPieces++;
    }
  }

  /**
   * Reads held bytes into `into` (a DATA frame's payload) for a peer. Not hashed again: every piece was
   * verified before it was written, and the peer checks it before keeping it (PROTOCOL.md §7.6).
   */
  async readInto(position: number, into: Buffer): Promise<void> {
    const { bytesRead } = await this.openHandle().read(into, 0, into.length, position);
    if (bytesRead !== into.length) throw new GroupcastError(ErrorCode.CLOSED, `partial ${this.path} is shorter than ${position + into.length} bytes`);
  }

  private async readRaw(piece: number): Promise<Buffer | undefined> {
    const length = pieceLength(piece, this.size, this.pieces.pieceSize);
    const data = Buffer.alloc(length);
    const { bytesRead } = await this.openHandle().read(data, 0, length, piece * this.pieces.pieceSize);
    return bytesRead === length ? data : undefined;
  }

  /** SHA-256 of the whole file, once every piece is held: what the pieces written hash to, in order. */
  async digest(): Promise<Buffer> {
    await this.hashing;
    if (this.hashError) throw this.hashError;
    if (this.hashedPieces !== this.held.length) throw new GroupcastError(ErrorCode.INTERNAL, `digest of a partial hashed to piece ${this.hashedPieces} of ${this.held.length}`);
    return this.fileHash.digest();
  }

  /** Makes the data durable; the handle stays open, so peers can still be served from it once it is placed. */
  async seal(): Promise<void> {
    await this.openHandle().sync();
  }
}
