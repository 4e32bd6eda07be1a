import { readFileSync, statSync } from 'node:fs';
import { access, mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import stripJsonComments from 'strip-json-comments';
import { z } from 'zod';
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

/** `groups[0].members[1]`: the field as a person would point at it in the file. */
function fieldName(path: ReadonlyArray<PropertyKey>): string {
  return path.reduce<string>((name, key) => (typeof key === 'number' ? `${name}[${key}]` : name ? `${name}.${String(key)}` : String(key)), '');
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${fieldName([...issue.path, key])}: unknown setting`).join('; ');
  }
  return `${fieldName(issue.path) || '(top level)'}: ${issue.message}`;
}

/** "line 3, column 5" for JSON.parse's "at position N", which counts UTF-16 units from the start. */
function where(text: string, message: string): string {
  const position = /position (\d+)/.exec(message)?.[1];
  if (position === undefined) return '';
  const before = text.slice(0, Number(position)).split('\n');
  return ` (line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1})`;
}

/** A path setting: absolute, so that its meaning does not depend on where the daemon was started. */
export const absolutePath = z.string().min(1).refine(isAbsolute, 'must be an absolute path');

function unreadable(path: string, err: unknown): GroupcastError {
  const code = errnoCode(err);
  const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
  return new GroupcastError(ErrorCode.CONFIG, `cannot read config ${path}: ${why}`, { cause: err });
}

/**
 * Parses a config file's text: JSON with comments and trailing commas allowed (as in tsconfig.json),
 * validated by `schema`. Every error is CONFIG and names the file and the field.
 */
export function parseConfigText<S extends z.ZodType>(path: string, text: string, schema: S): z.output<S> {
  const plain = stripJsonComments(text.replace(/^\uFEFF/, ''), { trailingCommas: true });
  let value: unknown;
  try {
    value = JSON.parse(plain);
  } catch (err) {
    const message = (err as Error).message;
    throw new GroupcastError(ErrorCode.CONFIG, `config ${path} is not valid JSON${where(plain, message)}: ${message}`, { cause: err });
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new GroupcastError(ErrorCode.CONFIG, `config ${path}: ${parsed.error.issues.map(describeIssue).join('; ')}`);
  }
  return parsed.data;
}

export async function loadConfigFile<S extends z.ZodType>(path: string, schema: S): Promise<z.output<S>> {
  const text = await readFile(path, 'utf8').catch((err: unknown) => {
    throw unreadable(path, err);
  });
  return parseConfigText(path, text, schema);
}

/** For yargs' `.config()`, which wants an answer at once. */
export function loadConfigFileSync<S extends z.ZodType>(path: string, schema: S): z.output<S> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw unreadable(path, err);
  }
  return parseConfigText(path, text, schema);
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
