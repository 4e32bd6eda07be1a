import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Bitfield, hashFromHandle, pieceCount, pieceLength, verifyPiece, writeFully } from '@groupcast/shared';
import type { PieceSpec } from '../receive/incoming-file.js';
import { openPartial, PartialFile } from '../receive/partial-file.js';

/**
 * A transfer's partial when pieces arrive in any order, from the server and from peers: a file of the
 * full size (sparse until written) and the set of pieces it holds. Nothing is trusted from a previous
 * run: opening re-reads the partial and holds exactly the pieces whose bytes match the manifest, so a
 * restarted member resumes from its pieces without a separate record to get out of step.
 */
export class PiecePartial extends PartialFile {
  private constructor(
    path: string,
    readonly size: number,
    readonly pieces: PieceSpec,
    handle: FileHandle,
    readonly held: Bitfield,
  ) {
    super(path, handle);
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

  private async verifyHeld(upTo: number, signal: AbortSignal): Promise<void> {
    for (let piece = 0; piece < this.held.length && piece * this.pieces.pieceSize < upTo; piece++) {
      signal.throwIfAborted();
      const data = await this.readRaw(piece);
      if (data && verifyPiece(this.pieces.hashes, piece, data)) this.held.set(piece);
    }
  }

  /** Bytes held, counting each held piece at its length. */
  get heldBytes(): number {
    let bytes = 0;
    for (let i = 0; i < this.held.length; i++) if (this.held.has(i)) bytes += pieceLength(i, this.size, this.pieces.pieceSize);
    return bytes;
  }

  /** Writes a piece the caller has verified. */
  async write(piece: number, data: Buffer): Promise<void> {
    await writeFully(this.openHandle(), data, piece * this.pieces.pieceSize);
    this.held.set(piece);
  }

  /** A held piece, checked against the manifest again before it is served; undefined if it no longer matches. */
  async read(piece: number): Promise<Buffer | undefined> {
    if (!this.held.has(piece)) return undefined;
    const data = await this.readRaw(piece);
    return data && verifyPiece(this.pieces.hashes, piece, data) ? data : undefined;
  }

  private async readRaw(piece: number): Promise<Buffer | undefined> {
    const length = pieceLength(piece, this.size, this.pieces.pieceSize);
    const data = Buffer.alloc(length);
    const { bytesRead } = await this.openHandle().read(data, 0, length, piece * this.pieces.pieceSize);
    return bytesRead === length ? data : undefined;
  }

  /** SHA-256 of the whole file, read back from disk: what is placed is what was hashed. */
  async digest(signal?: AbortSignal): Promise<Buffer> {
    const hash = createHash('sha256');
    await hashFromHandle(this.openHandle(), this.size, hash, signal);
    return hash.digest();
  }

  /** Makes the data durable; the handle stays open, so peers can still be served from it once it is placed. */
  async seal(): Promise<void> {
    await this.openHandle().sync();
  }
}
