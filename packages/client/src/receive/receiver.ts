import { EventEmitter } from 'node:events';
import { chmod, lstat, mkdir, realpath, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  errnoCode, ErrorCode, GroupcastError, isGroupcastError, isReclaimRequest, Outcome, OUTCOME_NAMES, PieceMismatch, truncateUtf8,
  protocolViolation, type Frame, type Logger, type Manifest, type Offer, type PeerEntry, type PeerId,
} from '@groupcast/shared';
import { PARTIAL_DIR, partialPathFor, placeFile, placementFor, reclaimStalePartials, resumeOffset, type Placement } from './download-area.js';
import { CHECKPOINT_BYTES, IncomingFile, partialLength, type PieceSpec } from './incoming-file.js';
import { describeError, outcomeOfError } from './outcomes.js';
import { PartialsReport } from './partials-report.js';
import { PatchReceive } from './patch-receive.js';
import { ReceivedLog } from './received-log.js';
import { SwarmReceive } from './swarm-receive.js';
import { TreeAssembly, TreeReceive } from './tree-receive.js';
import { DEFAULT_KEEP_OLD, judgeExisting, replaceAtomically, versionsFolder, type Replacing } from './versions.js';
import { seedFromOldVersion } from './held-pieces.js';
import type { PeerNode } from '../peer/peer-node.js';
import { PiecePartial } from '../peer/piece-partial.js';
import type { MemberSwarm, SwarmCounters } from '../peer/swarm.js';

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
  | { kind: 'receiving'; hex: string; offer: Offer; placement: Placement; file: IncomingFile; log: Logger; replacing: Replacing | undefined }
  /** A transfer ended early on our side (RESULT sent); DATA the server had already sent is dropped. */
  | { kind: 'discarding'; hex: string; transfer: Buffer }
  /** A directory tree, from its OFFER to its RESULT (tree-receive.ts). */
  | { kind: 'tree'; hex: string; receive: TreeReceive }
  /** Streamed, but only the pieces this member did not already hold (PROTOCOL.md §7.5): a new version (patch-receive.ts). */
  | { kind: 'patching'; hex: string; receive: PatchReceive }
  /** Pulled piece by piece from peers and the server (PROTOCOL.md §7.5, swarm-receive.ts). */
  | { kind: 'swarming'; hex: string; receive: SwarmReceive };

const IDLE: State = { kind: 'idle' };

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
/** Abort reasons: the server cancelled (delete the partial) or the link went away (keep it to resume). */
const CANCEL = 'cancel';
const CLOSED = 'closed';

/** What a transfer received as pieces (patch-receive.ts, swarm-receive.ts) needs of the connection's session. */
export interface PiecedHost {
  send(frame: Frame): void;
  /** Verify, place, record, RESULT (ReceiveSession.finish); the session is idle again. True once placed. */
  finish(finishing: Finishing): Promise<boolean>;
  /** RESULT with a failure, reported. */
  fail(offer: Offer, log: Logger, outcome: Outcome, message: string, err?: unknown): void;
  /** Deletes a partial; a failure to delete is logged. */
  drop(file: HeldFile, log: Logger): Promise<void>;
  /** Whether this transfer is still the one the session has in flight. */
  current(): boolean;
  /** The transfer ended early on this side (RESULT sent): DATA the server had already sent is dropped. */
  ended(): void;
}

/**
 * One data connection's receiving state machine: idle → preparing (checks, resume, ACCEPT) →
 * receiving (DATA, in order) → verify and place → RESULT → idle. One transfer at a time, as the
 * protocol says. Anything from the server that breaks the protocol throws PROTOCOL, which closes the
 * connection; a disk or input problem becomes a DECLINE or RESULT, never an exception.
 */
