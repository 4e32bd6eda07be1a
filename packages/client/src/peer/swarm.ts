import {
  ANY_PIECE, ErrorCode, GroupcastError, isGroupcastError, Outcome, parsePeerId, shortId, spanLength,
  type Bitfield, type Frame, type Logger, type PeerEntry, type PeerId, type PieceLayout,
} from '@groupcast/shared';
import type { PeerLink } from './peer-link.js';
import { MAX_PEER_LINKS, type PeerNode, type SwarmHandle } from './peer-node.js';
import { PieceAssembly } from '../receive/piece-assembly.js';

/** Requests to the server at once: enough to keep its stream full, bounded well under its queue cap. */
export const SERVER_REQUESTS = 8;
/**
 * Once the server has seeded every piece, a piece no connected peer has is asked of the server when
 * peers have brought nothing for this long: pieces on their way to other members appear at peers
 * meanwhile, so the server does not send them twice; a member with no peer at all asks at once.
 */
export const PEER_WAIT_MS = 2_000;
/** A pulling member that has sent the server nothing for this long while its links bring bytes sends BITFIELD again (under the server's 60 s idle limit). */
export const PULL_KEEPALIVE_MS = 20_000;
/** How long a finished member keeps serving the transfer to its peers (the server lists it as long). */
export const SEED_LINGER_MS = 60_000;
/**
 * A peer that could not be dialed is tried again after FIRST_REDIAL_MS, doubling up to REDIAL_MS: the
 * usual refusal is a peer that has not been offered the transfer yet (its OFFER is a moment behind
 * ours), and a link a second later still saves the server a copy.
 */
const FIRST_REDIAL_MS = 500;
const REDIAL_MS = 10_000;
/** Ring offsets a member dials (its overlay, see MemberSwarm.dialTargets): 4 dialed and 4 dialing it, 8 links, under MAX_PEER_LINKS. */
const DIAL_OFFSETS = [1, 2, 4, 8];
/**
 * Bytes of verified pieces handed to the disk and not yet written: past this, no source is asked for
 * more until writes finish (the requests already out still arrive). Pieces come at the network's pace
 * and wait in libuv's queue at the disk's, each holding its buffers: unbounded, a member on a disk
 * slower than its links (an SD card, a busy HDD, a full page cache) held every piece its links brought.
 */
export const WRITE_BACKLOG_BYTES = 8 * 1024 * 1024;
/** In the endgame a missing piece may be asked of this many sources at once, so one slow peer cannot hold the end. */
const ENDGAME_SOURCES = 2;
/** The endgame starts when this few pieces are missing (each then may come twice: at most this many wasted). */
const ENDGAME_PIECES = 4;

/** Bytes of verified pieces kept, by where they came from (a piece fetched twice counts once), served, and bad pieces. */
export interface SwarmCounters {
  fromServer: number;
  fromPeers: number;
  toPeers: number;
  badPieces: number;
}

/**
 * Where a swarm keeps its pieces: a single file's partial (piece-partial.ts) or a tree's staging area
 * (pulled-tree.ts). The swarm checks every piece before it writes it; the store says where it goes.
 */
export interface PieceStore {
  readonly layout: PieceLayout;
  /** Every piece's SHA-256, in the layout's numbering. */
  readonly hashes: Buffer;
  readonly held: Bitfield;
  /** Reads held bytes at `position` of the transfer into `into`, for a peer (within one piece). */
  readInto(position: number, into: Buffer): Promise<void>;
  /** Writes a verified piece from the buffers it arrived in; `release` once they are no longer read. */
  write(piece: number, chunks: readonly Uint8Array[], release?: () => void): Promise<void>;
}

export interface SwarmOptions {
  log: Logger;
  node: PeerNode;
  transfer: Buffer;
  partial: PieceStore;
  /** Frames to the server, over the member's data connection. */
  toServer: (frame: Frame) => void;
  /** Every piece is held and written. */
  complete: () => void;
  /** The transfer cannot go on (a bad piece from the server, a disk error). */
  failed: (outcome: Outcome, message: string, err?: unknown) => void;
  counters: SwarmCounters;
  /** A peer was dropped for serving a bad piece. */
  badPeer: (id: PeerId, piece: number) => void;
}

