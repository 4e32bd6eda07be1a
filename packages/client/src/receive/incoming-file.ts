import { createHash, type Hash } from 'node:crypto';
import { stat, type FileHandle } from 'node:fs/promises';
import { errnoCode, hashFromHandle, PieceVerifier, writeFully } from '@groupcast/shared';
import { resumeOffset } from './download-area.js';
import { openPartial, PartialFile } from './partial-file.js';

/** Dirty data is forced to disk this often, so a resume after a crash never trusts more than a checkpoint's worth. */
export const CHECKPOINT_BYTES = 64 * 1024 * 1024;

/** Bytes a partial already holds, or undefined if there is none. */
export async function partialLength(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** A transfer's piece hashes, from its manifest: every piece is checked as it completes. */
export interface PieceSpec {
  pieceSize: number;
  hashes: Buffer;
}

/**
 * One transfer's bytes on their way to disk: the partial file, a running SHA-256 over everything it
 * holds, and the offset the next byte must come from. Writes are sequential and awaited, so memory
 * holds at most one frame's payload whatever the file's size.
 */
export class IncomingFile extends PartialFile {
  private sinceCheckpoint = 0;

  private constructor(
    path: string,
    readonly size: number,
    handle: FileHandle,
    private readonly hash: Hash,
    private position: number,
    private readonly checkpointBytes: number,
    private readonly verifier: PieceVerifier | undefined,
  ) {
    super(path, handle);
  }

  /**
   * Opens or creates the partial and rehashes the prefix it already holds, so the final digest covers
   * the whole file. A partial longer than the file is emptied. The rehash stops early if `signal` fires.
   * With piece hashes, the partial is kept only up to the end of its last good piece.
   */
  static async open(
    path: string, size: number, signal: AbortSignal, checkpointBytes = CHECKPOINT_BYTES, pieces?: PieceSpec,
  ): Promise<IncomingFile> {
    const handle = await openPartial(path);
    try {
      const held = (await handle.stat()).size;
      let offset = resumeOffset(held, size);
      if (offset !== held) await handle.truncate(offset);
      let hash = createHash('sha256');
      if (pieces) ({ hash, offset } = await verifiedPrefix(handle, offset, size, pieces, signal));
      else await hashFromHandle(handle, offset, hash, signal);
      // The next byte starts a piece (a verified prefix ends on a boundary): check from that piece on.
      const verifier = pieces && new PieceVerifier(pieces.hashes, pieces.pieceSize, size, Math.ceil(offset / pieces.pieceSize));
      return new IncomingFile(path, size, handle, hash, offset, checkpointBytes, verifier);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** The offset the next DATA must carry (= bytes held). */
  get offset(): number {
    return this.position;
  }

  get complete(): boolean {
    return this.position === this.size;
  }

  async write(payload: Uint8Array): Promise<void> {
    const handle = this.openHandle();
    // The write runs on libuv's thread pool; hashing the same bytes meanwhile on this thread overlaps
    // the two. If the write fails the digest is never used: the partial is discarded.
    const written = writeFully(handle, payload, this.position);
    this.hash.update(payload);
    try {
      this.verifier?.update(payload);
    } catch (err) {
      await written.catch(() => undefined);
      throw err;
    }
    await written;
    this.position += payload.length;
    this.sinceCheckpoint += payload.length;
    if (this.sinceCheckpoint >= this.checkpointBytes) {
      await handle.datasync();
      this.sinceCheckpoint = 0;
    }
  }

  /** The digest of everything written; call once, when complete. */
  digest(): Buffer {
    return this.hash.digest();
  }

  /** Flushes and closes, keeping the file: ready to be linked into place. */
  async seal(): Promise<void> {
    const handle = this.openHandle();
    this.handle = undefined;
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /**
   * After a piece failed its check: cuts the partial back to its verified pieces and closes it, so the
   * next attempt resumes from there instead of from nothing.
   */
  async keepVerified(): Promise<void> {
    const handle = this.openHandle();
    await handle.truncate(this.verifier?.verified ?? 0);
    await handle.datasync();
    await this.release();
  }
}

/**
 * Re-reads a partial piece by piece: the whole-file hash covers only bytes whose pieces matched (a copy
 * is kept at each piece boundary), and the partial is cut at the first piece that does not match.
 */
async function verifiedPrefix(
  handle: FileHandle, held: number, size: number, { pieceSize, hashes }: PieceSpec, signal: AbortSignal,
): Promise<{ hash: Hash; offset: number }> {
  const verifier = new PieceVerifier(hashes, pieceSize, size);
  let hash = createHash('sha256');
  let checkpoint = hash.copy();
  const buffer = Buffer.alloc(Math.min(pieceSize, Math.max(held, 1)));
  let position = 0;
  while (position < held) {
    signal.throwIfAborted();
    // Reads end on piece boundaries (the buffer divides the power-of-two piece size).
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, held - position), position);
    if (bytesRead === 0) break;
    const chunk = buffer.subarray(0, bytesRead);
    hash.update(chunk);
    try {
      verifier.update(chunk);
    } catch {
      break;
    }
    position += bytesRead;
    if (verifier.verified === position) checkpoint = hash.copy();
  }
  if (verifier.verified !== held) {
    hash = checkpoint;
    await handle.truncate(verifier.verified);
  }
  return { hash, offset: verifier.verified };
}