export class ReceiveSession {
  private state: State = IDLE;
  private closed = false;
  private closing: Promise<void> | undefined;
  private handling: Promise<void> = Promise.resolve();
  private readonly partials: PartialsReport;
  /** The TREE parts received so far of the next OFFER's tree manifest. */
  private treeParts: TreeAssembly | undefined;
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
    const { kind } = this.state;
    return kind === 'preparing' || kind === 'receiving' || kind === 'swarming' || kind === 'patching' || kind === 'tree';
  }

  private send(frame: Frame): void {
    if (!this.closed) this.link.send(frame);
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

  // ---- TREE ----

  /** A part of the next OFFER's tree manifest (PROTOCOL.md §7.7): in order, between transfers only. */
  private treePart(frame: Extract<Frame, { type: 'tree' }>): Promise<void> {
    if (!this.pieces) throw protocolViolation('TREE on a connection that did not negotiate pieces');
    if (this.inFlight()) throw protocolViolation('TREE while a transfer is in flight');
    if (this.announced) throw protocolViolation('TREE after a MANIFEST');
    if (!this.treeParts) {
      if (frame.offset !== 0) throw protocolViolation(`first TREE part at offset ${frame.offset}`);
      this.treeParts = new TreeAssembly(frame.transfer, frame.total);
    }
    this.treeParts.add(frame);
    return Promise.resolve();
  }

  /** The tree this OFFER is for, if TREE parts came before it (then they must describe it). */
  private treeFor(offer: Offer): { manifest: Manifest; bytes: Buffer } | undefined {
    const parts = this.treeParts;
    this.treeParts = undefined;
    return parts?.manifestFor(offer);
  }

  private startTree(offer: Offer, placement: Placement, tree: { manifest: Manifest; bytes: Buffer }): void {
    const hex = offer.transfer.toString('hex');
    const receive: TreeReceive = new TreeReceive({
      receiver: this.receiver,
      log: this.log,
      send: (frame) => this.send(frame),
      heldPieces: this.heldPieces,
      decline: (o, log, outcome, message) => this.decline(o, log, outcome, message),
      haveItAll: (o, log, why) => this.haveItAll(o, log, why),
      fail: (o, log, outcome, message, err) => this.fail(o, log, outcome, message, err),
      freeSpaceShortfall: (needed, signal) => this.partials.freeSpaceShortfall(needed, signal),
      ended: (early) => {
        if (this.state.kind === 'tree' && this.state.receive === receive) this.state = early ? { kind: 'discarding', hex, transfer: offer.transfer } : IDLE;
      },
    }, offer, placement, tree.manifest, tree.bytes);
    this.state = { kind: 'tree', hex, receive };
    receive.start();
  }

  /**
   * The piece hashes for this OFFER, if its MANIFEST came just before (and the peers, if the server
   * said PEERS too: pull it); a MANIFEST that does not describe it is a violation.
   */
  private piecesFor(offer: Offer): { pieces: PieceSpec; peers: PeerEntry[] | undefined } | undefined {
    const announced = this.announced;
    this.announced = undefined;
    if (!announced) return undefined;
    const matches = announced.transfer.equals(offer.transfer) && announced.size === offer.size
      && announced.sha256.equals(offer.sha256) && announced.path === offer.name;
    if (!matches) throw protocolViolation('MANIFEST does not describe the OFFER that follows it');
    return { pieces: announced.pieces, peers: announced.peers };
  }

  // ---- OFFER ----

  private offer(offer: Offer): Promise<void> {
    if (this.inFlight()) throw protocolViolation('OFFER while another transfer is in flight');
    const tree = this.treeFor(offer);
    const announced = this.piecesFor(offer);
    const hex = offer.transfer.toString('hex');
    // `file`, not `name`: pino already writes the logger's name under `name`.
    const log = this.log.child({ transfer: hex, group: offer.group, file: truncateUtf8(offer.name, 255) });
    log.info({ size: offer.size }, 'offer');
    if (!this.receiver.options.wants(offer.group)) {
      this.decline(offer, log, Outcome.NOT_MEMBER, `not a member of ${offer.group}`);
      return Promise.resolve();
    }
    let placement: Placement;
    try {
      placement = placementFor(this.receiver.root, offer.group, offer.name);
    } catch (err) {
      this.decline(offer, log, Outcome.BAD_NAME, (err as Error).message);
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

  private async prepare(
    offer: Offer, placement: Placement, log: Logger, signal: AbortSignal, announced: { pieces: PieceSpec; peers: PeerEntry[] | undefined } | undefined,
  ): Promise<void> {
    const pieces = announced?.pieces;
    const hex = offer.transfer.toString('hex');
    // A session from a dropped connection may still hold this transfer's partial.
    await this.receiver.whenSettled();
    signal.throwIfAborted();
    if (this.receiver.received.has(hex)) {
      this.haveItAll(offer, log, 'already received');
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
    const offset = resumeOffset(await partialLength(partialPath), offer.size);
    if (offset < offer.size) {
      const shortfall = await this.partials.freeSpaceShortfall(offer.size - offset, signal);
      if (shortfall) {
        this.decline(offer, log, Outcome.NO_SPACE, shortfall);
        return;
      }
    }
    const file = await IncomingFile.open(partialPath, offer.size, signal, this.receiver.options.checkpointBytes ?? CHECKPOINT_BYTES, pieces);
    if (signal.aborted) {
      await file.release();
      signal.throwIfAborted();
    }
    const receiving = { kind: 'receiving', hex, offer, placement, file, log, replacing } as const;
    log.info({ offset: file.offset, size: offer.size }, file.offset > 0 ? 'resuming' : 'accepted');
    if (file.complete) {
      // Nothing more to come (empty file, or a partial finished before a crash): verify now.
      this.send({ type: 'accept', transfer: offer.transfer, offset: file.offset });
      await this.finish({ ...receiving, digest: file.digest() });
      return;
    }
    this.state = receiving;
    this.send({ type: 'accept', transfer: offer.transfer, offset: file.offset });
  }

  // ---- PATCH: the stream, less the pieces held ----

  /** Opens the seeded partial as pieces and hands it to a PatchReceive, which says BITFIELD and ACCEPT. */
  private async preparePatch(
    offer: Offer, placement: Placement, log: Logger, signal: AbortSignal, pieces: PieceSpec, partialPath: string, replacing: Replacing,
  ): Promise<void> {
    const partial = await this.openPiecePartial(offer, log, signal, pieces, partialPath);
    if (!partial) return;
    const hex = offer.transfer.toString('hex');
    const receive: PatchReceive = new PatchReceive(this.piecedHost(hex, offer, () => receive), offer, placement, partial, log, replacing);
    // Every piece held (nothing changed but the order): it finishes in start, still 'preparing', as an empty file does.
    if (!receive.complete) this.state = { kind: 'patching', hex, receive };
    await receive.start();
  }

  // ---- SWARM ----

  /** Opens the partial with the pieces it holds and hands it to a SwarmReceive, which says ACCEPT and joins the swarm. */
  private async prepareSwarm(
    offer: Offer, placement: Placement, log: Logger, signal: AbortSignal, pieces: PieceSpec, partialPath: string, peers: PeerEntry[],
    replacing: Replacing | undefined,
  ): Promise<void> {
    const partial = await this.openPiecePartial(offer, log, signal, pieces, partialPath);
    if (!partial) return;
    const hex = offer.transfer.toString('hex');
    const receive: SwarmReceive = new SwarmReceive({
      ...this.piecedHost(hex, offer, () => receive),
      receiver: this.receiver,
      badPeer: (peer, piece) => this.receiver.emit('badPeer', { ...this.describe(offer), peer, piece }),
    }, offer, placement, partial, log, replacing);
    this.state = { kind: 'swarming', hex, receive };
    await receive.start(peers);
  }

  /** The session's side of one pieced transfer: `receive` is the PatchReceive or SwarmReceive it is for. */
  private piecedHost(hex: string, offer: Offer, receive: () => PatchReceive | SwarmReceive): PiecedHost {
    const current = (): boolean => (this.state.kind === 'patching' || this.state.kind === 'swarming') && this.state.receive === receive();
    return {
      send: (frame) => this.send(frame),
      finish: (finishing) => this.finish(finishing),
      fail: (o, log, outcome, message, err) => this.fail(o, log, outcome, message, err),
      drop: (file, log) => this.drop(file, log),
      current,
      ended: () => {
        if (current()) this.state = { kind: 'discarding', hex, transfer: offer.transfer };
      },
    };
  }

  /** The partial as pieces, once the disk can take what it lacks; undefined when declined for space. */
  private async openPiecePartial(
    offer: Offer, log: Logger, signal: AbortSignal, pieces: PieceSpec, partialPath: string,
  ): Promise<PiecePartial | undefined> {
    const allocated = await stat(partialPath).then((s) => Math.min(s.blocks * 512, offer.size), () => 0);
    const shortfall = await this.partials.freeSpaceShortfall(offer.size - allocated, signal);
    if (shortfall) {
      this.decline(offer, log, Outcome.NO_SPACE, shortfall);
      return undefined;
    }
    const partial = await PiecePartial.open(partialPath, offer.size, pieces, signal);
    if (signal.aborted) {
      await partial.release();
      signal.throwIfAborted();
    }
    return partial;
  }

  private swarmFrame(frame: Extract<Frame, { type: 'peers' | 'seeded' }>): Promise<void> {
    const hex = frame.transfer.toString('hex');
    const state = this.state;
    const swarm = state.kind === 'swarming' && state.hex === hex ? state.receive.swarm : this.receiver.lingering.get(hex);
    if (!swarm) {
      // Between MANIFEST and OFFER: the server wants this transfer pulled.
      if (frame.type === 'peers' && this.announced?.transfer.equals(frame.transfer)) this.announced.peers = frame.peers;
      return Promise.resolve();
    }
    if (frame.type === 'peers') swarm.peers(frame.peers);
    else swarm.seeded();
    return Promise.resolve();
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
      this.decline(offer, log, Outcome.NAME_CLASH, `${offer.group} exists and is not a directory`);
      return 'handled';
    }
    const verdict = await judgeExisting(placement.finalPath, offer, this.receiver.received.placedAt(placement.finalPath), signal);
    switch (verdict.kind) {
      case 'absent':
        return undefined;
      case 'present':
        this.haveItAll(offer, log, 'already present');
        return 'handled';
      case 'clash':
        this.decline(offer, log, Outcome.NAME_CLASH, verdict.reason);
        return 'handled';
      case 'replace':
        log.info({ replaces: verdict.replacing.record.transfer }, 'a newer version of a file groupcast placed');
        return verdict;
    }
  }

  private haveItAll(offer: Offer, log: Logger, why: string): void {
    this.state = IDLE;
    this.send({ type: 'accept', transfer: offer.transfer, offset: offer.size });
    this.send({ type: 'result', transfer: offer.transfer, outcome: Outcome.OK, message: why });
    log.info({ bytes: offer.size }, why);
  }

  private async prepareFailed(offer: Offer, log: Logger, signal: AbortSignal, err: unknown): Promise<void> {
    this.state = IDLE;
    if (signal.aborted) {
      if (signal.reason === CANCEL) await this.cancelled(offer, log, undefined);
      return;
    }
    log.error({ err }, 'could not prepare to receive');
    this.decline(offer, log, outcomeOfError(err), `cannot receive: ${describeError(err)}`);
  }

  private decline(offer: Offer, log: Logger, outcome: Outcome, message: string): void {
    this.state = IDLE;
    this.send({ type: 'decline', transfer: offer.transfer, outcome, message });
    log.warn({ outcome: OUTCOME_NAMES[outcome], reason: message }, 'declined');
    this.receiver.emit('declined', { ...this.describe(offer), outcome, message });
  }

  // ---- DATA ----

  private async data(frame: Extract<Frame, { type: 'data' }>): Promise<void> {
    // Ids compared as bytes: this runs once per chunk, and the hex form is only needed for the error.
    const state = this.state;
    if (state.kind === 'discarding' && frame.transfer.equals(state.transfer)) return;
    if (state.kind === 'swarming' && frame.transfer.equals(state.receive.offer.transfer)) {
      await state.receive.serverData(frame.offset, frame.payload);
      return;
    }
    if (state.kind === 'tree' && frame.transfer.equals(state.receive.offer.transfer)) {
      await state.receive.data(frame);
      return;
    }
    if (state.kind === 'patching' && frame.transfer.equals(state.receive.offer.transfer)) return state.receive.patchData(frame);
    if (state.kind !== 'receiving' || !frame.transfer.equals(state.offer.transfer)) {
      throw protocolViolation(`DATA for ${frame.transfer.toString('hex')}, which is not being received`);
    }
    const { file } = state;
    if (frame.offset !== file.offset) throw protocolViolation(`DATA at offset ${frame.offset}, expected ${file.offset}`);
    if (frame.offset + frame.payload.length > file.size) throw protocolViolation(`DATA past the end of a ${file.size}-byte file`);
    try {
      await file.write(frame.payload);
    } catch (err) {
      if (err instanceof PieceMismatch) await this.pieceFailed(state, err);
      else await this.writeFailed(state, err);
      return;
    }
    if (file.complete) await this.finish({ ...state, digest: file.digest() });
  }

  /** A disk error mid-transfer: the partial is deleted so its space comes back, and the server is told why. */
  private async writeFailed(state: Extract<State, { kind: 'receiving' }>, err: unknown): Promise<void> {
    await this.drop(state.file, state.log);
    this.state = { kind: 'discarding', hex: state.hex, transfer: state.offer.transfer };
    this.fail(state.offer, state.log, outcomeOfError(err), `write failed: ${describeError(err)}`, err);
  }

  /** A piece from the server did not match its hash: keep the pieces that did, report, and resume on the retry. */
  private async pieceFailed(state: Extract<State, { kind: 'receiving' }>, err: PieceMismatch): Promise<void> {
    await state.file.keepVerified().catch((cause: unknown) => state.log.warn({ err: cause, path: state.file.path }, 'could not cut a partial back'));
    this.state = { kind: 'discarding', hex: state.hex, transfer: state.offer.transfer };
    this.fail(state.offer, state.log, Outcome.CHECKSUM, err.message);
  }

  /** All bytes are in: verify, fsync, link into place (never over anything), record, RESULT. True once placed. */
  private async finish({ offer, placement, file, log, digest, replacing }: Finishing): Promise<boolean> {
    if (!digest.equals(offer.sha256)) {
      await this.drop(file, log);
      this.state = IDLE;
      this.fail(offer, log, Outcome.CHECKSUM, `sha256 mismatch: expected ${offer.sha256.toString('hex')}, got ${digest.toString('hex')}`);
      return false;
    }
    try {
      await file.seal();
      if (replacing) {
        const folder = versionsFolder(this.receiver.root, offer.group, offer.name);
        await replaceAtomically(file.path, placement, replacing, this.receiver.options.keepOld ?? DEFAULT_KEEP_OLD, folder, log);
      }
      else await placeFile(file.path, placement, log);
    } catch (err) {
      await this.drop(file, log);
      this.state = IDLE;
      const clash = errnoCode(err) === 'EEXIST' || isGroupcastError(err, ErrorCode.NAME);
      if (clash && replacing) this.fail(offer, log, Outcome.NAME_CLASH, `${offer.name} was changed locally while receiving; not replaced`);
      else if (clash) this.fail(offer, log, Outcome.NAME_CLASH, `${offer.name} appeared in ${offer.group} while receiving`);
      else this.fail(offer, log, outcomeOfError(err), `cannot place file: ${describeError(err)}`, err);
      return false;
    }
    this.state = IDLE;
    const sha256 = digest.toString('hex');
    const record = { ...this.describe(offer), sha256, size: offer.size, path: placement.finalPath };
    const replaces = replacing?.record.transfer;
    try {
      await this.receiver.received.append({ ...record, time: new Date().toISOString(), kind: 'file', ...(replaces ? { replaces } : {}) });
    } catch (err) {
      // The file is in place; a missing log line only means a re-offer is answered by "already present".
      log.error({ err, path: this.receiver.received.path }, 'could not record the transfer as received');
    }
    this.send({ type: 'result', transfer: offer.transfer, outcome: Outcome.OK, message: '' });
    log.info({ bytes: offer.size, sha256, path: placement.finalPath, ...(replaces ? { replaces } : {}) }, 'received');
    this.receiver.emit('received', record);
    return true;
  }

  private fail(offer: Offer, log: Logger, outcome: Outcome, message: string, err?: unknown): void {
    this.send({ type: 'result', transfer: offer.transfer, outcome, message });
    log.error({ outcome: OUTCOME_NAMES[outcome], reason: message, ...(err ? { err } : {}) }, 'transfer failed');
    this.receiver.emit('failed', { ...this.describe(offer), outcome, message });
  }

  // ---- CANCEL ----

  private async cancel(hex: string, message: string): Promise<void> {
    const state = this.state;
    if (state.kind === 'idle' || state.hex !== hex) {
      await this.partials.reclaimPartial(hex, message);
      return;
    }
    if (state.kind === 'preparing') {
      state.abort.abort(CANCEL);
      await state.done;
      return;
    }
    this.state = IDLE;
    if (state.kind === 'tree') await state.receive.cancel(message);
    if (state.kind === 'receiving') {
      await this.drop(state.file, state.log);
      await this.cancelled(state.offer, state.log, message);
    }
    if (state.kind === 'swarming') await state.receive.close();
    if (state.kind === 'swarming' || state.kind === 'patching') {
      const { partial, log, offer } = state.receive;
      await this.drop(partial, log);
      await this.cancelled(offer, log, message);
    }
  }

  private async cancelled(offer: Offer, log: Logger, message: string | undefined): Promise<void> {
    const partial = partialPathFor(this.receiver.root, offer.transfer.toString('hex'));
    await rm(partial, { force: true, recursive: true }).catch((err: unknown) => log.warn({ err, path: partial }, 'could not delete a partial'));
    log.info({ reason: message }, 'cancelled by the server');
    this.receiver.emit('failed', { ...this.describe(offer), outcome: Outcome.CANCELLED, message: message ?? 'cancelled' });
  }

  /** A PONG from the server: the one answering the partials report's PING means every reclaiming CANCEL is in. */
  pong(time: number): void {
    this.partials.pong(time);
  }

  /** Deletes a partial; a failure to delete is logged, never allowed to stop the answer to the server. */
  private async drop(file: HeldFile, log: Logger): Promise<void> {
    await file.discard().catch((err: unknown) => log.warn({ err, path: file.path }, 'could not delete a partial'));
  }

  private describe(offer: Offer): TransferEvent {
    return { transfer: offer.transfer.toString('hex'), group: offer.group, name: offer.name };
  }

  /** The link is gone: stop, and keep any partial for a resume on the next connection. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    const state = this.state;
    if (state.kind === 'preparing') state.abort.abort(CLOSED);
    this.closing = (async () => {
      await this.handling;
      const current = this.state;
      if (current.kind === 'preparing') await current.done;
      const last = this.state;
      this.state = IDLE;
      if (last.kind === 'receiving') await last.file.release();
      if (last.kind === 'tree') await last.receive.close();
      if (last.kind === 'swarming') await last.receive.close();
      if (last.kind === 'patching' || last.kind === 'swarming') await last.receive.partial.release();
    })();
    this.receiver.sessionClosing(this, this.closing);
    return this.closing;
  }
}
