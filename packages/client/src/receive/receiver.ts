import { EventEmitter } from 'node:events';
import { chmod, lstat, mkdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  errnoCode, ErrorCode, GroupcastError, isReclaimRequest, Outcome, truncateUtf8,
  protocolViolation, type Frame, type Logger, type Manifest, type Offer, type PeerEntry, type PeerId,
} from '@groupcast/shared';
import { PARTIAL_DIR, partialPathFor, placementFor, reclaimStalePartials, type Placement } from './download-area.js';
import type { ReceiverEvents } from './events.js';
import type { PieceSpec } from './incoming-file.js';
import { describeError, outcomeOfError } from './outcomes.js';
import { PartialsReport } from './partials-report.js';
import { PatchReceive } from './patch-receive.js';
import { ReceivedLog } from './received-log.js';
import { StreamReceive } from './stream-receive.js';
import { SwarmReceive } from './swarm-receive.js';
import { ABORT_CANCEL, ABORT_CLOSED, describe, TransferEnd } from './transfer-end.js';
import type { FileHost, TransferPath } from './transfer-path.js';
import { TreeAssembly, TreeReceive } from './tree-receive.js';
import { judgeExisting, type Replacing } from './versions.js';
import { seedFromOldVersion } from './held-pieces.js';
import type { PeerNode } from '../peer/peer-node.js';
import { PiecePartial } from '../peer/piece-partial.js';
import type { MemberSwarm, SwarmCounters } from '../peer/swarm.js';

/** The connection a session answers over. */
export interface Link {
  send(frame: Frame): void;
}

export interface ReceiverOptions {
  log: Logger;
  downloads: string;
  stateDir: string;
  /** Whether this member is (or is becoming) a member of a group; offers for any other are declined. */
  wants: (group: string) => boolean;
  checkpointBytes?: number | undefined;
  /** This member's peer port: with it, transfers with a manifest are pulled piece by piece from peers and the server. */
  peers?: PeerNode | undefined;
  /** Previous versions kept when a newer distribution replaces a file (`--keep-old`); default none. */
  keepOld?: number | undefined;
}

/**
 * Turns OFFERs into files. Owns the download directory and the received log; each data connection
 * gets a ReceiveSession that runs the per-transfer state machine.
 */
export class Receiver extends EventEmitter<ReceiverEvents> {
  readonly received: ReceivedLog;
  private rootDir: string | undefined;
  private readonly sessions = new Set<ReceiveSession>();
  private settled: Promise<void> = Promise.resolve();
  /** Bytes by source and bad pieces, over every swarmed transfer. */
  readonly swarmCounters: SwarmCounters = { fromServer: 0, fromPeers: 0, toPeers: 0, badPieces: 0 };

  constructor(readonly options: ReceiverOptions) {
    super();
    this.received = new ReceivedLog(options.stateDir, options.log);
  }

  /** The download directory, resolved through symlinks once at start. */
  get root(): string {
    if (!this.rootDir) throw new GroupcastError(ErrorCode.CLOSED, 'receiver not started');
    return this.rootDir;
  }

  async start(): Promise<void> {
    const { downloads } = this.options;
    try {
      await mkdir(downloads, { recursive: true, mode: 0o755 });
      this.rootDir = await realpath(downloads);
      const partials = join(this.rootDir, PARTIAL_DIR);
      await mkdir(partials, { recursive: true, mode: 0o700 });
      await chmod(partials, 0o700);
    } catch (err) {
      throw new GroupcastError(ErrorCode.CONFIG, `cannot use download directory ${downloads}`, { cause: err });
    }
    const reclaimed = await reclaimStalePartials(this.rootDir, Date.now()).catch((err: unknown) => {
      this.options.log.warn({ err }, 'could not look for stale partials');
      return [];
    });
    if (reclaimed.length > 0) this.options.log.info({ transfers: reclaimed }, 'deleted stale partial data');
    await this.received.load();
  }

