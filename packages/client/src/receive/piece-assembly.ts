import { createHash, type Hash } from 'node:crypto';
import { pieceHash, protocolViolation } from '@groupcast/shared';

/**
 * One piece arriving as DATA frames in order, from a peer or from the server: the payloads are kept as
 * they came (no piece-sized buffer, no copy) and hashed as they arrive, so the piece is checked the
 * moment its last byte is in and written from the same buffers.
 */
export class PieceAssembly {
  readonly chunks: Uint8Array[] = [];
  private readonly hash: Hash = createHash('sha256');
  private got = 0;

  constructor(
    readonly piece: number,
    /** The piece's first byte in the file. */
    private readonly start: number,
    readonly length: number,
  ) {}

  get complete(): boolean {
    return this.got === this.length;
  }

  /** Takes the next payload; DATA out of order or past the piece's end is a protocol violation. */
  add(offset: number, payload: Uint8Array): void {
    if (offset !== this.start + this.got || this.got + payload.length > this.length) {
      throw protocolViolation(`DATA at ${offset} out of order for piece ${this.piece}`);
    }
    this.chunks.push(payload);
    this.hash.update(payload);
    this.got += payload.length;
  }

  /** Once complete: whether the bytes hash to the manifest's entry for this piece. */
  matches(hashes: Buffer): boolean {
    return this.hash.digest().equals(pieceHash(hashes, this.piece));
  }
}
