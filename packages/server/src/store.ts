import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { copyFile, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { errnoCode, ErrorCode, fsyncDir, GroupcastError } from '@groupcast/shared';

export interface StoredFile {
  sha256: string;
  size: number;
}

/**
 * Content-addressed copies of distributed files, named by sha256. A distribution reads from here,
 * never from the operator's path, so editing or deleting the original cannot corrupt a transfer in
 * flight, and a restart finds every byte it promised.
 */
export class ContentStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'store');
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  path(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new GroupcastError(ErrorCode.NOT_FOUND, `not a sha256: ${sha256}`);
    return join(this.dir, sha256);
  }

  /** Copies (reflinks where the filesystem can), hashes the copy, fsyncs, and files it under its hash. */
  async ingest(source: string): Promise<StoredFile> {
    const temp = join(this.dir, `.ingest-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    try {
      const info = await stat(source);
      if (!info.isFile()) throw new GroupcastError(ErrorCode.USAGE, `${source} is not a regular file`);
      await copyFile(source, temp, constants.COPYFILE_FICLONE);
      const hash = createHash('sha256');
      await pipeline(createReadStream(temp, { highWaterMark: 1 << 20 }), hash);
      const sha256 = hash.digest('hex');
      const handle = await open(temp, 'r');
      const { size } = await handle.stat();
      await handle.sync();
      await handle.close();
      await rename(temp, this.path(sha256));
      await fsyncDir(this.dir);
      return { sha256, size };
    } catch (err) {
      await rm(temp, { force: true });
      if (err instanceof GroupcastError) throw err;
      const reason = errnoCode(err) === 'ENOENT' ? 'no such file' : (err as Error).message;
      throw new GroupcastError(ErrorCode.NOT_FOUND, `cannot read ${source}: ${reason}`, { cause: err });
    }
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.path(sha256), { force: true });
  }
}
