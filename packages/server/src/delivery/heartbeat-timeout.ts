// The --heartbeat-timeout rule, apart from member-session.ts so that the CLI can check the flag without
// loading the delivery machinery.
import { ErrorCode, formatDuration, GroupcastError, HEARTBEAT_TIMEOUT_MS, parseDuration } from '@groupcast/shared';

/**
 * `--heartbeat-timeout` bounds. Shorter finds a dead or frozen member sooner; a member answers every
 * PING at once, so on a LAN 3 s (a PING a second) still leaves room for a busy member. Never longer
 * than the default: a member gives up on a server silent for HEARTBEAT_TIMEOUT_MS, and the progress
 * window must stay at least twice this, so a dead link is found by the heartbeat (not charged) first.
 */
export const MIN_HEARTBEAT_TIMEOUT_MS = 3_000;

/** A `--heartbeat-timeout` value (`5s`, `10000ms`) within MIN_HEARTBEAT_TIMEOUT_MS … HEARTBEAT_TIMEOUT_MS. */
export function parseHeartbeatTimeout(text: string): number {
  const ms = parseDuration(text);
  if (ms < MIN_HEARTBEAT_TIMEOUT_MS || ms > HEARTBEAT_TIMEOUT_MS) {
    throw new GroupcastError(
      ErrorCode.USAGE, `heartbeat timeout must be ${formatDuration(MIN_HEARTBEAT_TIMEOUT_MS)} … ${formatDuration(HEARTBEAT_TIMEOUT_MS)}, got "${text}"`,
    );
  }
  return ms;
}