  /**
   * `pieces`: the connection negotiated pieces, so each OFFER comes after its MANIFEST. `heldPieces`: the
   * server said HELD_PIECES, so a BITFIELD before ACCEPT spares the pieces this member already holds.
   */
  openSession(link: Link, server: PeerId, options: { pieces?: boolean; heldPieces?: boolean } = {}): ReceiveSession {
    const session = new ReceiveSession(this, link, this.options.log.child({ server }), options.pieces ?? false, options.heldPieces ?? false);
    this.sessions.add(session);
    return session;
  }

  /** Finished swarms still serving their peers (SEED_LINGER_MS), by transfer: PEERS updates reach them here. */
  readonly lingering = new Map<string, MemberSwarm>();

  /** A closing session registers here; the next session's work waits until it has let go of its partial. */
  sessionClosing(session: ReceiveSession, done: Promise<void>): void {
    this.sessions.delete(session);
    this.settled = Promise.all([this.settled, done.catch(() => undefined)]).then(() => undefined);
  }

  whenSettled(): Promise<void> {
    return this.settled;
  }

  async close(): Promise<void> {
    await Promise.all([...this.sessions].map((session) => session.close()));
    await this.settled;
    await this.received.close();
  }
}

type State =
  | { kind: 'idle' }
  | { kind: 'preparing'; hex: string; abort: AbortController; done: Promise<void> }
  /**
   * From ACCEPT to RESULT, on the path chosen for it: streamed (stream-receive.ts), streamed less the pieces
   * held (patch-receive.ts), pulled from peers (swarm-receive.ts) or a directory tree (tree-receive.ts).
   */
  | { kind: 'receiving'; hex: string; path: TransferPath }
  /** A transfer ended early on our side (RESULT sent); DATA the server had already sent is dropped. */
  | { kind: 'discarding'; hex: string; transfer: Buffer };

const IDLE: State = { kind: 'idle' };

/** The piece hashes a MANIFEST announced for the OFFER that follows it, and the peers to pull it from, if PEERS said so. */
interface Announced {
  pieces: PieceSpec;
  peers: PeerEntry[] | undefined;
}

/**
 * One data connection's receiving state machine: idle → preparing (checks, resume, the path chosen, ACCEPT)
 * → receiving (the transfer's frames handed to its path) → verify and place → RESULT → idle. One transfer at
 * a time, as the protocol says. Anything from the server that breaks the protocol throws PROTOCOL, which
 * closes the connection; a disk or input problem becomes a DECLINE or RESULT, never an exception.
 */
export class ReceiveSession {
  private state: State = IDLE;
  private closed = false;
  private closing: Promise<void> | undefined;
  private handling: Promise<void> = Promise.resolve();
  private readonly partials: PartialsReport;
  private readonly end: TransferEnd;
  /** The TREE parts received so far of the next OFFER's tree manifest, and the peers to pull it with if PEERS followed them. */
  private treeParts: TreeAssembly | undefined;
  private treePeers: PeerEntry[] | undefined;
  /** The MANIFEST just received, waiting for the OFFER it announces. */
  private announced: { transfer: Buffer; pieces: PieceSpec; size: number; sha256: Buffer; path: string; peers?: PeerEntry[] } | undefined;

  constructor(
    private readonly receiver: Receiver,
    private readonly link: Link,
    private readonly log: Logger,
    private readonly pieces: boolean,
    private readonly heldPieces: boolean,
  ) {
    this.partials = new PartialsReport({ log, send: (frame) => this.send(frame), root: () => receiver.root });
    this.end = new TransferEnd({ receiver, send: (frame) => this.send(frame), idle: () => this.transferEnded() });
  }

  /**
   * The transfer in flight is over on this side. A pulled one may still get DATA for a piece it asked
   * the server for by index that a peer brought first: dropped, as for a stream that ended early.
   */
  private transferEnded(): void {
    const state = this.state;
    if (state.kind === 'receiving' && state.path instanceof SwarmReceive) this.discard(state.path);
    else this.state = IDLE;
  }

