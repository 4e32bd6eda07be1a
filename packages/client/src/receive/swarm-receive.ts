import { Outcome, type Logger, type Offer, type PeerEntry, type PeerId } from '@groupcast/shared';
import type { Placement } from './download-area.js';
import type { Receiver } from './receiver.js';
import type { DataFrame, FileHost, TransferPath } from './transfer-path.js';
import type { Replacing } from './versions.js';
import type { PiecePartial } from '../peer/piece-partial.js';
import { MemberSwarm } from '../peer/swarm.js';

/**
 * A file pulled piece by piece from peers and the server (PROTOCOL.md §7.5): from ACCEPT to its RESULT,
 * then lingering to serve its peers. Kept apart from receiver.ts, which opens the partial, chooses this
 * path and hands the transfer's frames here.
 */

/** What a swarmed transfer needs of the connection's session. */
export interface SwarmHost extends FileHost {
  receiver: Receiver;
  /** A peer sent a piece whose hash is wrong. */
  badPeer(peer: PeerId, piece: number): void;
}

export class SwarmReceive implements TransferPath {
  readonly swarm: MemberSwarm;
  /** Every piece is held and hashing and placing are under way (finishSwarm). */
  private finishing = false;

  constructor(
    private readonly host: SwarmHost,
    readonly offer: Offer,
    private readonly placement: Placement,
    readonly partial: PiecePartial,
    readonly log: Logger,
    private readonly replacing: Replacing | undefined,
  ) {
    const { receiver } = host;
    this.swarm = new MemberSwarm({
      log, node: receiver.options.peers!, transfer: offer.transfer, partial, counters: receiver.swarmCounters,
      toServer: (frame) => host.send(frame),
      complete: () => void this.finishSwarm().catch((err: unknown) => log.error({ err }, 'could not finish a swarmed transfer')),
      failed: (outcome, message, err) => void this.swarmFailed(outcome, message, err),
      badPeer: (peer, piece) => host.badPeer(peer, piece),
    });
  }

  /** Says ACCEPT with the bytes held, then joins the swarm (or finishes: every piece already held). */
  async start(peers: PeerEntry[]): Promise<void> {
    const { partial, log, offer } = this;
    log.info({ held: partial.held.count, pieces: partial.held.length }, partial.held.count > 0 ? 'resuming from held pieces' : 'accepted; pulling pieces');
    this.host.send({ type: 'accept', transfer: offer.transfer, offset: partial.heldBytes });
    if (partial.held.complete) {
      await this.finishSwarm();
      return;
    }
    this.swarm.start();
    this.swarm.peers(peers);
  }

  /** DATA from the server: the pieces the swarm asked it for. */
  data(frame: DataFrame): Promise<void> {
    return this.swarm.serverData(frame.offset, frame.payload);
  }

  async cancel(message: string): Promise<void> {
    await this.swarm.close();
    await this.host.end.cancelled(this.offer, this.log, message, this.partial);
  }

  /** The link went away: stop pulling, and keep the pieces held. */
  async close(): Promise<void> {
    await this.swarm.close();
    await this.partial.release();
  }

  private async finishSwarm(): Promise<void> {
    if (!this.host.current() || this.finishing) return;
    const { offer, placement, partial, swarm, log, replacing } = this;
    const hex = offer.transfer.toString('hex');
    // Hashing and placing take a while: a second completion meanwhile finds it finishing. Two finishes
    // would place the file twice and answer a false NAME_CLASH, failing the delivery for good. The state
    // stays 'swarming' so PEERS still reach the swarm (a revoked peer is dropped even now).
    this.finishing = true;
    const digest = await partial.digest();
    const placed = await this.host.end.finish({ offer, placement, file: partial, digest, log, replacing });
    if (placed) {
      // Finished: it still serves its peers from the placed file for a while; the server lists it as long.
      const { lingering } = this.host.receiver;
      lingering.set(hex, swarm);
      swarm.linger(async () => {
        lingering.delete(hex);
        await partial.release();
      });
    } else {
      await swarm.close();
    }
  }

  private async swarmFailed(outcome: Outcome, message: string, err: unknown): Promise<void> {
    // Once every piece is held and verified, a late bad piece (from the server, after an endgame) changes nothing.
    if (!this.host.current() || this.finishing) return;
    this.host.ended();
    await this.swarm.close();
    // A bad piece from the server is never written: the pieces held stay for the retry.
    if (outcome === Outcome.CHECKSUM) await this.partial.release();
    else await this.host.end.drop(this.partial, this.log);
    this.host.end.fail(this.offer, this.log, outcome, message, err);
  }
}
