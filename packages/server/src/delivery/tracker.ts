import {
  Bitfield, MAX_PEERS_LISTED, shortId, spanLength,
  type Frame, type Logger, type PeerEntry, type PeerId, type PieceLayout,
} from '@groupcast/shared';

/**
 * How long a member that finished a transfer is still listed as holding all of it: other members keep
 * fetching from it meanwhile (it keeps serving for as long, see the member's swarm), so the last
 * members to start are not left to the server alone.
 */
export const SEED_LINGER_MS = 60_000;

/** What a seat needs from the member's connection. */
export interface SeatLink {
  id: PeerId;
  /** Where other members reach it: the address the server sees, the port it said in HELLO (0: it does not serve). */
  address: string;
  peerPort: number;
  send(frame: Frame): void;
  isClosed(): boolean;
}

/**
 * One member's place in a transfer's swarm: what it holds (from its BITFIELD and HAVEs), and the
 * pieces the server chose to send it under "any piece" requests. It also tells where this attempt's
 * pieces came from: a piece the member reports (HAVE) that the server did not send it came from peers.
 */
export class Seat {
  held: Bitfield;
  /** Bytes of the pieces held, from anyone: a pulled delivery's progress. */
  heldBytes = 0;
  /** Bytes of the pieces the member reported in this attempt that the server had not sent it. */
  fromPeers = 0;
  /** Pieces this seat was chosen to get from the server and has not reported yet. */
  readonly assigned = new Set<number>();
  /** Pieces the server sent this member whole in this attempt. */
  private readonly sentByServer: Bitfield;
  private lingerTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly swarm: Swarm,
    readonly link: SeatLink,
  ) {
    this.held = Bitfield.empty(swarm.pieces);
    this.sentByServer = Bitfield.empty(swarm.pieces);
  }

  /** The member's holdings on joining (it may resume with pieces from peers, in any order): counted for neither source. */
  bitfield(bits: Buffer): void {
    const held = Bitfield.fromWire(bits, this.swarm.pieces);
    for (let i = 0; i < held.length; i++) if (held.has(i)) this.have(i, false);
  }

  /** The server has sent the whole piece to this member. */
  sent(piece: number): void {
    this.sentByServer.set(piece);
  }

  /** `reported`: the member said HAVE for it now, so it came from the server or from a peer in this attempt. */
  have(piece: number, reported = true): void {
    if (piece >= this.swarm.pieces || !this.held.set(piece)) return;
    const bytes = this.swarm.pieceBytes(piece);
    this.heldBytes += bytes;
    if (reported && !this.sentByServer.has(piece)) {
      this.fromPeers += bytes;
      this.swarm.peerBytes(bytes);
    }
    this.swarm.holders[piece]!++;
    this.assigned.delete(piece);
    this.swarm.unassign(piece);
  }

  /**
   * For an "any piece" request: a piece this member lacks that nobody holds and the server is not
   * already sending anyone — the server seeds each piece once before it sends any piece twice.
   * Undefined when there is none: the member gets the rest from its peers (or asks for a piece by index).
   */
  choose(): number | undefined {
    const piece = this.swarm.unseeded(this.held);
    if (piece === undefined) return undefined;
    this.assigned.add(piece);
    this.swarm.assign(piece);
    return piece;
  }

  /** Delivered: it holds everything, and stays listed for SEED_LINGER_MS unless its connection goes. */
  complete(): void {
    for (let i = 0; i < this.swarm.pieces; i++) this.have(i, false);
    this.lingerTimer = setTimeout(() => this.leave(), SEED_LINGER_MS);
    this.lingerTimer.unref();
  }

  leave(): void {
    clearTimeout(this.lingerTimer);
    this.swarm.remove(this);
  }
}

/**
 * The tracker's view of one transfer: who takes part, how many hold each piece, which pieces the
 * server is sending under "any" requests. Members learn their peers from PEERS, sent again to everyone
 * whenever someone joins or leaves (a revoked member leaves at once, and its peers drop it).
 */
export class Swarm {
  readonly pieces: number;
  readonly holders: Uint16Array;
  private readonly inFlight: Uint8Array;
  private readonly seats = new Map<PeerId, Seat>();

  constructor(
    readonly transfer: Buffer,
    /** Where each piece lies: a file's, or a tree's over its files' concatenation (PROTOCOL.md §7.7). */
    readonly layout: PieceLayout,
    readonly log: Logger,
    private readonly onEmpty: () => void,
    /** Bytes members took from peers (a piece reported that the server had not sent), for the metrics. */
    readonly peerBytes: (bytes: number) => void,
  ) {
    this.pieces = layout.count;
    this.holders = new Uint16Array(this.pieces);
    this.inFlight = new Uint8Array(this.pieces);
  }