  /** Handles one frame from the server; the returned promise is the backpressure on the socket. */
  handle(frame: Frame): Promise<void> {
    if (this.closed) return Promise.resolve();
    const work = this.dispatch(frame);
    this.handling = work.catch(() => undefined);
    return work;
  }

  private async dispatch(frame: Frame): Promise<void> {
    switch (frame.type) {
      case 'offer':
        return this.offer(frame);
      case 'data':
        return this.data(frame);
      case 'cancel':
        if (isReclaimRequest(frame)) return this.partials.reportPartials();
        return this.cancel(frame.transfer.toString('hex'), frame.message);
      case 'manifest':
        return this.manifest(frame);
      case 'tree':
        return this.treePart(frame);
      case 'peers':
      case 'seeded':
        return this.swarmFrame(frame);
      default:
        throw protocolViolation(`server sent ${frame.type} to a member`);
    }
  }

  private inFlight(): boolean {
    return this.state.kind === 'preparing' || this.state.kind === 'receiving';
  }

  private send(frame: Frame): void {
    if (!this.closed) this.link.send(frame);
  }

  /** Hands a prepared transfer's frames to its path from now on. */
  private receiving(path: TransferPath): void {
    this.state = { kind: 'receiving', hex: path.offer.transfer.toString('hex'), path };
  }

  /** Whether `path` is still the transfer in flight. */
  private isCurrent(path: TransferPath | undefined): boolean {
    return this.state.kind === 'receiving' && this.state.path === path;
  }

  /** The transfer on `path` ended early on this side: DATA the server had already sent for it is dropped. */
  private discard(path: TransferPath | undefined): void {
    if (path && this.isCurrent(path)) this.state = { kind: 'discarding', hex: path.offer.transfer.toString('hex'), transfer: path.offer.transfer };
  }

  // ---- MANIFEST ----

  private manifest(frame: Extract<Frame, { type: 'manifest' }>): Promise<void> {
    if (!this.pieces) throw protocolViolation('MANIFEST on a connection that did not negotiate pieces');
    if (this.inFlight()) throw protocolViolation('MANIFEST while a transfer is in flight');
    if (this.treeParts) throw protocolViolation('MANIFEST after TREE parts');
    const [entry] = frame.manifest.entries;
    if (!entry) throw protocolViolation('MANIFEST without an entry');
    this.announced = {
      transfer: frame.transfer, pieces: { pieceSize: frame.manifest.pieceSize, hashes: entry.pieces },
      size: entry.size, sha256: entry.sha256, path: entry.path,
    };
    return Promise.resolve();
  }

  /**
   * The piece hashes for this OFFER, if its MANIFEST came just before (and the peers, if the server
   * said PEERS too: pull it); a MANIFEST that does not describe it is a violation.
   */
  private piecesFor(offer: Offer): Announced | undefined {
    const announced = this.announced;
    this.announced = undefined;
    if (!announced) return undefined;
    const matches = announced.transfer.equals(offer.transfer) && announced.size === offer.size
      && announced.sha256.equals(offer.sha256) && announced.path === offer.name;
    if (!matches) throw protocolViolation('MANIFEST does not describe the OFFER that follows it');
    return { pieces: announced.pieces, peers: announced.peers };
  }

  // ---- TREE ----

  /** A part of the next OFFER's tree manifest (PROTOCOL.md §7.7): in order, between transfers only. */
  private treePart(frame: Extract<Frame, { type: 'tree' }>): Promise<void> {
    if (!this.pieces) throw protocolViolation('TREE on a connection that did not negotiate pieces');
    if (this.inFlight()) throw protocolViolation('TREE while a transfer is in flight');
    if (this.announced) throw protocolViolation('TREE after a MANIFEST');
    if (!this.treeParts) {
      if (frame.offset !== 0) throw protocolViolation(`first TREE part at offset ${frame.offset}`);
      this.treeParts = new TreeAssembly(frame.transfer, frame.total);
      this.treePeers = undefined;
    }
    this.treeParts.add(frame);
    return Promise.resolve();
  }

