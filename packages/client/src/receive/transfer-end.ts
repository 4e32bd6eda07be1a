import { rm } from 'node:fs/promises';
import { errnoCode, ErrorCode, isGroupcastError, Outcome, OUTCOME_NAMES, type Frame, type Logger, type Offer } from '@groupcast/shared';
import { partialPathFor, placeFile, type Placement } from './download-area.js';
import type { TransferEvent } from './events.js';
import { describeError, outcomeOfError } from './outcomes.js';
import type { Receiver } from './receiver.js';
import { DEFAULT_KEEP_OLD, replaceAtomically, versionsFolder, type Replacing } from './versions.js';

/**
 * How a transfer ends, whichever path received it (stream-receive.ts, patch-receive.ts, swarm-receive.ts,
 * and for a tree all but `finish`, tree-receive.ts): verified and placed, declined, failed, cancelled or already held. Each end sends the
 * server its answer, logs it and tells the Receiver's listeners; the session says where it goes idle.
 */

/**
 * Why a transfer's preparation was aborted, for every path (receiver.ts, tree-receive.ts): the server
 * cancelled (delete the partial) or the link went away (keep it to resume on the next connection).
 */
export const ABORT_CANCEL = 'cancel';
export const ABORT_CLOSED = 'closed';

/** A complete partial, however it was received: streamed in order, or pulled as pieces. */
export interface HeldFile {
  readonly path: string;
  seal(): Promise<void>;
  discard(): Promise<void>;
}

export interface Finishing {
  offer: Offer;
  placement: Placement;
  file: HeldFile;
  log: Logger;
  digest: Buffer;
  /** The earlier version this one replaces at the final path (versions.ts), if any. */
  replacing: Replacing | undefined;
}

/** What the ends need of the connection's session. */
export interface EndHost {
  receiver: Receiver;
  send(frame: Frame): void;
  /** The session has no transfer in flight any more. */
  idle(): void;
}

export class TransferEnd {
  constructor(private readonly host: EndHost) {}

  /** All bytes are in: verify, fsync, link into place (never over anything), record, RESULT. True once placed. */
  async finish({ offer, placement, file, log, digest, replacing }: Finishing): Promise<boolean> {
    const { receiver } = this.host;
    if (!digest.equals(offer.sha256)) {
      await this.drop(file, log);
      this.host.idle();
      this.fail(offer, log, Outcome.CHECKSUM, `sha256 mismatch: expected ${offer.sha256.toString('hex')}, got ${digest.toString('hex')}`);
      return false;
    }
    try {
      await file.seal();
      if (replacing) {
        const folder = versionsFolder(receiver.root, offer.group, offer.name);
        await replaceAtomically(file.path, placement, replacing, receiver.options.keepOld ?? DEFAULT_KEEP_OLD, folder, log);
      }
      else await placeFile(file.path, placement, log);
    } catch (err) {
      await this.drop(file, log);
      this.host.idle();
      const clash = errnoCode(err) === 'EEXIST' || isGroupcastError(err, ErrorCode.NAME);
      if (clash && replacing) this.fail(offer, log, Outcome.NAME_CLASH, `${offer.name} was changed locally while receiving; not replaced`);
      else if (clash) this.fail(offer, log, Outcome.NAME_CLASH, `${offer.name} appeared in ${offer.group} while receiving`);
      else this.fail(offer, log, outcomeOfError(err), `cannot place file: ${describeError(err)}`, err);
      return false;
    }
    this.host.idle();
    const sha256 = digest.toString('hex');
    const record = { ...describe(offer), sha256, size: offer.size, path: placement.finalPath };
    const replaces = replacing?.record.transfer;
    try {
      await receiver.received.append({ ...record, time: new Date().toISOString(), kind: 'file', ...(replaces ? { replaces } : {}) });
    } catch (err) {
      // The file is in place; a missing log line only means a re-offer is answered by "already present".
      log.error({ err, path: receiver.received.path }, 'could not record the transfer as received');
    }
    this.host.send({ type: 'result', transfer: offer.transfer, outcome: Outcome.OK, message: '' });
    log.info({ bytes: offer.size, sha256, path: placement.finalPath, ...(replaces ? { replaces } : {}) }, 'received');
    receiver.emit('received', record);
    return true;
  }

  /** RESULT with a failure, reported. */
  fail(offer: Offer, log: Logger, outcome: Outcome, message: string, err?: unknown): void {
    this.host.send({ type: 'result', transfer: offer.transfer, outcome, message });
    log.error({ outcome: OUTCOME_NAMES[outcome], reason: message, ...(err ? { err } : {}) }, 'transfer failed');
    this.host.receiver.emit('failed', { ...describe(offer), outcome, message });
  }

  /** DECLINE, reported; the session is idle again. */
  decline(offer: Offer, log: Logger, outcome: Outcome, message: string): void {
    this.host.idle();
    this.host.send({ type: 'decline', transfer: offer.transfer, outcome, message });
    log.warn({ outcome: OUTCOME_NAMES[outcome], reason: message }, 'declined');
    this.host.receiver.emit('declined', { ...describe(offer), outcome, message });
  }

  /** ACCEPT(size) and RESULT OK without any DATA; the session is idle again. */
  haveItAll(offer: Offer, log: Logger, why: string): void {
    this.host.idle();
    this.host.send({ type: 'accept', transfer: offer.transfer, offset: offer.size });
    this.host.send({ type: 'result', transfer: offer.transfer, outcome: Outcome.OK, message: why });
    log.info({ bytes: offer.size }, why);
  }

  /** The server cancelled: `file` (the partial held open, if any) and whatever is left of the partial go, and the listeners hear it. */
  async cancelled(offer: Offer, log: Logger, message: string | undefined, file?: HeldFile): Promise<void> {
    if (file) await this.drop(file, log);
    const partial = partialPathFor(this.host.receiver.root, offer.transfer.toString('hex'));
    await rm(partial, { force: true, recursive: true }).catch((err: unknown) => log.warn({ err, path: partial }, 'could not delete a partial'));
    log.info({ reason: message }, 'cancelled by the server');
    this.host.receiver.emit('failed', { ...describe(offer), outcome: Outcome.CANCELLED, message: message ?? 'cancelled' });
  }

  /** Deletes a partial; a failure to delete is logged, never allowed to stop the answer to the server. */
  async drop(file: HeldFile, log: Logger): Promise<void> {
    await file.discard().catch((err: unknown) => log.warn({ err, path: file.path }, 'could not delete a partial'));
  }
}

/** A transfer as the Receiver's events name it. */
export function describe(offer: Offer): TransferEvent {
  return { transfer: offer.transfer.toString('hex'), group: offer.group, name: offer.name };
}
