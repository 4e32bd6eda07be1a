/**
 * The one catalogue of groupcast errors. Every error a component raises carries a stable code from
 * here; tests and callers branch on codes, never on message text.
 */
export const ErrorCode = {
  // wire: decoding bytes from the network
  WIRE_SHORT: 'GC_ERR_WIRE_SHORT',
  WIRE_TRAILING: 'GC_ERR_WIRE_TRAILING',
  WIRE_MAGIC: 'GC_ERR_WIRE_MAGIC',
  WIRE_VERSION: 'GC_ERR_WIRE_VERSION',
  WIRE_TYPE: 'GC_ERR_WIRE_TYPE',
  WIRE_TOO_LARGE: 'GC_ERR_WIRE_TOO_LARGE',
  WIRE_FIELD: 'GC_ERR_WIRE_FIELD',
  WIRE_SIGNATURE: 'GC_ERR_WIRE_SIGNATURE',
  // control plane: datagrams that decode but are not acceptable
  STALE: 'GC_ERR_STALE',
  REPLAY: 'GC_ERR_REPLAY',
  // identity and access
  BAD_ID: 'GC_ERR_BAD_ID',
  NOT_AUTHORIZED: 'GC_ERR_NOT_AUTHORIZED',
  UNKNOWN_GROUP: 'GC_ERR_UNKNOWN_GROUP',
  SERVER_NOT_PINNED: 'GC_ERR_SERVER_NOT_PINNED',
  BAD_CODE: 'GC_ERR_BAD_CODE',
  // configuration and state
  CONFIG: 'GC_ERR_CONFIG',
  STATE_DIR: 'GC_ERR_STATE_DIR',
  /** A port the daemon must listen on is taken or not allowed: an environment problem, exit 1. */
  PORT_IN_USE: 'GC_ERR_PORT_IN_USE',
  // transfers
  NAME: 'GC_ERR_NAME',
  CHECKSUM: 'GC_ERR_CHECKSUM',
  NO_SPACE: 'GC_ERR_NO_SPACE',
  PROTOCOL: 'GC_ERR_PROTOCOL',
  TIMEOUT: 'GC_ERR_TIMEOUT',
  /** The peer is alive but stopped taking what is sent to it, or answering what it was asked. */
  STALLED: 'GC_ERR_STALLED',
  CLOSED: 'GC_ERR_CLOSED',
  /** A file being stored for distribution kept changing while it was copied. */
  SOURCE_CHANGED: 'GC_ERR_SOURCE_CHANGED',
  // operator commands
  DAEMON_UNREACHABLE: 'GC_ERR_DAEMON_UNREACHABLE',
  USAGE: 'GC_ERR_USAGE',
  NOT_FOUND: 'GC_ERR_NOT_FOUND',
  /** Anything without a code of its own (a bug, an unexpected system error): reported, exit 1. */
  INTERNAL: 'GC_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class GroupcastError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GroupcastError';
    this.code = code;
  }
}

export function isGroupcastError(err: unknown, code?: ErrorCode): err is GroupcastError {
  return err instanceof GroupcastError && (code === undefined || err.code === code);
}

/** A frame the receiver's state does not allow: the connection it came on is closed (PROTOCOL.md §10). */
export function protocolViolation(message: string): GroupcastError {
  return new GroupcastError(ErrorCode.PROTOCOL, `protocol violation: ${message}`);
}

/** The errno of a Node system error (ENOSPC, EACCES, …), if it is one. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/**
 * Errnos of a connection ending in ways normal operation produces: the peer restarting (refused), gone
 * (reset, broken pipe, timed out) or out of reach for now. Logged as one line, not as a stack.
 */
const NETWORK_TROUBLE = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'ENETDOWN',
]);

/** A link that ended as links do (network trouble, or closed on purpose: CLOSED), not a defect worth a stack trace. */
export function isExpectedDisconnect(err: unknown): boolean {
  const code = errnoCode(err);
  return code !== undefined && (NETWORK_TROUBLE.has(code) || code === ErrorCode.CLOSED);
}

/** Log fields for an error: one line (`reason`, `code`) when the disconnect is expected, the whole `err` otherwise. */
export function disconnectFields(err: unknown): { reason: string; code: string | undefined } | { err: unknown } {
  return isExpectedDisconnect(err) ? { reason: (err as Error).message, code: errnoCode(err) } : { err };
}
