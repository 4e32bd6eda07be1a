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

function unsafeReason(name: string, maxBytes: number): string | undefined {
  if (RESERVED.has(name)) return 'is empty or a dot name';
  if (Buffer.byteLength(name) > maxBytes) return `is longer than ${maxBytes} bytes`;
  if (CONTROL.test(name)) return 'contains a control character';
  if (SEPARATOR.test(name)) return 'contains a path separator';
  if (name.startsWith('.')) return 'starts with a dot';
  if (name !== name.trim()) return 'has leading or trailing white space';
  return undefined;
}

export function validateGroupName(name: string): string {
  const reason = unsafeReason(name, MAX_GROUP_NAME);
  if (reason) throw new GroupcastError(ErrorCode.NAME, `group name ${JSON.stringify(name.slice(0, 80))} ${reason}`);
  return name;
}

/** A file name from the wire, checked exactly as it will be written; anything unsafe is refused, not rewritten. */
export function validateFileName(name: string): string {
  const reason = unsafeReason(name, MAX_FILE_NAME);
  if (reason) throw new GroupcastError(ErrorCode.NAME, `file name ${JSON.stringify(name.slice(0, 80))} ${reason}`);
  return name;
}
