import type { Outcome, PeerId } from '@groupcast/shared';

/** What the Receiver tells the daemon about each transfer (daemon.ts: the status file, --on-receive, metrics). */

export interface TransferEvent {
  transfer: string;
  group: string;
  name: string;
}
export interface ReceivedEvent extends TransferEvent {
  path: string;
  /** A tree's: the SHA-256 of its manifest. */
  sha256: string;
  size: number;
  /** A tree: how many files it holds. */
  files?: number;
}
export interface UndeliveredEvent extends TransferEvent {
  outcome: Outcome;
  message: string;
}

/** A peer sent a piece whose hash is wrong; it is dropped for the transfer. */
export interface BadPeerEvent extends TransferEvent {
  peer: PeerId;
  piece: number;
}

export interface ReceiverEvents {
  received: [event: ReceivedEvent];
  declined: [event: UndeliveredEvent];
  failed: [event: UndeliveredEvent];
  badPeer: [event: BadPeerEvent];
}
