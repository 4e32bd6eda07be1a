import { createHash, type Hash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { errnoCode, ErrorCode, GroupcastError, hashFromHandle } from '@groupcast/shared';
import { resumeOffset } from './download-area.js';

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

/**
 * One transfer's bytes on their way to disk: the partial file, a running SHA-256 over everything it
 * holds, and the offset the next byte must come from. Writes are sequential and awaited, so memory
 * holds at most one frame's payload whatever the file's size.
 */
export class IncomingFile {
  private sinceCheckpoint = 0;
  private handle: FileHandle | undefined;

  private constructor(
    readonly path: string,
    readonly size: number,
    handle: FileHandle,
    private readonly hash: Hash,
    private position: number,
    private readonly checkpointBytes: number,
  ) {
    this.handle = handle;
  }

  /**
   * Opens or creates the partial and rehashes the prefix it already holds, so the final digest covers
   * the whole file. A partial longer than the file is emptied. The rehash stops early if `signal` fires.
   */
  static async open(path: string, size: number, signal: AbortSignal, checkpointBytes = CHECKPOINT_BYTES): Promise<IncomingFile> {
    const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
    try {
      const held = (await handle.stat()).size;
      const offset = resumeOffset(held, size);
      if (offset !== held) await handle.truncate(offset);
      const hash = createHash('sha256');
      await hashFromHandle(handle, offset, hash, signal);
      return new IncomingFile(path, size, handle, hash, offset, checkpointBytes);
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

  /** Closes and keeps the partial, for a resume on the next connection. */
  async release(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close().catch(() => undefined);
  }

  /** Closes and deletes the partial, returning its space. */
  async discard(): Promise<void> {
    await this.release();
    await rm(this.path, { force: true });
  }

  private openHandle(): FileHandle {
    if (!this.handle) throw new GroupcastError(ErrorCode.CLOSED, `partial ${this.path} is closed`);
    return this.handle;
  }
}

async function writeFully(handle: FileHandle, payload: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < payload.length) {
    const { bytesWritten } = await handle.write(payload, done, payload.length - done, position + done);
    done += bytesWritten;
  }
}
