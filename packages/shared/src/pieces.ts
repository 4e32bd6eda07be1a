import { createHash, type Hash } from 'node:crypto';
import { SHA256_LENGTH } from './constants.js';
import { ErrorCode, GroupcastError } from './errors.js';

/**
 * Pieces: a file cut into equal power-of-two pieces (the last one shorter), each with its SHA-256, so a
 * member can check every piece on its own before it writes it (and so before it can serve it to a peer)
 * instead of only the whole file at the end. Pure computation: the callers own the I/O.
 */

/** Smallest piece: one DATA chunk, so a server stream never splits a chunk across two pieces. */
export const MIN_PIECE_SIZE = 256 * 1024;
/** Largest piece: what a member buffers per request it verifies before writing. */
export const MAX_PIECE_SIZE = 16 * 1024 * 1024;
/** Pieces the chooser aims for at most: 64 KiB of hashes, a small manifest. */
export const TARGET_PIECES = 2048;
/**
 * Pieces a manifest may list in all: what fits one frame (32 bytes each). A file that would need more
 * (over 125 GiB at 16 MiB pieces) gets no manifest and is streamed whole, as to an old member.
 */
export const MAX_MANIFEST_PIECES = 8000;
/**
 * Pieces a tree's manifest (version 2, in TREE frames, not one frame) may list over all its files:
 * 8 MiB of hashes, half of MAX_TREE_MANIFEST_BYTES; 64 GiB of tree at the smallest piece size.
 */
export const MAX_TREE_PIECES = 262_144;

/** The smallest power of two in [MIN_PIECE_SIZE, MAX_PIECE_SIZE] that cuts `size` into ≤ TARGET_PIECES. */
export function choosePieceSize(size: number): number {
  let pieceSize = MIN_PIECE_SIZE;
  while (pieceSize < MAX_PIECE_SIZE && Math.ceil(size / pieceSize) > TARGET_PIECES) pieceSize *= 2;
  return pieceSize;
}

export function pieceCount(size: number, pieceSize: number): number {
  return Math.ceil(size / pieceSize);
}

/** Byte length of piece `index` of a `size`-byte file. */
export function pieceLength(index: number, size: number, pieceSize: number): number {
  return Math.min(pieceSize, size - index * pieceSize);
}

export function isPieceSize(value: number): boolean {
  return value >= MIN_PIECE_SIZE && value <= MAX_PIECE_SIZE && (value & (value - 1)) === 0;
}

/**
 * Cuts a byte stream into pieces as it goes and keeps each piece's SHA-256: fed the same chunks as
 * the whole-file hash at ingest, so the store reads a file once for both.
 */
export class PieceHasher {
  private readonly digests: Buffer[] = [];
  private current: Hash = createHash('sha256');
  private inPiece = 0;

  constructor(readonly pieceSize: number) {}

  update(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(this.pieceSize - this.inPiece, chunk.length - at);
      this.current.update(chunk.subarray(at, at + take));
      this.inPiece += take;
      at += take;
      if (this.inPiece === this.pieceSize) this.closePiece();
    }
  }

  /** Every piece's SHA-256, concatenated in order; call once, after the last byte. */
  digest(): Buffer {
    if (this.inPiece > 0) this.closePiece();
    return Buffer.concat(this.digests);
  }

  private closePiece(): void {
    this.digests.push(this.current.digest());
    this.current = createHash('sha256');
    this.inPiece = 0;
  }
}

/** The SHA-256 of piece `index` in a concatenated list. */
export function pieceHash(hashes: Buffer, index: number): Buffer {
  return hashes.subarray(index * SHA256_LENGTH, (index + 1) * SHA256_LENGTH);
}

export function verifyPiece(hashes: Buffer, index: number, data: Uint8Array): boolean {
  return createHash('sha256').update(data).digest().equals(pieceHash(hashes, index));
}

/** The error a piece whose bytes do not hash to the manifest raises; `piece` says which. */
export class PieceMismatch extends GroupcastError {
  constructor(readonly piece: number) {
    super(ErrorCode.CHECKSUM, `piece ${piece} does not match its sha256 in the manifest`);
  }
}

/**
 * Checks a file's bytes piece by piece as they arrive in order (the server's stream, or a partial being
 * re-read at resume). `verified` is the length of the prefix whose pieces all matched.
 */
export class PieceVerifier {
  private current: Hash = createHash('sha256');
  private inPiece = 0;
  private piece: number;
  private verifiedBytes: number;

  /** Starts at piece `from`: the bytes before it are already verified. */
  constructor(
    private readonly hashes: Buffer,
    private readonly pieceSize: number,
    private readonly size: number,
    from = 0,
  ) {
    this.piece = from;
    this.verifiedBytes = Math.min(size, from * pieceSize);
  }

  get verified(): number {
    return this.verifiedBytes;
  }

  /** Throws PieceMismatch when a piece completes with the wrong hash; the bytes after it are then unchecked. */
  update(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      const length = pieceLength(this.piece, this.size, this.pieceSize);
      const take = Math.min(length - this.inPiece, chunk.length - at);
      if (take <= 0) throw new GroupcastError(ErrorCode.PROTOCOL, 'bytes past the end of the file');
      this.current.update(chunk.subarray(at, at + take));
      this.inPiece += take;
      at += take;
      if (this.inPiece === length) this.closePiece();
    }
  }

  private closePiece(): void {
    const digest = this.current.digest();
    if (!digest.equals(pieceHash(this.hashes, this.piece))) throw new PieceMismatch(this.piece);
    this.verifiedBytes += this.inPiece;
    this.piece++;
    this.current = createHash('sha256');
    this.inPiece = 0;
  }
}

