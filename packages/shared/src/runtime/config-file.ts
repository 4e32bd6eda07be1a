import { statSync } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';
import { writeFileAtomic } from './files.js';

export type ConfigRole = 'server' | 'client';

/**
 * Where a daemon looks for its config file when `--config` is not given; the first that exists is
 * used and files are never merged. Per-user first ($XDG_CONFIG_HOME or ~/.config), then the
 * directory systemd's ConfigurationDirectory= names, then /etc/groupcast.
 */
export function configSearchPath(role: ConfigRole, env: NodeJS.ProcessEnv = process.env): string[] {
  const file = `${role}.json`;
  const paths = [join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'groupcast', file)];
  const systemd = env.CONFIGURATION_DIRECTORY?.split(':')[0];
  if (systemd) paths.push(join(systemd, file));
  paths.push(join('/etc/groupcast', file));
  return [...new Set(paths)];
}

/** The config file to read: the one named, else the first in the search path that exists, else none. */
export function findConfigFile(role: ConfigRole, named: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (named) return named;
  for (const path of configSearchPath(role, env)) {
    try {
      statSync(path);
      return path;
    } catch (err) {
      // Anything but "not there" (EACCES, ENOTDIR…) is reported when the file is read.
      if (errnoCode(err) !== 'ENOENT') return path;
    }
  }
  return undefined;
}

/** Drops undefined values, so that spreading a layer never hides a lower one. */
export function definedOnly<T extends object>(values: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as never;
}

/** A yargs `coerce` for an integer flag: anything else is a USAGE error (exit 2) naming the flag and the range. */
export function integerOption(flag: string, min: number, max: number): (value: unknown) => number {
  return (value) => {
    const number = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    if (typeof number !== 'number' || !Number.isInteger(number) || number < min || number > max) {
      throw new GroupcastError(ErrorCode.USAGE, `${flag} must be an integer ${min}..${max}, not ${String(value)}`);
    }
    return number;
  };
}

/** A yargs `coerce` that checks text with one of shared's parsers and keeps it as written. */
export function checkedText(check: (text: string) => unknown): (text: string) => string {
  return (text) => {
    check(text);
    return text;
  };
}

/** Where `init` writes without --config: /etc/groupcast for root (the service reads it there), else the user's. */
export function defaultInitPath(role: ConfigRole): string {
  const paths = configSearchPath(role, { ...process.env, CONFIGURATION_DIRECTORY: undefined });
  return (process.getuid?.() === 0 ? paths.at(-1) : paths[0]) ?? join('/etc/groupcast', `${role}.json`);
}

/** `init`: writes a starter config; an existing file is kept unless `force`. */
export async function writeStarterConfig(path: string, text: string, force: boolean): Promise<void> {
  const exists = await access(path).then(() => true, () => false);
  if (exists && !force) {
    throw new GroupcastError(ErrorCode.USAGE, `${path} already exists; edit it, or pass --force to replace it`);
  }
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await writeFileAtomic(path, text, 0o644);
  } catch (err) {
    throw new GroupcastError(ErrorCode.CONFIG, `cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}
