import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import {
  filePieces, missingRanges, pieceCount, pieceHash, pieceLength, PieceMismatch, protocolViolation, writeFully, type ByteRange,
} from '@groupcast/shared';
import type { PieceSpec } from './incoming-file.js';
import { openPartial } from './partial-file.js';
import { PieceAssembly } from './piece-assembly.js';
import type { PiecePartial } from '../peer/piece-partial.js';

/**
 * Only what changed travels (issue 11): a new version of a file shares most of its pieces with the
 * version it replaces. Before answering the OFFER the member copies every piece of the new file it finds
 * in the old one (same SHA-256 as the manifest's piece: at the same index, or anywhere at a piece-aligned
 * offset of the old file) into the partial; the partial then holds them as verified pieces, and the
 * server is told in BITFIELD (the stream, PROTOCOL.md §7.5) or by the swarm's own BITFIELD.
 */

/**
 * Reads the old file once, piece by piece at piece-aligned offsets, and writes each old piece whose hash
 * is a wanted piece of the new file into the partial at that piece's place (every place that wants it).
 * The hash that matched is of the very buffer that is written. Returns the number of
 * pieces copied. A changed or vanished old file only means fewer pieces: the rest comes over the wire.
 */
export async function seedFromOldVersion(oldPath: string, partialPath: string, size: number, pieces: PieceSpec, signal: AbortSignal): Promise<number> {
  const wanted = wantedPieces(size, pieces);
  if (wanted.size === 0) return 0;
  const old = await open(oldPath, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (!old) return 0;
  let copied = 0;
  try {
    const oldSize = (await old.stat()).size;
    const partial = await openPartial(partialPath);
    try {
      const buffer = Buffer.alloc(Math.min(pieces.pieceSize, Math.max(oldSize, 1)));
      for (let at = 0; at < oldSize && wanted.size > 0; at += pieces.pieceSize) {
        signal.throwIfAborted();
        const { bytesRead } = await old.read(buffer, 0, Math.min(pieces.pieceSize, oldSize - at), at);
        if (bytesRead === 0) break;
        const data = buffer.subarray(0, bytesRead);
        const key = createHash('sha256').update(data).digest('hex');
        for (const piece of wanted.get(key) ?? []) {
          await writeFully(partial, data, piece * pieces.pieceSize);
          copied++;
        }
        wanted.delete(key);
      }
    } finally {
      await partial.close();
    }
  } finally {
    await old.close();
  }
  return copied;
}

/** The new file's pieces by hash (a piece repeated in the file is wanted at each of its places). */
function wantedPieces(size: number, { pieceSize, hashes }: PieceSpec): Map<string, number[]> {
  const wanted = new Map<string, number[]>();
  for (let piece = 0; piece < pieceCount(size, pieceSize); piece++) {
    const key = pieceHash(hashes, piece).toString('hex');
    const places = wanted.get(key);
    if (places) places.push(piece);
    else wanted.set(key, [piece]);
  }
  return wanted;
}

/**
 * The server's stream after this member's BITFIELD: DATA only for the pieces not held, in order
 * (missingRanges, the rule both ends share). Each DATA must carry exactly the next expected offset;
 * a piece's frames are kept as they came and hashed as they arrive (PieceAssembly), checked against the
 * manifest, and written from the same buffers into the piece partial. Memory: one piece's frames.
 */
export class HeldStream {
  private readonly ranges: ByteRange[];
  private range = 0;
  private position: number;
  private piece: PieceAssembly | undefined;

  constructor(private readonly partial: PiecePartial, offset: number) {
    this.ranges = missingRanges(partial.held, filePieces(partial.size, partial.pieces.pieceSize), offset);
    this.position = this.ranges[0]?.start ?? partial.size;
  }

  get complete(): boolean {
    return this.range >= this.ranges.length;
  }

  /** Takes one DATA frame's payload; throws PROTOCOL for an offset out of turn, PieceMismatch for a bad piece. */
  async write(offset: number, payload: Uint8Array): Promise<void> {
    const current = this.ranges[this.range];
    if (!current || offset !== this.position) throw protocolViolation(`DATA at offset ${offset}, expected ${this.position}`);
    if (offset + payload.length > current.end) throw protocolViolation(`DATA past the end of a missing range at ${current.end}`);
    const { pieceSize } = this.partial.pieces;
    let at = 0;
    while (at < payload.length) {
      const index = Math.floor(this.position / pieceSize);
      const start = index * pieceSize;
      const piece = (this.piece ??= new PieceAssembly(index, start, pieceLength(index, this.partial.size, pieceSize)));
      const take = Math.min(start + piece.length - this.position, payload.length - at);
      piece.add(this.position, payload.subarray(at, at + take));
      at += take;
      this.position += take;
      if (piece.complete) await this.closePiece(piece);
    }
    if (this.position === current.end) {
      this.range++;
      this.position = this.ranges[this.range]?.start ?? this.partial.size;
    }
  }

  private async closePiece(piece: PieceAssembly): Promise<void> {
    this.piece = undefined;
    if (!piece.matches(this.partial.pieces.hashes)) throw new PieceMismatch(piece.piece);
    await this.partial.write(piece.piece, piece.chunks);
  }
}
