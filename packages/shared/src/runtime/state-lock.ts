import { randomBytes } from 'node:crypto';
import { readFile, readlink, rename, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';
import { ensurePrivateDir } from './files.js';

/** The symbolic link in a state directory that names the daemon running on it: `daemon.lock -> <pid>:<start time>`. */
export const LOCK_NAME = 'daemon.lock';
/**
 * Rounds of "create, else judge the holder" before giving up: each round that does not end ends
 * because the lock changed hands meanwhile, which a few racing starts cannot do forever.
 */
const LOCK_ROUNDS = 5;

interface LockHolder {
  pid: number;
  /** The holder's start time (/proc/<pid>/stat, clock ticks after boot): tells a reused pid from the holder. */
  start: string | null;
}

/** A process's start time, or null where /proc does not say (not Linux, or hidden). */
async function startTimeOf(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: starttime is the 22nd field.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether a process with this pid exists (EPERM: it does, as another user). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** Whether the process that wrote the lock still runs; when that cannot be told, it is taken to run. */
async function holderRuns(holder: LockHolder): Promise<boolean> {
  if (!processExists(holder.pid)) return false;
  if (holder.start === null) return true;
  const start = await startTimeOf(holder.pid);
  return start === null || start === holder.start;
}

function parseHolder(text: string): LockHolder | undefined {
  const match = /^(\d+):(\d*)$/.exec(text);
  const pid = Number(match?.[1]);
  if (!match || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return { pid, start: match[2] || null };
}

/** What the lock says; '' for something that is not a lock (a file put there), undefined if there is none. */
async function lockText(path: string): Promise<string | undefined> {
  try {
    return await readlink(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    if (errnoCode(err) === 'EINVAL') return '';
    throw err;
  }
}

/**
 * Exclusive use of a state directory by one daemon. The lock is a symbolic link whose target is the
 * holder's pid and start time: creating one fails if it exists, it appears whole or not at all, and
 * it needs no data block, so even a full disk can hold it. A lock whose holder no longer runs (a
 * kill -9, a crash, a reboot) is stale and taken over, so it never blocks a restart. Commands that are
 * not the daemon (`id`, `status`) neither need nor take it.
 */
export class StateLock {
  private released = false;

  private constructor(
    readonly path: string,
    private readonly text: string,
  ) {}

  /**
   * Makes the state directory if needed, takes its lock and runs `start` with it: the daemon gives
   * the lock up when it closes, and this gives it up if `start` fails.
   */
  static async hold<T>(stateDir: string, daemon: string, start: (lock: StateLock) => Promise<T>): Promise<T> {
    await ensurePrivateDir(stateDir);
    const lock = await StateLock.acquire(stateDir, daemon);
    try {
      return await start(lock);
    } catch (err) {
      await lock.close();
      throw err;
    }
  }

  /** Takes the lock on `stateDir` for `daemon` ("group-server"), or fails (STATE_DIR) naming the pid that holds it. */
  static async acquire(stateDir: string, daemon: string): Promise<StateLock> {
    const path = join(stateDir, LOCK_NAME);
    const text = `${process.pid}:${(await startTimeOf(process.pid)) ?? ''}`;
    try {
      for (let round = 0; round < LOCK_ROUNDS; round++) {
        if (await StateLock.create(path, text)) return new StateLock(path, text);
        const held = await lockText(path);
        if (held === undefined) continue;
        const holder = parseHolder(held);
        if (holder && await holderRuns(holder)) {
          throw new GroupcastError(ErrorCode.STATE_DIR, `state directory ${stateDir} is in use by another ${daemon} (pid ${holder.pid}): stop that one first, or give this one another --state-dir`);
        }
        await StateLock.removeStale(path, held);
      }
    } catch (err) {
      if (err instanceof GroupcastError) throw err;
      throw new GroupcastError(ErrorCode.STATE_DIR, `cannot lock state directory ${stateDir}`, { cause: err });
    }
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot lock state directory ${stateDir}: ${path} keeps changing hands`);
  }

  /** Puts the lock in place unless one exists. */
  private static async create(path: string, text: string): Promise<boolean> {
    try {
      await symlink(text, path);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') return false;
      throw err;
    }
  }

  /**
   * Removes the stale lock `held`, and only it: another start may have taken it over since it was read.
   * The lock is moved aside (one mover wins); if what was moved is not the stale one, it goes back.
   */
  private static async removeStale(path: string, held: string): Promise<void> {
    const aside = `${path}.stale.${process.pid}.${randomBytes(6).toString('hex')}`;
    try {
      await rename(path, aside);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    try {
      const moved = await lockText(aside);
      if (moved !== held && moved) await StateLock.create(path, moved);
    } finally {
      await rm(aside, { force: true });
    }
  }

  /** Gives the lock up, if it is still this daemon's. Safe to call twice. */
  async close(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if ((await lockText(this.path).catch(() => undefined)) === this.text) await rm(this.path, { force: true });
  }
}
