import { readFileSync } from 'node:fs';
import type { Argv } from 'yargs';
import type { ErrorCode } from '../errors.js';

/**
 * Whether the command line (or GROUPCAST_JSON) asks for JSON. Read from the raw arguments, because an
 * error can come before yargs has parsed them (a bad flag) or from a command that never saw them.
 */
export function wantsJson(args: readonly string[], env: NodeJS.ProcessEnv = process.env): boolean {
  const flag = args.findLast((arg) => arg === '--json' || arg.startsWith('--json=') || arg === '--no-json');
  if (flag !== undefined) return flag === '--json' || flag === '--json=true';
  return env.GROUPCAST_JSON === 'true' || env.GROUPCAST_JSON === '1';
}

/**
 * With --json, an error is one JSON document on stdout, where a script already reads the answer:
 * `{ "error": { "code": "GC_ERR_…", "message": "…" } }`. The exit code is the same as without --json.
 */
export function errorJson(code: ErrorCode, message: string): string {
  return `${JSON.stringify({ error: { code, message } }, null, 2)}\n`;
}

/**
 * How every command reports an error and stops: errorJson on stdout when JSON was asked for, else
 * `<program>: <message>` (and `hint`) on stderr; then exits with `exitCode`.
 */
export function exitWithError(program: string, code: ErrorCode, message: string, exitCode: number, hint = ''): never {
  if (wantsJson(process.argv.slice(2))) process.stdout.write(errorJson(code, message));
  else process.stderr.write(`${program}: ${message}${hint}\n`);
  process.exit(exitCode);
}

/** Keeps options that every command accepts (they may come from GROUPCAST_* variables) out of a command's help. */
export function hideOptions<T>(argv: Argv<T>, keys: readonly string[]): Argv<T> {
  return keys.reduce((y, key) => y.hide(key), argv);
}

/**
 * `--version`: the version in the package.json beside the CLI's directory (`dist/cli.js` → `package.json`),
 * the same in a checkout and in an installed package.
 */
export function packageVersion(cliModuleUrl: string): string {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', cliModuleUrl), 'utf8')) as { version?: unknown };
  return typeof manifest.version === 'string' ? manifest.version : 'unknown';
}
