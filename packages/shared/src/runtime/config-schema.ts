// The zod half of reading a config file, apart from config-file.ts so that a command which reads no
// config file (most operator commands, `--version`) does not load zod: ~95 modules, a fifth of the
// CLI's start. Imported as `@groupcast/shared/config-schema`.
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import stripJsonComments from 'strip-json-comments';
import { z } from 'zod';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';

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
