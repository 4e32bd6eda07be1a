import { Outcome, PieceMismatch, protocolViolation, type Logger, type Offer } from '@groupcast/shared';
import { resumeOffset, type Placement } from './download-area.js';
import { CHECKPOINT_BYTES, IncomingFile, partialLength, type PieceSpec } from './incoming-file.js';
import { describeError, outcomeOfError } from './outcomes.js';
import type { DataFrame, FileHost, TransferPath } from './transfer-path.js';
import type { Replacing } from './versions.js';

/**
 * A file streamed by the server in order (PROTOCOL.md §7): ACCEPT at the bytes already held (resume),
 * then DATA to the end, written through an IncomingFile that hashes as it goes, then its RESULT. Kept apart
 * from receiver.ts, which checks the offer, chooses this path and hands the transfer's DATA here.
 */

/** What the stream needs of the session beyond any file's path: whether the disk can take the rest. */
export interface StreamHost extends FileHost {
  freeSpaceShortfall(needed: number, signal: AbortSignal): Promise<string | undefined>;
}

export class StreamReceive implements TransferPath {
  private constructor(
    private readonly host: StreamHost,
    readonly offer: Offer,
    private readonly placement: Placement,
    private readonly file: IncomingFile,
    private readonly log: Logger,
    private readonly replacing: Replacing | undefined,
  ) {}

  /**
   * Opens the partial at `partialPath` to resume it, once the disk can take what it lacks; undefined when
   * declined for space. `pieces`: the MANIFEST's hashes, so each piece is checked as it completes.
   */
  static async open(
    host: StreamHost, offer: Offer, placement: Placement, log: Logger, signal: AbortSignal,
    { partialPath, pieces, replacing, checkpointBytes }: {
      partialPath: string; pieces: PieceSpec | undefined; replacing: Replacing | undefined; checkpointBytes: number | undefined;
    },
  ): Promise<StreamReceive | undefined> {
    const offset = resumeOffset(await partialLength(partialPath), offer.size);
    if (offset < offer.size) {
      const shortfall = await host.freeSpaceShortfall(offer.size - offset, signal);
      if (shortfall) {
        host.end.decline(offer, log, Outcome.NO_SPACE, shortfall);
        return undefined;
      }
    }
    const file = await IncomingFile.open(partialPath, offer.size, signal, checkpointBytes ?? CHECKPOINT_BYTES, pieces);
    if (signal.aborted) {
      await file.release();
      signal.throwIfAborted();
    }
    return new StreamReceive(host, offer, placement, file, log, replacing);
  }

  /** Nothing more to come: an empty file, or a partial finished before a crash. */
  get complete(): boolean {
    return this.file.complete;
  }

  /** Says ACCEPT with the bytes held; finishes at once when they are all the file. */
  async start(): Promise<void> {
    const { file, offer } = this;
    this.log.info({ offset: file.offset, size: offer.size }, file.offset > 0 ? 'resuming' : 'accepted');
    this.host.send({ type: 'accept', transfer: offer.transfer, offset: file.offset });
    if (file.complete) await this.finishStream();
  }

  async data(frame: DataFrame): Promise<void> {
    const { file } = this;
    if (frame.offset !== file.offset) throw protocolViolation(`DATA at offset ${frame.offset}, expected ${file.offset}`);
    if (frame.offset + frame.payload.length > file.size) throw protocolViolation(`DATA past the end of a ${file.size}-byte file`);
    try {
      await file.write(frame.payload);
    } catch (err) {
      if (err instanceof PieceMismatch) await this.pieceFailed(err);
      else await this.writeFailed(err);
      return;
    }
    if (file.complete) await this.finishStream();
  }

  async cancel(message: string): Promise<void> {
    await this.host.end.cancelled(this.offer, this.log, message, this.file);
  }

  close(): Promise<void> {
    return this.file.release();
  }

  private async finishStream(): Promise<void> {
    const { offer, placement, file, log, replacing } = this;
    await this.host.end.finish({ offer, placement, file, log, digest: file.digest(), replacing });
  }

  /** A disk error mid-transfer: the partial is deleted so its space comes back, and the server is told why. */
  private async writeFailed(err: unknown): Promise<void> {
    await this.host.end.drop(this.file, this.log);
    this.host.ended();
    this.host.end.fail(this.offer, this.log, outcomeOfError(err), `write failed: ${describeError(err)}`, err);
  }

  /** A piece from the server did not match its hash: keep the pieces that did, report, and resume on the retry. */
  private async pieceFailed(err: PieceMismatch): Promise<void> {
    await this.file.keepVerified().catch((cause: unknown) => this.log.warn({ err: cause, path: this.file.path }, 'could not cut a partial back'));
    this.host.ended();
    this.host.end.fail(this.offer, this.log, Outcome.CHECKSUM, err.message);
  }
}