/**
 * This member's part in one transfer's swarm: which pieces to ask of which peer (rarest first among
 * what each link offers), what to ask of the server ("any" while it still seeds, then by index as the
 * source of last resort), and the endgame. Pieces are verified before they are written or served.
 */
export class MemberSwarm implements SwarmHandle {
  readonly transfer: Buffer;
  readonly hex: string;
  readonly layout: PieceLayout;
  readonly hashes: Buffer;
  private allowed = new Map<PeerId, PeerEntry>();
  /** The overlay's dial targets for `allowed` (dialTargets), until the list changes. */
  private targets: PeerId[] | undefined;
  private readonly links = new Map<PeerId, PeerLink>();
  private readonly dialing = new Set<PeerId>();
  /** Peers whose last dial failed: when, and how long to wait before the next. */
  private readonly unreachable = new Map<PeerId, { at: number; waitMs: number }>();
  private readonly banned = new Set<PeerId>();
  /** Sources each missing piece is being fetched from. */
  private readonly pending = new Map<number, Set<PeerLink | 'server'>>();
  private anyOutstanding = 0;
  private readonly askedOfServer = new Set<number>();
  /** Peers whose link was closed because both sides hold everything: not dialed again. */
  private readonly finishedPeers = new Set<PeerId>();
  /** Pieces being written now, and their bytes. */
  private readonly writing = new Set<number>();
  private writingBytes = 0;
  /**
   * Pieces neither held nor being written, in no order, and where each is in that list (-1: not in it):
   * what the scheduler looks through. A tree has many pieces (one per small file), most of them held
   * by the end; scanning every piece on every request cost the swarm a quarter of a member's CPU.
   */
  private readonly missing: number[] = [];
  private readonly missingAt: Int32Array;
  private serverPiece: PieceAssembly | undefined;
  private seededAt: number | undefined;
  /** When a piece last arrived from a peer. */
  private lastPeerPieceAt = 0;
  private waitTimer: NodeJS.Timeout | undefined;
  private keepalive: NodeJS.Timeout | undefined;
  private lastToServerAt = 0;
  /** Bytes the links had brought at the last showProgress. */
  private linkBytesSeen = 0;
  private lingerTimer: NodeJS.Timeout | undefined;
  private done = false;
  private closedFlag = false;

  constructor(private readonly options: SwarmOptions) {
    this.transfer = options.transfer;
    this.hex = options.transfer.toString('hex');
    this.layout = options.partial.layout;
    this.hashes = options.partial.hashes;
    this.missingAt = new Int32Array(this.layout.count).fill(-1);
    for (let piece = 0; piece < this.layout.count; piece++) {
      if (this.held.has(piece)) continue;
      this.missingAt[piece] = this.missing.length;
      this.missing.push(piece);
    }
  }

  /** The piece is kept (being written, then held): out of the scheduler's list. */
  private unmiss(piece: number): void {
    const at = this.missingAt[piece]!;
    if (at < 0) return;
    const last = this.missing.pop()!;
    if (last !== piece) {
      this.missing[at] = last;
      this.missingAt[last] = at;
    }
    this.missingAt[piece] = -1;
  }

  get held(): Bitfield {
    return this.options.partial.held;
  }

  start(): void {
    this.options.node.register(this.hex, this);
    this.toServer({ type: 'bitfield', transfer: this.transfer, bits: this.held.toWire() });
    this.keepalive = setInterval(() => this.showProgress(), PULL_KEEPALIVE_MS);
    this.keepalive.unref();
    this.pump();
  }

  private toServer(frame: Frame): void {
    this.lastToServerAt = Date.now();
    this.options.toServer(frame);
  }

