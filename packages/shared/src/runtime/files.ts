import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, chmod, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { homedir } from 'node:os';
import { promisify } from 'node:util';
import { errnoCode, ErrorCode, GroupcastError, isGroupcastError } from '../errors.js';

const execFileAsync = promisify(execFile);

/**
 * Where a daemon keeps its state when not told: systemd's $STATE_DIRECTORY for a service, else
 * $XDG_STATE_HOME or ~/.local/state, under groupcast/<role>.
 */
export function defaultStateDir(role: 'server' | 'client'): string {
  const systemd = process.env.STATE_DIRECTORY?.split(':')[0];
  if (systemd) return systemd;
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'groupcast', role);
}

/** Creates the state directory owner-only; an unusable one is fatal (STATE_DIR). */
export async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  } catch (err) {
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot use state directory ${dir}`, { cause: err });
  }
}

/**
 * Makes everything written on the file system holding `dir` durable in one call (syncfs(2), through
 * coreutils' `sync -f`): what a tree of many files needs instead of one fsync each. Where `sync -f` is
 * missing, a plain `sync` does the same for every file system.
 */
export async function syncFileSystem(dir: string): Promise<void> {
  try {
    await execFileAsync('sync', ['-f', dir]);
  } catch {
    await execFileAsync('sync', []);
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A full disk or an exhausted quota: the two ways a write fails for want of space. */
export function isNoSpace(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * The one mapping of a failed write of the daemon's own state (journal, store, state files) to an
 * error: a full disk is NO_SPACE and says which directory, anything else is STATE_DIR.
 */
export function stateWriteError(what: string, path: string, err: unknown): GroupcastError {
  if (isGroupcastError(err)) return err;
  if (isNoSpace(err)) return new GroupcastError(ErrorCode.NO_SPACE, `${what}: no space left on the state disk (${dirname(path)})`, { cause: err });
  return new GroupcastError(ErrorCode.STATE_DIR, `${what}: ${(err as Error).message}`, { cause: err });
}

/**
 * Writes all of `data` at `position` (null: at the file's end, for a file opened to append). A single
 * write may write less than asked (a disk filling up does that before it fails), so it loops; an
 * error, including the one that follows a short write on a full disk, rejects.
 */
export async function writeFully(handle: FileHandle, data: Uint8Array, position: number | null): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position === null ? null : position + done);
    done += bytesWritten;
  }
}

/** Writes buffers back to back from `position` (a piece as the frames it arrived in), each with writeFully. */
export async function writeChunks(handle: FileHandle, chunks: readonly Uint8Array[], position: number): Promise<void> {
  let at = position;
  for (const chunk of chunks) {
    await writeFully(handle, chunk, at);
    at += chunk.length;
  }
}

/**
 * Many small files (a tree's) are read and written with synchronous system calls: a few microseconds
 * each on the event loop, against ~100 µs of CPU for each trip through libuv's thread pool on a busy
 * machine (10,000 files of 2 KiB written through FileHandle: 1.9 CPU s; synchronously: 0.15 s). Only
 * files up to this size take that path, so one call holds the loop for microseconds, never for a disk's
 * worth of waiting on a large write.
 */
export const SMALL_FILE_BYTES = 256 * 1024;
/** Synchronous file-system calls made in a row before the loop is given a turn (timers, sockets): about a millisecond's worth. */
const SYNC_CALLS_PER_TURN = 64;

/** Counts synchronous file-system calls and gives the event loop a turn every SYNC_CALLS_PER_TURN of them. */
export class LoopTurns {
  private calls = 0;

  /** After a synchronous call: resolves at once, or after the loop had a turn. */
  async made(count = 1): Promise<void> {
    this.calls += count;
    if (this.calls < SYNC_CALLS_PER_TURN) return;
    this.calls = 0;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** writeFully's synchronous twin for a small file: loops over short writes, an error throws. */
export function writeFullySync(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}

/**
 * Replaces a file so that a crash at any instant leaves either the old or the new contents:
 * write a temporary sibling, fsync it, rename over the target, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  // Unique per call: two writers of one file in the same millisecond must not share a temporary.
  const temp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temp, 'wx', mode);
  try {
    await writeFully(handle, typeof data === 'string' ? Buffer.from(data) : data, 0);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  await rename(temp, path);
  await fsyncDir(dirname(path));
}

const HASH_CHUNK = 256 * 1024;

/**
 * Feeds the first `length` bytes of an open file to `hash` through one reused buffer, so memory stays
 * flat whatever the size (a read stream allocates a chunk per read and leaves them all to the garbage
 * collector: tens of MiB of RSS for a large file). Stops if `signal` fires; a shorter file is CLOSED.
 */
/** Anything that digests bytes fed in order: a Hash, or several fed together (whole file and pieces). */
export interface Digester {
  update(chunk: Uint8Array): unknown;
}

export async function hashFromHandle(handle: FileHandle, length: number, hash: Digester, signal?: AbortSignal): Promise<void> {
  const buffer = Buffer.alloc(Math.min(HASH_CHUNK, Math.max(length, 1)));
  let position = 0;
  while (position < length) {
    signal?.throwIfAborted();
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, length - position), position);
    if (bytesRead === 0) throw new GroupcastError(ErrorCode.CLOSED, `file shrank to ${position} bytes while being hashed`);
    hash.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
}

/** Reads a JSON state file; undefined when it does not exist yet, STATE_DIR when it cannot be used. */
export async function readJsonState<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot load ${path}`, { cause: err });
  }
}
