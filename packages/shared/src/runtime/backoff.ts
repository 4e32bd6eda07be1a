/**
 * Exponential backoff with full jitter: attempt n waits a random time in [base, min(cap, base·2^n)].
 * Jitter keeps a hundred members that lost the server at the same moment from returning in step.
 */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(baseMs + random() * (ceiling - baseMs));
}