  /**
   * The server drops a pull that sends it nothing for its idle limit (60 s): pieces still coming in from
   * slow peers (a low --peer-rate, large pieces) are progress it cannot see, so the BITFIELD goes again.
   */
  private showProgress(): void {
    let bytes = 0;
    for (const link of this.links.values()) bytes += link.bytesIn;
    const moved = bytes !== this.linkBytesSeen;
    this.linkBytesSeen = bytes;
    if (this.done || !moved || Date.now() - this.lastToServerAt < PULL_KEEPALIVE_MS) return;
    this.toServer({ type: 'bitfield', transfer: this.transfer, bits: this.held.toWire() });
  }

  // ---- from the server ----

  /** PEERS: the current list. Links to ids no longer on it (revoked, gone) are closed at once. */
  peers(entries: PeerEntry[]): void {
    const next = new Map<PeerId, PeerEntry>();
    for (const entry of entries) {
      try {
        const id = parsePeerId(entry.id);
        if (id !== this.options.node.id) next.set(id, { ...entry, id });
      } catch {
        this.options.log.debug({ entry: entry.id.slice(0, 16) }, 'ignored a malformed peer id');
      }
    }
    this.allowed = next;
    this.targets = undefined;
    for (const [id, link] of this.links) {
      if (!next.has(id)) link.close(new GroupcastError(ErrorCode.NOT_AUTHORIZED, 'no longer listed by the server'));
    }
    this.pump();
  }

  seeded(): void {
    this.anyOutstanding = Math.max(0, this.anyOutstanding - 1);
    this.seededAt ??= Date.now();
    this.pump();
  }

  /** DATA from the server: the piece it chose for an "any" request, or one asked by index, in order. */
  async serverData(offset: number, payload: Uint8Array): Promise<void> {
    if (offset >= this.layout.size) throw new GroupcastError(ErrorCode.PROTOCOL, `DATA at ${offset}, past the transfer's ${this.layout.size} bytes`);
    let current = this.serverPiece;
    const piece = current?.piece ?? this.layout.pieceAt(offset);
    if (!current) {
      if (this.askedOfServer.has(piece)) this.askedOfServer.delete(piece);
      else if (this.anyOutstanding > 0) this.anyOutstanding--;
      else throw new GroupcastError(ErrorCode.PROTOCOL, `DATA for piece ${piece}, which was not requested`);
      const { start, end } = this.layout.span(piece);
      current = new PieceAssembly(piece, start, end - start);
      this.serverPiece = current;
      this.addPending(piece, 'server');
    }
    current.add(offset, payload);
    if (!current.complete) return;
    this.serverPiece = undefined;
    this.dropPending(piece, 'server');
    if (!current.matches(this.hashes)) {
      this.options.failed(Outcome.CHECKSUM, `piece ${piece} from the server does not match its sha256 in the manifest`);
      return;
    }
    await this.keep(piece, current.chunks, 'fromServer', 'server');
  }

  // ---- from links (LinkOwner) ----

  admits(id: PeerId): boolean {
    return this.allowed.has(id) && !this.banned.has(id) && !this.closedFlag;
  }

  linkCount(): number {
    return this.links.size;
  }

  attach(link: PeerLink): void {
    this.dialing.delete(link.id);
    if (this.links.has(link.id) || !this.admits(link.id)) {
      link.close();
      return;
    }
    this.links.set(link.id, link);
    if (this.closeIfIdle(link)) return;
    // Pieces kept during the handshake were in neither our BITFIELD nor a HAVE the peer could see.
    for (let piece = 0; piece < this.held.length; piece++) {
      if (this.held.has(piece) && !link.announced.has(piece)) link.send({ type: 'have', transfer: this.transfer, piece });
    }
    this.pump();
  }

  /**
   * Two members that both hold everything have nothing for each other: their link goes (and is not
   * dialed again), so a finished member's MAX_PEER_LINKS slots serve members that still need pieces —
   * otherwise the first members to finish keep their links to each other and turn the next ones away.
   */
  private closeIfIdle(link: PeerLink): boolean {
    if (!this.held.complete || !link.remote.complete) return false;
    this.finishedPeers.add(link.id);
    link.close();
    return true;
  }

  readInto(position: number, into: Buffer): Promise<void> {
    return this.options.partial.readInto(position, into);
  }

