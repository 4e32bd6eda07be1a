import { ErrorCode, filePieces, heldPrefix, isGroupcastError, Outcome, PieceMismatch, type Logger, type Offer } from '@groupcast/shared';
import type { Placement } from './download-area.js';
import { HeldStream } from './held-pieces.js';
import { describeError, outcomeOfError } from './outcomes.js';
import type { DataFrame, FileHost, TransferPath } from './transfer-path.js';
import type { Replacing } from './versions.js';
import type { PiecePartial } from '../peer/piece-partial.js';

/**
 * A new version streamed, less the pieces this member already holds (PROTOCOL.md §7.5): BITFIELD, then
 * ACCEPT at the held prefix, then DATA that skips what is held. Kept apart from receiver.ts, which
 * seeds and opens the partial, chooses this path and hands the transfer's DATA here.
 */
export class PatchReceive implements TransferPath {
  /** Where the stream starts: the end of the held prefix. */
  private readonly offset: number;
  private readonly stream: HeldStream;

  constructor(
    private readonly host: FileHost,
    readonly offer: Offer,
    private readonly placement: Placement,
    readonly partial: PiecePartial,
    readonly log: Logger,
    private readonly replacing: Replacing,
  ) {
    this.offset = heldPrefix(partial.held, filePieces(offer.size, partial.pieces.pieceSize));
    this.stream = new HeldStream(partial, this.offset);
  }

  /** Every piece is held: nothing (more) to come. */
  get complete(): boolean {
    return this.stream.complete;
  }

  /** Says BITFIELD, then ACCEPT with the prefix held; finishes at once when every piece is held. */
  async start(): Promise<void> {
    const { offer, partial, offset } = this;
    this.log.info({ offset, held: partial.held.count, pieces: partial.held.length, size: offer.size }, 'accepted');
    this.host.send({ type: 'bitfield', transfer: offer.transfer, bits: partial.held.toWire() });
    this.host.send({ type: 'accept', transfer: offer.transfer, offset });
    if (this.stream.complete) await this.finishPatch();
  }

  async data(frame: DataFrame): Promise<void> {
    try {
      await this.stream.write(frame.offset, frame.payload);
    } catch (err) {
      if (isGroupcastError(err, ErrorCode.PROTOCOL)) throw err;
      this.host.ended();
      // A bad piece is never written: the pieces held stay for the retry. A disk error frees the space.
      if (err instanceof PieceMismatch) await this.partial.release();
      else await this.host.end.drop(this.partial, this.log);
      const message = err instanceof PieceMismatch ? err.message : `write failed: ${describeError(err)}`;
      this.host.end.fail(this.offer, this.log, err instanceof PieceMismatch ? Outcome.CHECKSUM : outcomeOfError(err), message, err);
      return;
    }
    if (this.stream.complete) await this.finishPatch();
  }

  async cancel(message: string): Promise<void> {
    await this.host.end.cancelled(this.offer, this.log, message, this.partial);
  }

  close(): Promise<void> {
    return this.partial.release();
  }

  private async finishPatch(): Promise<void> {
    const { offer, placement, partial, log, replacing } = this;
    const digest = await partial.digest();
    if (await this.host.end.finish({ offer, placement, file: partial, digest, log, replacing })) await partial.release();
  }
}