  /** The tree this OFFER is for, if TREE parts came before it (then they must describe it). */
  private treeFor(offer: Offer): { manifest: Manifest; bytes: Buffer; peers: PeerEntry[] | undefined } | undefined {
    const parts = this.treeParts;
    const peers = this.treePeers;
    this.treeParts = undefined;
    this.treePeers = undefined;
    const tree = parts?.manifestFor(offer);
    return tree && { ...tree, peers };
  }

  private startTree(offer: Offer, placement: Placement, tree: { manifest: Manifest; bytes: Buffer; peers: PeerEntry[] | undefined }): void {
    const receive: TreeReceive = new TreeReceive({
      receiver: this.receiver,
      log: this.log,
      send: (frame) => this.send(frame),
      heldPieces: this.heldPieces,
      end: this.end,
      freeSpaceShortfall: (needed, signal) => this.partials.freeSpaceShortfall(needed, signal),
      ended: (early) => {
        if (!early && this.isCurrent(receive)) this.state = IDLE;
        else this.discard(receive);
      },
      badPeer: (peer, piece) => this.receiver.emit('badPeer', { ...describe(offer), peer, piece }),
    }, offer, placement, tree.manifest, tree.bytes, tree.peers);
    this.receiving(receive);
    receive.start();
  }

  // ---- OFFER: checks, then the path that receives it ----

  private offer(offer: Offer): Promise<void> {
    if (this.inFlight()) throw protocolViolation('OFFER while another transfer is in flight');
    const tree = this.treeFor(offer);
    const announced = this.piecesFor(offer);
    const hex = offer.transfer.toString('hex');
    // `file`, not `name`: pino already writes the logger's name under `name`.
    const log = this.log.child({ transfer: hex, group: offer.group, file: truncateUtf8(offer.name, 255) });
    log.info({ size: offer.size }, 'offer');
    if (!this.receiver.options.wants(offer.group)) {
      this.end.decline(offer, log, Outcome.NOT_MEMBER, `not a member of ${offer.group}`);
      return Promise.resolve();
    }
    let placement: Placement;
    try {
      placement = placementFor(this.receiver.root, offer.group, offer.name);
    } catch (err) {
      this.end.decline(offer, log, Outcome.BAD_NAME, (err as Error).message);
      return Promise.resolve();
    }
    if (tree) {
      this.startTree(offer, placement, tree);
      return Promise.resolve();
    }
    // Preparing can take long (rehashing a large partial), so it runs beside the frame stream:
    // PINGs keep being answered meanwhile. Only CANCEL and close interact with it, via the abort.
    const abort = new AbortController();
    const done = this.prepare(offer, placement, log, abort.signal, announced)
      .catch((err: unknown) => this.prepareFailed(offer, log, abort.signal, err))
      .catch((err: unknown) => log.error({ err }, 'receiver failed while preparing'));
    this.state = { kind: 'preparing', hex, abort, done };
    return Promise.resolve();
  }

  /** A file's OFFER: already held, a clash, or received on one of three paths (swarm, patch, stream). */
  private async prepare(offer: Offer, placement: Placement, log: Logger, signal: AbortSignal, announced: Announced | undefined): Promise<void> {
    const pieces = announced?.pieces;
    const hex = offer.transfer.toString('hex');
    // A session from a dropped connection may still hold this transfer's partial.
    await this.receiver.whenSettled();
    signal.throwIfAborted();
    if (this.receiver.received.has(hex)) {
      this.end.haveItAll(offer, log, 'already received');
      return;
    }
    const existing = await this.checkExisting(offer, placement, log, signal);
    if (existing === 'handled') return;
    const replacing = existing?.replacing;
    const partialPath = partialPathFor(this.receiver.root, hex);
    if (replacing && pieces) {
      const copied = await seedFromOldVersion(placement.finalPath, partialPath, offer.size, pieces, signal);
      log.info({ pieces: copied, of: pieces.hashes.length / 32 }, 'pieces found in the version being replaced');
    }
    if (pieces && announced.peers && this.receiver.options.peers) {
      await this.prepareSwarm(offer, placement, log, signal, pieces, partialPath, announced.peers, replacing);
      return;
    }
    if (pieces && replacing && this.heldPieces) {
      await this.preparePatch(offer, placement, log, signal, pieces, partialPath, replacing);
      return;
    }
    let stream: StreamReceive | undefined;
    const host = { ...this.fileHost(() => stream), freeSpaceShortfall: (needed: number, s: AbortSignal) => this.partials.freeSpaceShortfall(needed, s) };
    stream = await StreamReceive.open(host, offer, placement, log, signal, {
      partialPath, pieces, replacing, checkpointBytes: this.receiver.options.checkpointBytes,
    });
    if (!stream) return;
    // Complete already (an empty file, or a partial finished before a crash): it finishes in start, still 'preparing'.
    if (!stream.complete) this.receiving(stream);
    await stream.start();
  }

