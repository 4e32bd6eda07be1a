import { mkdir, open, rename, rm, chmod } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { homedir } from 'node:os';
import { ErrorCode, GroupcastError } from '../errors.js';

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

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces a file so that a crash at any instant leaves either the old or the new contents:
 * write a temporary sibling, fsync it, rename over the target, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
  const handle = await open(temp, 'w', mode);
  try {
    await handle.writeFile(data);
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
