import type { Frame, Offer } from '@groupcast/shared';
import type { TransferEnd } from './transfer-end.js';

/**
 * The paths a transfer can be received by, as the session (receiver.ts) sees them once it has chosen one:
 * the plain stream (stream-receive.ts), the stream less the pieces held (patch-receive.ts), the swarm
 * (swarm-receive.ts) and a directory tree (tree-receive.ts). The session hands the path its transfer's frames.
 */

export type DataFrame = Extract<Frame, { type: 'data' }>;

/** One transfer in flight on a session, from its ACCEPT to its RESULT. */
export interface TransferPath {
  readonly offer: Offer;
  /** DATA for this transfer. */
  data(frame: DataFrame): Promise<void>;
  /** The server cancelled (the session is idle already): stop, delete what was received, report. */
  cancel(message: string): Promise<void>;
  /** The link went away: stop, and keep what was received for a resume on the next connection. */
  close(): Promise<void>;
}

/** What a file's path (stream, patch, swarm) needs of the connection's session. */
export interface FileHost {
  send(frame: Frame): void;
  /** How the transfer ends: placed, failed, cancelled (transfer-end.ts). */
  end: TransferEnd;
  /** Whether this transfer is still the one the session has in flight. */
  current(): boolean;
  /** The transfer ended early on this side (RESULT sent): DATA the server had already sent is dropped. */
  ended(): void;
}