  /**
   * The final path already holds this exact file → "have it"; a file groupcast placed there, unchanged
   * since → replace it (versions.ts); anything else there → NAME_CLASH. 'handled': the offer is answered.
   */
  private async checkExisting(
    offer: Offer, placement: Placement, log: Logger, signal: AbortSignal,
  ): Promise<'handled' | { replacing: Replacing } | undefined> {
    const groupDir = await lstat(placement.groupDir).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (groupDir && !groupDir.isDirectory()) {
      this.end.decline(offer, log, Outcome.NAME_CLASH, `${offer.group} exists and is not a directory`);
      return 'handled';
    }
    const verdict = await judgeExisting(placement.finalPath, offer, this.receiver.received.placedAt(placement.finalPath), signal);
    switch (verdict.kind) {
      case 'absent':
        return undefined;
      case 'present':
        this.end.haveItAll(offer, log, 'already present');
        return 'handled';
      case 'clash':
        this.end.decline(offer, log, Outcome.NAME_CLASH, verdict.reason);
        return 'handled';
      case 'replace':
        log.info({ replaces: verdict.replacing.record.transfer }, 'a newer version of a file groupcast placed');
        return verdict;
    }
  }

  private async prepareFailed(offer: Offer, log: Logger, signal: AbortSignal, err: unknown): Promise<void> {
    this.state = IDLE;
    if (signal.aborted) {
      if (signal.reason === ABORT_CANCEL) await this.end.cancelled(offer, log, undefined);
      return;
    }
    log.error({ err }, 'could not prepare to receive');
    this.end.decline(offer, log, outcomeOfError(err), `cannot receive: ${describeError(err)}`);
  }

  /** Opens the seeded partial as pieces and hands it to a PatchReceive, which says BITFIELD and ACCEPT. */
  private async preparePatch(
    offer: Offer, placement: Placement, log: Logger, signal: AbortSignal, pieces: PieceSpec, partialPath: string, replacing: Replacing,
  ): Promise<void> {
    const partial = await this.openPiecePartial(offer, log, signal, pieces, partialPath);
    if (!partial) return;
    const receive: PatchReceive = new PatchReceive(this.fileHost(() => receive), offer, placement, partial, log, replacing);
    // Every piece held (nothing changed but the order): it finishes in start, still 'preparing', as an empty file does.
    if (!receive.complete) this.receiving(receive);
    await receive.start();
  }

  /** Opens the partial with the pieces it holds and hands it to a SwarmReceive, which says ACCEPT and joins the swarm. */
  private async prepareSwarm(
    offer: Offer, placement: Placement, log: Logger, signal: AbortSignal, pieces: PieceSpec, partialPath: string, peers: PeerEntry[],
    replacing: Replacing | undefined,
  ): Promise<void> {
    const partial = await this.openPiecePartial(offer, log, signal, pieces, partialPath);
    if (!partial) return;
    const receive: SwarmReceive = new SwarmReceive({
      ...this.fileHost(() => receive),
      receiver: this.receiver,
      badPeer: (peer, piece) => this.receiver.emit('badPeer', { ...describe(offer), peer, piece }),
    }, offer, placement, partial, log, replacing);
    this.receiving(receive);
    await receive.start(peers);
  }

