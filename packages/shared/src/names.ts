import { MAX_FILE_NAME, MAX_GROUP_NAME } from './constants.js';
import { ErrorCode, GroupcastError } from './errors.js';

/**
 * The one place that decides which names are acceptable. Group names and file names both become
 * directory entries on members' disks, so neither may steer a path anywhere.
 */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const SEPARATOR = /[/\\]/;
const RESERVED = new Set(['', '.', '..']);

/** The member's partial folder, `<downloads>/.groupcast-partial`: a dot name no group can have. */
export const PARTIAL_DIR = '.groupcast-partial';
/** Where a member keeps placed tree versions and old file versions, `<downloads>/.groupcast-versions`. */
export const VERSIONS_DIR = '.groupcast-versions';
/**
 * Names no file or tree entry may have, dotfiles being allowed otherwise: the member's own folders, so
 * that nothing distributed can ever be mistaken for (or be cleaned up as) one of them.
 */
const RESERVED_DOT_NAMES = new Set([PARTIAL_DIR, VERSIONS_DIR]);

function unsafeReason(name: string, maxBytes: number, dotfiles: boolean): string | undefined {
  if (RESERVED.has(name)) return 'is empty or a dot name';
  if (Buffer.byteLength(name) > maxBytes) return `is longer than ${maxBytes} bytes`;
  if (CONTROL.test(name)) return 'contains a control character';
  if (SEPARATOR.test(name)) return 'contains a path separator';
  if (name.startsWith('.') && !dotfiles) return 'starts with a dot';
  if (RESERVED_DOT_NAMES.has(name)) return 'is reserved for groupcast\'s own folders';
  if (name !== name.trim()) return 'has leading or trailing white space';
  return undefined;
}

/** Group names may not start with a dot: the member's own folders beside the groups are dot names. */
export function validateGroupName(name: string): string {
  const reason = unsafeReason(name, MAX_GROUP_NAME, false);
  if (reason) throw new GroupcastError(ErrorCode.NAME, `group name ${JSON.stringify(name.slice(0, 80))} ${reason}`);
  return name;
}

/** Why a file name (or one component of a tree path) is unsafe, or undefined. Dotfiles (`.env`) are fine. */
export function fileNameProblem(name: string): string | undefined {
  return unsafeReason(name, MAX_FILE_NAME, true);
}

/** A file name from the wire, checked exactly as it will be written; anything unsafe is refused, not rewritten. */
export function validateFileName(name: string): string {
  const reason = fileNameProblem(name);
  if (reason) throw new GroupcastError(ErrorCode.NAME, `file name ${JSON.stringify(name.slice(0, 80))} ${reason}`);
  return name;
}