  pieceArrived(link: PeerLink, piece: number, chunks: readonly Uint8Array[], release: () => void): void {
    this.lastPeerPieceAt = Date.now();
    this.dropPending(piece, link);
    void this.keep(piece, chunks, 'fromPeers', shortId(link.id), release);
    // The link has a free request slot now (the piece counts as kept while it is written): fill it
    // without waiting for the write, so that between runs of the scheduler every link is full or has
    // nothing to offer (what changed() relies on).
    this.schedule();
  }

  badPiece(link: PeerLink, piece: number): void {
    this.banned.add(link.id);
    this.options.counters.badPieces++;
    this.options.log.warn({ peer: link.id, piece }, 'peer sent a piece that does not match the manifest; dropped for this transfer');
    this.options.badPeer(link.id, piece);
    link.close(new GroupcastError(ErrorCode.CHECKSUM, `bad piece ${piece}`));
  }

  released(link: PeerLink, piece: number): void {
    this.dropPending(piece, link);
    this.schedule();
  }

  /**
   * A HAVE: one more piece on one link's offer. After the scheduler ran, every link is full or offers
   * nothing this member may ask, so this piece is the only request the HAVE can bring, and only to
   * this link (or, in the endgame, a second source for a piece being fetched). Not a full run: one
   * scanned every piece for every link with a free slot, on each of the ~8 HAVEs per piece kept.
   */
  changed(link: PeerLink, piece: number): void {
    if (this.closeIfIdle(link) || this.scheduled || this.done || this.backlogged || link.free <= 0) return;
    const next = this.kept(piece) || this.pending.has(piece) ? this.endgamePiece(link) : piece;
    if (next === undefined) return;
    link.request(next);
    this.addPending(next, link);
  }

  served(bytes: number): void {
    this.options.counters.toPeers += bytes;
  }

  closed(link: PeerLink): void {
    if (this.links.get(link.id) === link) this.links.delete(link.id);
    this.schedule();
  }

  // ---- keeping pieces ----

  /**
   * `from`: the server or the peer's short id, for the per-piece trace (debug: the scale benchmark's
   * --scale-trace reads it). `release`: gives the chunks' buffers back once nothing reads them.
   */
  private async keep(
    piece: number, chunks: readonly Uint8Array[], source: 'fromServer' | 'fromPeers', from: string, release?: () => void,
  ): Promise<void> {
    // A piece that came from two sources (the endgame) is written and counted once.
    if (this.held.has(piece) || this.writing.has(piece) || this.done) {
      release?.();
      this.schedule();
      return;
    }
    const bytes = spanLength(this.layout, piece);
    this.writing.add(piece);
    this.writingBytes += bytes;
    this.unmiss(piece);
    try {
      await this.options.partial.write(piece, chunks, release);
    } catch (err) {
      // A tree's file whose pieces all matched but whose SHA-256 does not (pulled-tree.ts): the manifest's fault, not the disk's.
      if (isGroupcastError(err, ErrorCode.CHECKSUM)) this.options.failed(Outcome.CHECKSUM, (err as Error).message, err);
      else this.options.failed(Outcome.IO_ERROR, `write failed: ${(err as Error).message}`, err);
      return;
    } finally {
      this.writing.delete(piece);
      this.writingBytes -= bytes;
    }
    this.options.counters[source] += bytes;
    this.options.log.debug({ piece, from }, 'piece kept');
    this.pending.delete(piece);
    const have: Frame = { type: 'have', transfer: this.transfer, piece };
    this.toServer(have);
    for (const link of this.links.values()) link.send(have);
    // Pieces are written concurrently: the last two can both find the file complete; it completes once.
    if (this.held.complete) {
      if (!this.done) {
        this.done = true;
        for (const link of [...this.links.values()]) this.closeIfIdle(link);
        this.options.complete();
      }
      return;
    }
    this.schedule();
  }

  private addPending(piece: number, source: PeerLink | 'server'): void {
    let sources = this.pending.get(piece);
    if (!sources) this.pending.set(piece, (sources = new Set()));
    sources.add(source);
  }