  /** The session's side of one file's path: `path` is the StreamReceive, PatchReceive or SwarmReceive it is for. */
  private fileHost(path: () => TransferPath | undefined): FileHost {
    return {
      send: (frame) => this.send(frame),
      end: this.end,
      current: () => this.isCurrent(path()),
      ended: () => this.discard(path()),
    };
  }

  /** The partial as pieces, once the disk can take what it lacks; undefined when declined for space. */
  private async openPiecePartial(
    offer: Offer, log: Logger, signal: AbortSignal, pieces: PieceSpec, partialPath: string,
  ): Promise<PiecePartial | undefined> {
    const allocated = await stat(partialPath).then((s) => Math.min(s.blocks * 512, offer.size), () => 0);
    const shortfall = await this.partials.freeSpaceShortfall(offer.size - allocated, signal);
    if (shortfall) {
      this.end.decline(offer, log, Outcome.NO_SPACE, shortfall);
      return undefined;
    }
    const partial = await PiecePartial.open(partialPath, offer.size, pieces, signal);
    if (signal.aborted) {
      await partial.release();
      signal.throwIfAborted();
    }
    return partial;
  }

  // ---- DATA, PEERS, SEEDED: to the transfer's path ----

  private data(frame: Extract<Frame, { type: 'data' }>): Promise<void> {
    // Ids compared as bytes: this runs once per chunk, and the hex form is only needed for the error.
    const state = this.state;
    if (state.kind === 'discarding' && frame.transfer.equals(state.transfer)) return Promise.resolve();
    if (state.kind !== 'receiving' || !frame.transfer.equals(state.path.offer.transfer)) {
      throw protocolViolation(`DATA for ${frame.transfer.toString('hex')}, which is not being received`);
    }
    return state.path.data(frame);
  }

  private swarmFrame(frame: Extract<Frame, { type: 'peers' | 'seeded' }>): Promise<void> {
    const hex = frame.transfer.toString('hex');
    const state = this.state;
    const path = state.kind === 'receiving' && state.hex === hex ? state.path : undefined;
    const swarm = (path instanceof SwarmReceive || path instanceof TreeReceive ? path.swarm : undefined) ?? this.receiver.lingering.get(hex);
    if (!swarm) {
      // Between MANIFEST (or a tree's TREE parts) and OFFER: the server wants this transfer pulled.
      if (frame.type === 'peers' && this.announced?.transfer.equals(frame.transfer)) this.announced.peers = frame.peers;
      if (frame.type === 'peers' && this.treeParts?.complete && this.treeParts.transfer.equals(frame.transfer)) this.treePeers = frame.peers;
      return Promise.resolve();
    }
    if (frame.type === 'peers') swarm.peers(frame.peers);
    else swarm.seeded();
    return Promise.resolve();
  }

  // ---- CANCEL ----

  private async cancel(hex: string, message: string): Promise<void> {
    const state = this.state;
    if (state.kind === 'idle' || state.hex !== hex) {
      await this.partials.reclaimPartial(hex, message);
      return;
    }
    if (state.kind === 'preparing') {
      state.abort.abort(ABORT_CANCEL);
      await state.done;
      return;
    }
    this.state = IDLE;
    if (state.kind === 'receiving') await state.path.cancel(message);
  }

  /** A PONG from the server: the one answering the partials report's PING means every reclaiming CANCEL is in. */
  pong(time: number): void {
    this.partials.pong(time);
  }

  /** The link is gone: stop, and keep any partial for a resume on the next connection. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    const state = this.state;
    if (state.kind === 'preparing') state.abort.abort(ABORT_CLOSED);
    this.closing = (async () => {
      await this.handling;
      const current = this.state;
      if (current.kind === 'preparing') await current.done;
      const last = this.state;
      this.state = IDLE;
      if (last.kind === 'receiving') await last.path.close();
    })();
    this.receiver.sessionClosing(this, this.closing);
    return this.closing;
  }
}
