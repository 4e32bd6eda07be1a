import { rm, statfs } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { MAX_PARTIALS_PER_FRAME, MAX_PARTIALS_REPORTED, type Frame, type Logger } from '@groupcast/shared';
import { heldPartials, partialPathFor, spaceShortfall } from './download-area.js';
import { partialLength } from './incoming-file.js';

/**
 * The partials this member holds that the server will never offer again (PROTOCOL.md, reclaiming): the
 * report a connection sends when asked, the CANCELs that answer it, and the space check that waits for
 * them. Kept apart from receiver.ts, which hands the frames here and keeps the per-transfer state machine.
 */

/**
 * How long an OFFER that does not fit waits for the server's answer to this connection's partials
 * report (normally a round trip) before the space check goes ahead without it. Well below the 30 s
 * the server gives the member to answer an OFFER.
 */
const RECLAIM_ANSWER_TIMEOUT_MS = 10_000;

/** The partials report this connection sent; `answered` settles when the server's CANCELs for it are in. */
interface Reclaim {
  /** The time in the PING sent after the report: its PONG comes after every CANCEL answering the report. */
  marker: number;
  answered: Promise<void>;
  resolve: () => void;
}

/** What the partials report needs of the connection's session. */
export interface PartialsHost {
  log: Logger;
  send(frame: Frame): void;
  /** The download directory (Receiver.root). */
  root(): string;
}

/** One connection's partials report and the reclaiming CANCELs that answer it. */
export class PartialsReport {
  private reported = false;
  private reclaim: Reclaim | undefined;

  constructor(private readonly host: PartialsHost) {}

  /** A CANCEL for a transfer not in flight: a partial this member holds of it will never be resumed. */
  async reclaimPartial(hex: string, message: string): Promise<void> {
    const { log } = this.host;
    const path = partialPathFor(this.host.root(), hex);
    try {
      const bytes = await partialLength(path);
      if (bytes === undefined) {
        log.debug({ transfer: hex }, 'cancel for a transfer not in flight');
        return;
      }
      await rm(path, { force: true, recursive: true }); // a tree's partial is a directory
      log.info({ transfer: hex, bytes, reason: message }, 'deleted a partial the server will not offer again');
    } catch (err) {
      log.warn({ err, path }, 'could not delete a partial');
    }
  }

  /**
   * The server asked which partials this member holds (once per connection): list them in PARTIALS,
   * then PING. The server answers in order, so the PONG comes after its CANCEL for every dead one.
   */
  async reportPartials(): Promise<void> {
    if (this.reported) return;
    this.reported = true;
    const { log } = this.host;
    const held = await heldPartials(this.host.root(), MAX_PARTIALS_REPORTED).catch((err: unknown) => {
      log.warn({ err }, 'could not list partials to report');
      return [];
    });
    if (held.length === 0) return;
    for (let start = 0; start < held.length; start += MAX_PARTIALS_PER_FRAME) {
      const transfers = held.slice(start, start + MAX_PARTIALS_PER_FRAME).map((hex) => Buffer.from(hex, 'hex'));
      this.host.send({ type: 'partials', transfers });
    }
    let resolve = (): void => undefined;
    const answered = new Promise<void>((settle) => (resolve = settle));
    this.reclaim = { marker: Date.now(), answered, resolve };
    this.host.send({ type: 'ping', time: this.reclaim.marker });
    log.debug({ partials: held.length }, 'reported partials');
  }

  /** A PONG from the server: the one answering the report's PING means every reclaiming CANCEL is in. */
  pong(time: number): void {
    if (this.reclaim?.marker === time) this.reclaim.resolve();
  }

  /**
   * Why the disk cannot take `needed` more bytes, or undefined. Partials the server is reclaiming count
   * as free: on a shortfall the answer to this connection's partials report is awaited first (bounded),
   * and its CANCELs have deleted the dead partials by then. The offered transfer's own partial is live,
   * so it is kept and only the bytes it lacks are needed.
   */
  async freeSpaceShortfall(needed: number, signal: AbortSignal): Promise<string | undefined> {
    const shortfall = spaceShortfall(await statfs(this.host.root()), needed);
    if (!shortfall || !this.reclaim) return shortfall;
    await this.reclaimAnswered(this.reclaim, signal);
    return spaceShortfall(await statfs(this.host.root()), needed);
  }

  private async reclaimAnswered(reclaim: Reclaim, signal: AbortSignal): Promise<void> {
    const done = new AbortController();
    const givenUp = delay(RECLAIM_ANSWER_TIMEOUT_MS, true, { signal: AbortSignal.any([signal, done.signal]) }).catch(() => false);
    try {
      const timedOut = await Promise.race([reclaim.answered.then(() => false), givenUp]);
      if (timedOut) this.host.log.warn({ timeoutMs: RECLAIM_ANSWER_TIMEOUT_MS }, 'no answer to the partials report; checking space without it');
    } finally {
      done.abort();
    }
    signal.throwIfAborted();
  }
}