  pieceBytes(piece: number): number {
    return spanLength(this.layout, piece);
  }

  get members(): number {
    return this.seats.size;
  }

  join(link: SeatLink): Seat {
    this.seats.get(link.id)?.leave();
    // A finished member whose connection went is no longer anyone's source.
    for (const seat of [...this.seats.values()]) if (seat.link.isClosed()) seat.leave();
    const seat = new Seat(this, link);
    this.seats.set(link.id, seat);
    this.log.debug({ member: shortId(link.id), seats: this.seats.size }, 'joined the swarm');
    return seat;
  }

  seat(id: PeerId): Seat | undefined {
    return this.seats.get(id);
  }

  remove(seat: Seat): void {
    if (this.seats.get(seat.link.id) !== seat) return;
    this.seats.delete(seat.link.id);
    for (let i = 0; i < this.pieces; i++) if (seat.held.has(i)) this.holders[i]!--;
    for (const piece of seat.assigned) this.unassign(piece);
    this.log.debug({ member: shortId(seat.link.id), seats: this.seats.size }, 'left the swarm');
    if (this.seats.size === 0) this.onEmpty();
    else this.announce();
  }

  assign(piece: number): void {
    this.inFlight[piece] = 1;
  }

  unassign(piece: number): void {
    this.inFlight[piece] = 0;
  }

  /** The first piece `held` lacks that has no holder and is not on its way to anyone. */
  unseeded(held: Bitfield): number | undefined {
    for (let i = 0; i < this.pieces; i++) {
      if (this.holders[i] === 0 && this.inFlight[i] === 0 && !held.has(i)) return i;
    }
    return undefined;
  }

  /**
   * The peers one member is told about: the others that serve. Past MAX_PEERS_LISTED, each member gets
   * its neighbours on a ring of ids, which is symmetric — if A lists B, B lists A — so a link one side
   * dials is one the other side accepts.
   */
  peersFor(seat: Seat): PeerEntry[] {
    const serving = [...this.seats.values()].filter((s) => s.link.peerPort > 0 || s === seat).sort((a, b) => (a.link.id < b.link.id ? -1 : 1));
    const at = serving.indexOf(seat);
    const others = serving.length - 1;
    const picked: Seat[] = [];
    if (others <= MAX_PEERS_LISTED) picked.push(...serving.filter((s) => s !== seat));
    else {
      const half = MAX_PEERS_LISTED / 2;
      for (let d = 1; d <= half; d++) {
        picked.push(serving[(at + d) % serving.length]!, serving[(at - d + serving.length) % serving.length]!);
      }
    }
    return picked.filter((s) => s.link.peerPort > 0).map((s) => ({ id: s.link.id, address: s.link.address, port: s.link.peerPort }));
  }

  /** Tells every member its current peers; called when a member starts pulling (it has accepted) and when one leaves. */
  announce(): void {
    for (const seat of this.seats.values()) seat.link.send({ type: 'peers', transfer: this.transfer, peers: this.peersFor(seat) });
  }
}

/** Every transfer's swarm, made when its first member starts pulling and forgotten when its last leaves. */
export class Tracker {
  private readonly swarms = new Map<string, Swarm>();
  /** Bytes members reported getting from peers, over every swarm since start. */
  peerBytes = 0;

  constructor(private readonly log: Logger) {}

  /** Members taking part in a swarm now (pulling, or finished and still listed as a source). */
  get members(): number {
    let count = 0;
    for (const swarm of this.swarms.values()) count += swarm.members;
    return count;
  }

  join(transferHex: string, layout: PieceLayout, link: SeatLink): Seat {
    let swarm = this.swarms.get(transferHex);
    const { count, size, pieceSize } = layout;
    if (!swarm || swarm.layout.pieceSize !== pieceSize || swarm.layout.size !== size || swarm.layout.count !== count) {
      const made: Swarm = new Swarm(Buffer.from(transferHex, 'hex'), layout, this.log.child({ transfer: transferHex }), () => {
        if (this.swarms.get(transferHex) === made) this.swarms.delete(transferHex);
      }, (bytes) => {
        this.peerBytes += bytes;
      });
      swarm = made;
      this.swarms.set(transferHex, swarm);
    }
    return swarm.join(link);
  }

  /** Takes a member out of a transfer's swarm at once (revoked, or it left the group). */
  leave(transferHex: string, member: PeerId): void {
    this.swarms.get(transferHex)?.seat(member)?.leave();
  }
}
