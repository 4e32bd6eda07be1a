import { closeSync, constants, fchmodSync, openSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { ErrorCode, GroupcastError, writeFullySync } from '@groupcast/shared';

const PARTIAL_FLAGS = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW;
const PARTIAL_MODE = 0o644;

/** Opens or creates a partial for reading and writing, never through a symlink planted at its path. */
export function openPartial(path: string): Promise<FileHandle> {
  return open(path, PARTIAL_FLAGS, PARTIAL_MODE);
}

/**
 * A small file's partial (SMALL_FILE_BYTES at most) written whole at once, synchronously: created as
 * openPartial would (or emptied), filled, closed. Given a `mode`, it has that mode exactly (a tree's
 * file gets its final mode here rather than with a chmod at the end), set on the descriptor: open's mode
 * applies only to a file it creates, and under a default ACL on the directory it is only an upper bound
 * (the umask is not used).
 */
export function writePartialSync(path: string, data: Uint8Array, mode?: number): void {
  const fd = openSync(path, PARTIAL_FLAGS | constants.O_TRUNC, mode ?? PARTIAL_MODE);
  try {
    if (mode !== undefined) fchmodSync(fd, mode);
    writeFullySync(fd, data, 0);
  } finally {
    closeSync(fd);
  }
}

/**
 * What every kind of partial shares, streamed in order or pulled as pieces: one open handle, closed
 * once (release keeps the data for a resume, discard deletes it), and no use after it is closed.
 */
export abstract class PartialFile {
  protected handle: FileHandle | undefined;

  protected constructor(
    readonly path: string,
    handle: FileHandle,
  ) {
    this.handle = handle;
  }

  /** Closes and keeps the partial, for a resume on the next connection. Safe to call twice. */
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

  protected openHandle(): FileHandle {
    if (!this.handle) throw new GroupcastError(ErrorCode.CLOSED, `partial ${this.path} is closed`);
    return this.handle;
  }
}