/** Bytes `[start, end)` of a file. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Where each piece of a transfer lies in its bytes: the one rule for numbering pieces, used by the
 * member's swarm and stream, and by the server's tracker and piece server. A file's pieces cut it
 * evenly; a tree's are cut per file (PROTOCOL.md §7.7: each file's last piece may be short, an empty
 * file has none) and numbered over its files in manifest order, while the bytes run over the files'
 * concatenation. Either way the pieces tile the bytes: piece i ends where piece i + 1 starts.
 */
export interface PieceLayout {
  readonly count: number;
  /** Bytes of the transfer: the file's, or the tree's files' together. */
  readonly size: number;
  /** The manifest's piece size: no piece is longer. */
  readonly pieceSize: number;
  /** Bytes `[start, end)` of piece `index` in the transfer. */
  span(index: number): ByteRange;
  /** The piece byte `offset` (< size) lies in. */
  pieceAt(offset: number): number;
}

/**
 * Of the first `count` of `starts` (ascending), the index of the last at or before `position` (0 when
 * none is): which run of bytes laid end to end holds `position`. A binary search, for the per-frame paths.
 */
export function lastStartAtOrBefore(starts: ArrayLike<number>, count: number, position: number): number {
  let low = 0;
  let high = count - 1;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (starts[middle]! <= position) low = middle;
    else high = middle - 1;
  }
  return low;
}

/** Byte length of piece `index` of `layout`. */
export function spanLength(layout: PieceLayout, index: number): number {
  const { start, end } = layout.span(index);
  return end - start;
}

/** A single file's pieces. */
export function filePieces(size: number, pieceSize: number): PieceLayout {
  return {
    count: pieceCount(size, pieceSize),
    size,
    pieceSize,
    span: (index) => ({ start: index * pieceSize, end: Math.min(size, (index + 1) * pieceSize) }),
    pieceAt: (offset) => Math.floor(offset / pieceSize),
  };
}

/** A tree's pieces: each file's, in order, over the concatenation of the files' bytes. */
export class TreePieces implements PieceLayout {
  readonly count: number;
  readonly size: number;
  /** Per file: where its bytes start in the concatenation, and its first piece's global index. */
  private readonly fileStarts: number[] = [];
  private readonly firstPieces: number[] = [];
  /** Per global piece: the file it belongs to. */
  private readonly owners: Uint32Array;
  /** Per global piece, and one more: where it starts in the concatenation (the last is the size). */
  private readonly starts: Float64Array;

  constructor(private readonly fileSizes: readonly number[], readonly pieceSize: number) {
    let size = 0;
    let count = 0;
    for (const fileSize of fileSizes) {
      this.fileStarts.push(size);
      this.firstPieces.push(count);
      size += fileSize;
      count += pieceCount(fileSize, pieceSize);
    }
    this.size = size;
    this.count = count;
    this.owners = new Uint32Array(count);
    this.starts = new Float64Array(count + 1);
    fileSizes.forEach((fileSize, file) => {
      const first = this.firstPieces[file]!;
      const pieces = pieceCount(fileSize, pieceSize);
      this.owners.fill(file, first, first + pieces);
      for (let k = 0; k < pieces; k++) this.starts[first + k] = this.fileStarts[file]! + k * pieceSize;
    });
    this.starts[count] = size;
  }

  /** The file (its index among the tree's files) that piece `index` belongs to. */
  fileOf(index: number): number {
    return this.owners[index]!;
  }

  /** The global index of file `file`'s first piece. */
  firstPiece(file: number): number {
    return this.firstPieces[file]!;
  }

  /** Where file `file`'s bytes start in the concatenation. */
  fileStart(file: number): number {
    return this.fileStarts[file]!;
  }

  span(index: number): ByteRange {
    return { start: this.starts[index]!, end: this.starts[index + 1]! };
  }

  /** The last piece starting at or before `offset`: pieces tile the bytes, so the one holding it. */
  pieceAt(offset: number): number {
    return lastStartAtOrBefore(this.starts, this.count, offset);
  }
}

/**
 * What the server's stream sends after a member's BITFIELD (PROTOCOL.md §7.5, §7.7): from `from` to the
 * end, every piece whose bit is clear, in order, adjacent pieces merged into one range (in a tree, across
 * files). Both ends compute it, so the member knows the offset each DATA must carry.
 */
export function missingRanges(held: { has(index: number): boolean }, layout: PieceLayout, from: number): ByteRange[] {
  const ranges: ByteRange[] = [];
  for (let piece = 0; piece < layout.count; piece++) {
    if (held.has(piece)) continue;
    const span = layout.span(piece);
    if (span.end <= from) continue;
    const start = Math.max(span.start, from);
    const last = ranges.at(-1);
    if (last && last.end === start) last.end = span.end;
    else ranges.push({ start, end: span.end });
  }
  return ranges;
}

/** The ACCEPT offset for a member holding `held`: the bytes of its leading run of held pieces. */
export function heldPrefix(held: { has(index: number): boolean }, layout: PieceLayout): number {
  let piece = 0;
  while (piece < layout.count && held.has(piece)) piece++;
  return piece === layout.count ? layout.size : layout.span(piece).start;
}
