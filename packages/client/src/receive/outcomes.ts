import { errnoCode, isNoSpace, Outcome } from '@groupcast/shared';

/** The outcome a local disk or file-system error is reported as: what the member's operator has to fix. */
export function outcomeOfError(err: unknown): Outcome {
  if (isNoSpace(err)) return Outcome.NO_SPACE;
  switch (errnoCode(err)) {
    // The member's operator has to fix the directory (owner, mode, read-only mount).
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return Outcome.PERMISSION_DENIED;
    default:
      return Outcome.IO_ERROR;
  }
}

/** An error's message for a RESULT or DECLINE, with its errno code in front when the message lacks it. */
export function describeError(err: unknown): string {
  const code = errnoCode(err);
  const message = err instanceof Error ? err.message : String(err);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}