  private dropPending(piece: number, source: PeerLink | 'server'): void {
    const sources = this.pending.get(piece);
    sources?.delete(source);
    if (sources?.size === 0) this.pending.delete(piece);
  }

  // ---- scheduling ----

  /** Runs the scheduler on the next turn, once per burst of events. */
  private scheduled = false;
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    if (this.closedFlag) return;
    // A finished member still dials its overlay peers listed after it finished: only one side of a
    // pair dials, so without this a later member it is that side for would never link to it.
    this.dialListed();
    // The disk is behind: asked again when a write finishes (keep() schedules).
    if (this.done || this.backlogged) return;
    this.askPeers();
    this.askServer();
  }

  /** Dials the overlay's peers it is this member's turn to dial (see dialTargets); the others dial it. */
  private dialListed(): void {
    for (const id of this.dialTargets()) {
      if (this.links.size + this.dialing.size >= MAX_PEER_LINKS) return;
      if (this.links.has(id) || this.dialing.has(id) || this.banned.has(id) || this.finishedPeers.has(id)) continue;
      const failed = this.unreachable.get(id);
      if (failed && Date.now() - failed.at < failed.waitMs) continue;
      const entry = this.allowed.get(id);
      if (!entry) continue;
      this.dialing.add(id);
      this.options.node.dial(entry, this.hex);
    }
  }

  /**
   * The overlay: the listed peers and this member on a ring sorted by id, each member dialing the ones
   * DIAL_OFFSETS ahead of it. Every member is dialed by as many as it dials, so a dial does not meet a
   * peer whose links are full, and the longer offsets shorten the ring: any two of 16 members are at
   * most 2 hops apart, and a larger ring takes about N / 16 (the nearest 8 ids would take N / 8; random
   * links, log N, need the server to list more than the ring's neighbourhood). Where a pair would dial
   * each other (a small ring), the smaller id dials. Past MAX_PEERS_LISTED the server lists the ring's neighbourhood, so the offsets agree there too.
   */
  private dialTargets(): PeerId[] {
    if (this.targets) return this.targets;
    const me = this.options.node.id;
    const ring = [...this.allowed.keys(), me].sort();
    const at = ring.indexOf(me);
    const targets = new Set<PeerId>();
    for (const offset of DIAL_OFFSETS) {
      if (offset >= ring.length) break;
      const id = ring[(at + offset) % ring.length]!;
      const dialsUs = DIAL_OFFSETS.includes(ring.length - offset);
      if (!dialsUs || me < id) targets.add(id);
    }
    this.targets = [...targets];
    return this.targets;
  }

  /** Whether a listed peer may still link to this member: one it dials (again, after a failure), or one that dials it. */
  private mayLink(): boolean {
    for (const id of this.allowed.keys()) if (!this.banned.has(id) && !this.finishedPeers.has(id)) return true;
    return false;
  }

  dialEnded(id: PeerId): void {
    this.dialing.delete(id);
    const waitMs = Math.min(REDIAL_MS, 2 * (this.unreachable.get(id)?.waitMs ?? FIRST_REDIAL_MS / 2));
    this.unreachable.set(id, { at: Date.now(), waitMs });
    setTimeout(() => this.schedule(), waitMs).unref();
    this.schedule();
  }

  private availability(piece: number): number {
    let count = 0;
    for (const link of this.links.values()) if (link.remote.has(piece)) count++;
    return count;
  }

  private askPeers(): void {
    const links = [...this.links.values()].sort(() => Math.random() - 0.5);
    for (const link of links) {
      while (link.free > 0) {
        const piece = this.rarestFrom(link) ?? this.endgamePiece(link);
        if (piece === undefined) break;
        link.request(piece);
        this.addPending(piece, link);
      }
    }
  }

  /** The missing piece this link has that fewest links have, not yet being fetched; ties broken at random. */
  private rarestFrom(link: PeerLink): number | undefined {
    let best: number | undefined;
    let bestCount = Infinity;
    const count = this.missing.length;
    const start = Math.floor(Math.random() * count);
    for (let k = 0; k < count; k++) {
      const piece = this.missing[(start + k) % count]!;
      if (this.pending.has(piece) || !link.remote.has(piece)) continue;
      const available = this.availability(piece);
      if (available < bestCount) {
        best = piece;
        bestCount = available;
        if (available === 1) break;
      }
    }
    return best;
  }

  private get backlogged(): boolean {
    return this.writingBytes >= WRITE_BACKLOG_BYTES;
  }

  /** Held, or verified and being written: not to be fetched again. */
  private kept(piece: number): boolean {
    return this.held.has(piece) || this.writing.has(piece);
  }

  /**
   * The endgame: when every missing piece is being fetched and no more than ENDGAME_PIECES are missing,
   * a second source is asked for one this link has. Only at the very end: a second copy has no CANCEL,
   * so it takes the serving peer's uplink from members that still need other pieces.
   */
  private endgamePiece(link: PeerLink): number | undefined {
    const missing = this.held.length - this.held.count - this.writing.size;
    if (missing === 0 || missing > ENDGAME_PIECES) return undefined;
    let fetching = 0;
    for (const piece of this.pending.keys()) if (!this.kept(piece)) fetching++;
    if (fetching < missing) return undefined;
    for (const [piece, sources] of this.pending) {
      if (this.kept(piece)) continue;
      if (sources.size < ENDGAME_SOURCES && !sources.has(link) && link.remote.has(piece) && !link.requested(piece)) return piece;
    }
    return undefined;
  }

  private askServer(): void {
    const outstanding = (): number => this.anyOutstanding + this.askedOfServer.size + (this.serverPiece ? 1 : 0);
    if (this.seededAt === undefined) {
      while (outstanding() < SERVER_REQUESTS) {
        this.anyOutstanding++;
        this.toServer({ type: 'request', transfer: this.transfer, piece: ANY_PIECE });
      }
      return;
    }
    // No link, none being dialed, and no listed peer that may still link: no peer will bring anything,
    // so the server is asked at once. A member that waits to be dialed, or to dial again, is not alone:
    // asking at once would take every piece from the server before its links open.
    const alone = this.links.size === 0 && this.dialing.size === 0 && !this.mayLink();
    // Peers still bringing pieces will bring these too as they spread (the server seeded each once):
    // the server is asked only once peers have brought nothing for PEER_WAIT_MS.
    const waited = Date.now() - Math.max(this.seededAt, this.lastPeerPieceAt) >= PEER_WAIT_MS;
    // Waiting, and the timer that looks again is set: nothing to do now (this runs on every HAVE).
    if (!alone && !waited && this.waitTimer) return;
    let waiting = false;
    for (let k = 0; k < this.missing.length && outstanding() < SERVER_REQUESTS; k++) {
      const piece = this.missing[k]!;
      if (this.askedOfServer.has(piece) || this.pending.get(piece)?.has('server')) continue;
      // Being fetched from a peer, or a connected peer has it: the peers will bring it.
      if (this.pending.has(piece) || this.availability(piece) > 0) continue;
      if (!alone && !waited) {
        waiting = true;
        break;
      }
      this.askedOfServer.add(piece);
      this.toServer({ type: 'request', transfer: this.transfer, piece });
    }
    if (waiting && !this.waitTimer) {
      this.waitTimer = setTimeout(() => {
        this.waitTimer = undefined;
        this.pump();
      }, PEER_WAIT_MS);
      this.waitTimer.unref();
    }
  }

  // ---- the end ----

  /** Finished: keep serving peers from the placed file for SEED_LINGER_MS, then let go. */
  linger(release: () => Promise<void>): void {
    this.lingerTimer = setTimeout(() => void this.close().then(release), SEED_LINGER_MS);
    this.lingerTimer.unref();
  }

  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    clearTimeout(this.waitTimer);
    clearInterval(this.keepalive);
    clearTimeout(this.lingerTimer);
    this.options.node.unregister(this.hex, this);
    for (const link of [...this.links.values()]) link.close();
    this.options.log.debug({ peers: [...this.banned].map(shortId) }, 'left the swarm');
  }
}
