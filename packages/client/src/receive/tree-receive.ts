import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  decodeManifest, errnoCode, ErrorCode, GroupcastError, isGroupcastError, Outcome, PieceMismatch, protocolViolation, treeProblems,
  writeFileAtomic, type Frame, type Logger, type Manifest, type Offer, type PeerEntry, type PeerId,
} from '@groupcast/shared';
import { partialPathFor, type Placement } from './download-area.js';
import { CHECKPOINT_BYTES } from './incoming-file.js';
import { outcomeOfError } from './outcomes.js';
import type { Receiver } from './receiver.js';
import { HeldTree } from './held-tree.js';
import { PulledTree } from './pulled-tree.js';
import { ABORT_CANCEL, ABORT_CLOSED, type TransferEnd } from './transfer-end.js';
import { seedTreeFromVersion } from './tree-seed.js';
import { appliedMode, IncomingTree, makeStagingDirs, TREE_ROOT_MODE } from './tree-staging.js';
import { DEFAULT_KEEP_OLD, judgeExistingTree, pruneVersions, switchTree, versionPath, versionsFolder, type TreeVerdict } from './versions.js';
import { MemberSwarm } from '../peer/swarm.js';

/**
 * Receiving a directory tree (PROTOCOL.md §7.7): the TREE parts of its manifest, then its OFFER, then
 * DATA over its files' concatenation, staged in the partial folder and placed in one step. Kept apart
 * from receiver.ts, which hands a tree's frames here and keeps the per-connection state machine.
 */

/** Where a member keeps the manifest of each tree it placed: what "unchanged since" is checked against. */
export const TREE_MANIFESTS_DIR = 'trees';

/** The TREE parts of one manifest, as they arrive; complete once `total` bytes are in. */
export class TreeAssembly {
  private readonly parts: Uint8Array[] = [];
  private received = 0;

  constructor(readonly transfer: Buffer, readonly total: number) {}

  get complete(): boolean {
    return this.received === this.total;
  }

  /** Takes the next part: same transfer and total, at exactly the bytes received so far. */
  add(frame: Extract<Frame, { type: 'tree' }>): void {
    if (!frame.transfer.equals(this.transfer)) throw protocolViolation('TREE for another transfer while a manifest is being received');
    if (this.complete) throw protocolViolation('TREE after its manifest was complete');
    if (frame.total !== this.total || frame.offset !== this.received) {
      throw protocolViolation(`TREE part at ${frame.offset} of ${frame.total}, expected at ${this.received} of ${this.total}`);
    }
    // A copy: the frame's payload is a view into the reader's buffer.
    this.parts.push(Buffer.from(frame.chunk));
    this.received += frame.chunk.length;
  }

  /**
   * The manifest the OFFER that follows describes: its transfer, its size (the files' bytes) and its
   * sha256 (of the manifest's bytes) must match, and the bytes must be a tree manifest.
   */
  manifestFor(offer: Offer): { manifest: Manifest; bytes: Buffer } {
    if (!this.transfer.equals(offer.transfer) || !this.complete) throw protocolViolation('OFFER does not follow a complete TREE manifest of its transfer');
    const bytes = Buffer.concat(this.parts);
    if (!createHash('sha256').update(bytes).digest().equals(offer.sha256)) throw protocolViolation('OFFER sha256 is not that of the TREE manifest');
    let manifest: Manifest;
    try {
      manifest = decodeManifest(bytes);
    } catch (err) {
      throw protocolViolation(`TREE manifest does not decode: ${(err as Error).message}`);
    }
    if (!manifest.tree) throw protocolViolation('TREE carries a manifest that is not a tree (version 2)');
    const size = manifest.entries.reduce((sum, entry) => sum + entry.size, 0);
    if (size !== offer.size) throw protocolViolation(`OFFER size ${offer.size} is not the tree's ${size} bytes`);
    return { manifest, bytes };
  }
}

/** What a tree's reception needs of the connection's session. */
export interface TreeHost {
  receiver: Receiver;
  log: Logger;
  send(frame: Frame): void;
  /** The server said HELD_PIECES: a BITFIELD before ACCEPT spares what this member holds (§7.5, §7.7). */
  heldPieces: boolean;
  /** How the transfer ends: declined, failed, cancelled, already held (transfer-end.ts); placing a tree is this file's own. */
  end: TransferEnd;
  freeSpaceShortfall(needed: number, signal: AbortSignal): Promise<string | undefined>;
  /** The tree's transfer is over on our side: `early` when the server may still send DATA for it. */
  ended(early: boolean): void;
  /** A peer sent a piece whose hash is wrong (a pulled tree). */
  badPeer(peer: PeerId, piece: number): void;
}

/** What a tree is received into: the stream's staging (in order, or less its held pieces), or a pulled one's. */
type StagedTree = IncomingTree | HeldTree | PulledTree;

/** The path of a placed tree's manifest in the state directory. */
function manifestPath(stateDir: string, transferHex: string): string {
  return join(stateDir, TREE_MANIFESTS_DIR, `${transferHex}.manifest`);
}

/** The manifest of a tree this member placed, if it still has it. */
export async function placedManifest(stateDir: string, transferHex: string): Promise<Manifest | undefined> {
  try {
    return decodeManifest(await readFile(manifestPath(stateDir, transferHex)));
  } catch {
    return undefined;
  }
}

/** One tree's reception, from its OFFER to its RESULT. */
export class TreeReceive {
  readonly hex: string;
  private readonly log: Logger;
  private readonly abort = new AbortController();
  private preparing: Promise<void> = Promise.resolve();
  private tree: StagedTree | undefined;
  private verdict: TreeVerdict = { kind: 'absent' };
  private finished = false;
  /** Pulling from peers and the server (PEERS came before the OFFER): its part in the swarm. */
  swarm: MemberSwarm | undefined;
  /** Every piece is held: placing is under way, and a late failure from the swarm changes nothing. */
  private finishing = false;

  constructor(
    private readonly host: TreeHost,
    readonly offer: Offer,
    private readonly placement: Placement,
    private readonly manifest: Manifest,
    private readonly bytes: Buffer,
    /** The peers to pull it with, if the server said PEERS; else it is streamed. */
    private readonly peers: PeerEntry[] | undefined,
  ) {
    this.hex = offer.transfer.toString('hex');
    this.log = host.log.child({ transfer: this.hex, group: offer.group, file: offer.name, tree: true });
  }

  private get files(): number {
    return this.manifest.entries.filter((entry) => entry.kind === 'file').length;
  }

  /** Prepares beside the frame stream (rehashing a staged tree takes a while), as a file's OFFER does. */
  start(): void {
    this.log.info({ size: this.offer.size, files: this.files, entries: this.manifest.entries.length }, 'offer of a tree');
    this.preparing = this.prepare(this.abort.signal)
      .catch((err: unknown) => this.prepareFailed(err))
      .catch((err: unknown) => this.log.error({ err }, 'receiver failed while preparing a tree'));
  }

  private async prepare(signal: AbortSignal): Promise<void> {
    const { receiver } = this.host;
    const { offer } = this;
    await receiver.whenSettled();
    signal.throwIfAborted();
    const problems = treeProblems(this.manifest.entries);
    if (problems.length > 0) return this.decline(Outcome.BAD_NAME, `unsafe tree: ${problems.join('; ')}`);
    if (receiver.received.has(this.hex)) {
      this.host.end.haveItAll(offer, this.log, 'already received');
      this.finished = true;
      return;
    }
    this.verdict = await this.judge(signal);
    if (this.verdict.kind === 'clash') return this.decline(Outcome.NAME_CLASH, this.verdict.reason);
    if (this.verdict.kind === 'present') {
      // Placed before a crash kept it from being recorded: record it now, and nothing need move.
      this.finished = true;
      await this.record(undefined);
      this.host.end.haveItAll(offer, this.log, 'already present');
      return;
    }
    const dir = partialPathFor(receiver.root, this.hex);
    const replaces = this.verdict.kind === 'replace' ? this.verdict.record.transfer : undefined;
    const pull = this.peers !== undefined && receiver.options.peers !== undefined;
    const tree = pull
      ? await this.openPulled(dir, replaces, signal)
      : replaces !== undefined && this.host.heldPieces
        ? await this.openSeeded(dir, replaces, signal)
        : await IncomingTree.open(dir, this.manifest, signal, receiver.options.checkpointBytes ?? CHECKPOINT_BYTES);
    if (signal.aborted) {
      await tree.release();
      signal.throwIfAborted();
    }
    const needed = tree instanceof PulledTree ? tree.size - tree.heldBytes : tree instanceof HeldTree ? tree.missingBytes : tree.size - tree.offset;
    const shortfall = await this.host.freeSpaceShortfall(needed, signal).catch(async (err: unknown) => {
      await tree.release();
      throw err;
    });
    if (shortfall) {
      await tree.release();
      return this.decline(Outcome.NO_SPACE, shortfall);
    }
    this.tree = tree;
    if (tree instanceof PulledTree) return this.startPull(tree);
    this.log.info({ offset: tree.offset, size: tree.size, filesHeld: tree.filesDone, files: tree.fileCount }, tree.offset > 0 ? 'resuming a tree' : 'accepted a tree');
    if (tree instanceof HeldTree) this.host.send({ type: 'bitfield', transfer: offer.transfer, bits: tree.held.toWire() });
    this.host.send({ type: 'accept', transfer: offer.transfer, offset: tree.offset });
    if (tree.complete) await this.finish(tree);
  }

  /**
   * A new version of a tree placed here: its staging area seeded from the version in place (tree-seed.ts),
   * then opened as pieces (held-tree.ts), so the BITFIELD says what need not travel.
   */
  private async openSeeded(dir: string, placedHex: string, signal: AbortSignal): Promise<HeldTree> {
    await this.seed(dir, placedHex, signal);
    const tree = await HeldTree.open(dir, this.manifest, signal);
    this.log.info({ held: tree.held.count, pieces: tree.held.length, missingBytes: tree.missingBytes }, 'pieces held of a new tree version');
    return tree;
  }

  /** Fills the staging area from the version in place, if this member still has its manifest. */
  private async seed(dir: string, placedHex: string, signal: AbortSignal): Promise<void> {
    const { receiver } = this.host;
    const old = await placedManifest(receiver.options.stateDir, placedHex);
    if (!old) return;
    const oldDir = versionPath(receiver.root, this.offer.group, this.offer.name, placedHex);
    await makeStagingDirs(dir, this.manifest);
    const seeded = await seedTreeFromVersion(dir, this.manifest, oldDir, old, signal);
    this.log.info({ ...seeded, replaces: placedHex }, 'seeded a tree from the version being replaced');
  }

  /** A pulled tree's staging area: seeded from the version it replaces, then scanned for the pieces held (a resume's too). */
  private async openPulled(dir: string, placedHex: string | undefined, signal: AbortSignal): Promise<PulledTree> {
    if (placedHex !== undefined) await this.seed(dir, placedHex, signal);
    return PulledTree.open(dir, this.manifest, signal);
  }

  /**
   * Pulls the tree (§7.6, §7.7): ACCEPT with the bytes held in verified pieces, then the swarm, whose
   * BITFIELD says which; every piece held already, it is placed at once.
   */
  private async startPull(tree: PulledTree): Promise<void> {
    const { receiver } = this.host;
    const { offer, log } = this;
    log.info({ held: tree.held.count, pieces: tree.held.length, filesHeld: tree.filesDone, files: tree.fileCount }, tree.held.count > 0 ? 'resuming a tree from held pieces' : 'accepted a tree; pulling pieces');
    this.host.send({ type: 'accept', transfer: offer.transfer, offset: tree.heldBytes });
    if (tree.complete) {
      await this.finish(tree);
      return;
    }
    const swarm = new MemberSwarm({
      log, node: receiver.options.peers!, transfer: offer.transfer, partial: tree, counters: receiver.swarmCounters,
      toServer: (frame) => this.host.send(frame),
      complete: () => void this.finish(tree).catch((err: unknown) => log.error({ err }, 'could not finish a pulled tree')),
      failed: (outcome, message, err) => void this.swarmFailed(tree, outcome, message, err),
      badPeer: (peer, piece) => this.host.badPeer(peer, piece),
    });
    this.swarm = swarm;
    swarm.start();
    swarm.peers(this.peers ?? []);
  }

  private async swarmFailed(tree: PulledTree, outcome: Outcome, message: string, err: unknown): Promise<void> {
    if (this.finished || this.finishing) return;
    this.end(true);
    await this.swarm?.close();
    // A bad piece is never written, and a file that failed its SHA-256 is deleted: what is held stays for the retry.
    if (outcome === Outcome.CHECKSUM) await tree.keepVerified();
    else await tree.discard().catch((cause: unknown) => this.log.warn({ err: cause, path: tree.dir }, 'could not delete a staged tree'));
    this.host.end.fail(this.offer, this.log, outcome, message, err);
  }

  /** What is at the final path now; a tree found unchanged before is hashed again only where its files' stamps changed. */
  private judge(signal: AbortSignal): Promise<TreeVerdict> {
    const { receiver } = this.host;
    const placement = this.placement;
    const offered = { group: this.offer.group, name: this.offer.name, transfer: this.hex, manifest: this.manifest };
    const known = this.verdict.kind === 'replace' ? this.verdict.stamps : undefined;
    return judgeExistingTree(
      placement, offered, receiver.received.placedAt(placement.finalPath), (hex) => placedManifest(receiver.options.stateDir, hex), signal, known,
    );
  }

  private async prepareFailed(err: unknown): Promise<void> {
    if (this.abort.signal.aborted) {
      if (this.abort.signal.reason === ABORT_CANCEL) await this.cancelled(undefined);
      return;
    }
    if (isGroupcastError(err, ErrorCode.CHECKSUM)) return this.decline(Outcome.CHECKSUM, (err as Error).message);
    if (isGroupcastError(err, ErrorCode.NAME)) return this.decline(Outcome.BAD_NAME, (err as Error).message);
    this.log.error({ err }, 'could not prepare to receive a tree');
    this.decline(outcomeOfError(err), `cannot receive: ${(err as Error).message}`);
  }

  private decline(outcome: Outcome, message: string): void {
    this.finished = true;
    this.host.end.decline(this.offer, this.log, outcome, message);
  }

  private end(early: boolean): void {
    this.finished = true;
    this.host.ended(early);
  }

  /** DATA for this tree, in order over the concatenation of its files. */
  async data(frame: Extract<Frame, { type: 'data' }>): Promise<void> {
    if (this.finished) return;
    const tree = this.tree;
    if (!tree) throw protocolViolation('DATA for a tree before its ACCEPT');
    // Pulled: the pieces the swarm asked the server for (before every piece was held, it finishes by itself).
    if (tree instanceof PulledTree) return this.finishing ? undefined : this.swarm?.serverData(frame.offset, frame.payload);
    if (tree instanceof HeldTree) return this.heldData(tree, frame);
    if (frame.offset !== tree.offset) throw protocolViolation(`DATA at offset ${frame.offset}, expected ${tree.offset}`);
    if (frame.offset + frame.payload.length > tree.size) throw protocolViolation(`DATA past the end of a ${tree.size}-byte tree`);
    try {
      await tree.write(frame.payload);
    } catch (err) {
      await this.writeFailed(tree, err);
      return;
    }
    if (tree.complete) await this.finish(tree);
  }

  /** DATA of a seeded tree: only its missing pieces, at the offsets missingRanges gives (held-tree.ts checks them). */
  private async heldData(tree: HeldTree, frame: Extract<Frame, { type: 'data' }>): Promise<void> {
    try {
      await tree.write(frame.offset, frame.payload);
    } catch (err) {
      if (isGroupcastError(err, ErrorCode.PROTOCOL)) throw err;
      await this.writeFailed(tree, err);
      return;
    }
    if (tree.complete) await this.finish(tree);
  }

  private async writeFailed(tree: IncomingTree | HeldTree, err: unknown): Promise<void> {
    this.end(true);
    if (err instanceof PieceMismatch || isGroupcastError(err, ErrorCode.CHECKSUM)) {
      // The good pieces and whole files stay for the retry, which resumes after them.
      await tree.keepVerified().catch((cause: unknown) => this.log.warn({ err: cause }, 'could not cut a staged file back'));
      this.host.end.fail(this.offer, this.log, Outcome.CHECKSUM, (err as Error).message);
      return;
    }
    await tree.discard().catch((cause: unknown) => this.log.warn({ err: cause, path: tree.dir }, 'could not delete a staged tree'));
    this.host.end.fail(this.offer, this.log, outcomeOfError(err), `write failed: ${(err as Error).message}`, err);
  }

  /**
   * Every file is in and verified: modes, one sync of the staging area, move it into the versions
   * folder, switch the link (checking again that what it replaces is unchanged), record, RESULT.
   */
  private async finish(tree: StagedTree): Promise<void> {
    if (this.finishing || this.finished) return;
    this.finishing = true;
    // A pulled tree's server may still send a piece asked of it by index that a peer brought first: dropped.
    const early = tree instanceof PulledTree;
    const { receiver } = this.host;
    const { offer } = this;
    const placement = this.placement;
    const log = this.log;
    const version = versionPath(receiver.root, offer.group, offer.name, this.hex);
    try {
      await tree.seal();
      await this.prepareVersionsFolder();
      await rm(version, { recursive: true, force: true });
      await rename(tree.dir, version);
      await writeFileAtomic(manifestPath(receiver.options.stateDir, this.hex), this.bytes).catch(async (err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
        await mkdir(join(receiver.options.stateDir, TREE_MANIFESTS_DIR), { recursive: true, mode: 0o700 });
        await writeFileAtomic(manifestPath(receiver.options.stateDir, this.hex), this.bytes);
      });
      await mkdir(placement.groupDir, { recursive: true, mode: 0o755 });
      // Checked again just before the switch: a local edit while the tree arrived wins.
      const now = await this.judge(new AbortController().signal);
      if (now.kind === 'clash') throw new GroupcastError(ErrorCode.NAME, now.reason);
      if (now.kind !== this.verdict.kind) throw new GroupcastError(ErrorCode.NAME, `${offer.name} appeared in ${offer.group} while receiving`);
      await switchTree(placement, offer.group, offer.name, this.hex, now.kind === 'replace', log);
    } catch (err) {
      this.end(early);
      await this.swarm?.close();
      await rm(version, { recursive: true, force: true }).catch(() => undefined);
      await tree.discard().catch(() => undefined);
      const clash = errnoCode(err) === 'EEXIST' || isGroupcastError(err, ErrorCode.NAME);
      if (clash) this.host.end.fail(offer, log, Outcome.NAME_CLASH, (err as Error).message);
      else this.host.end.fail(offer, log, outcomeOfError(err), `cannot place the tree: ${(err as Error).message}`, err);
      return;
    }
    this.end(early);
    if (tree instanceof PulledTree) await this.linger(tree, version);
    const replaces = this.verdict.kind === 'replace' ? this.verdict.record.transfer : undefined;
    const folder = versionsFolder(receiver.root, offer.group, offer.name);
    const removed = await pruneVersions(folder, receiver.options.keepOld ?? DEFAULT_KEEP_OLD, log, this.hex);
    for (const hex of removed) await rm(manifestPath(receiver.options.stateDir, hex), { force: true }).catch(() => undefined);
    const record = await this.record(replaces);
    this.host.send({ type: 'result', transfer: offer.transfer, outcome: Outcome.OK, message: '' });
    log.info({ bytes: offer.size, files: this.files, path: placement.finalPath, ...(replaces ? { replaces } : {}) }, replaces ? 'received a tree; replaced the earlier version' : 'received a tree');
    receiver.emit('received', { ...record, files: this.files });
  }

  /**
   * Placed: the swarm still serves its peers for a while, from the placed version (the staged paths
   * moved there, and a placed version is never written again); the server lists it as long.
   */
  private async linger(tree: PulledTree, version: string): Promise<void> {
    await tree.servePlaced(version);
    const swarm = this.swarm;
    if (!swarm) return;
    const { lingering } = this.host.receiver;
    lingering.set(this.hex, swarm);
    swarm.linger(async () => {
      if (lingering.get(this.hex) === swarm) lingering.delete(this.hex);
      await tree.release();
    });
  }

  /** Records the tree in the received log: what "already received" and the next version's check read. */
  private async record(replaces: string | undefined): Promise<{ transfer: string; group: string; name: string; sha256: string; size: number; path: string }> {
    const { receiver } = this.host;
    const { offer } = this;
    const record = {
      transfer: this.hex, group: offer.group, name: offer.name, sha256: offer.sha256.toString('hex'), size: offer.size, path: this.placement.finalPath,
    };
    try {
      await receiver.received.append({ ...record, time: new Date().toISOString(), kind: 'tree', files: this.files, ...(replaces ? { replaces } : {}) });
    } catch (err) {
      this.log.error({ err, path: receiver.received.path }, 'could not record the tree as received');
    }
    return record;
  }

  /** `<root>/.groupcast-versions/<group>/<name>`, readable by everyone who may read the group: readers follow the link into it. */
  private async prepareVersionsFolder(): Promise<void> {
    const { receiver } = this.host;
    const folder = versionsFolder(receiver.root, this.offer.group, this.offer.name);
    await mkdir(folder, { recursive: true, mode: TREE_ROOT_MODE });
    for (const dir of [join(folder, '..', '..'), join(folder, '..'), folder]) await chmod(dir, appliedMode(TREE_ROOT_MODE));
  }

  /** Cancelled by the server: the staging area goes (it is the transfer's partial), and the listeners hear it. */
  private async cancelled(message: string | undefined): Promise<void> {
    this.finished = true;
    await this.host.end.cancelled(this.offer, this.log, message);
  }

  /** The server cancelled this tree: stop, delete what is staged. */
  async cancel(message: string): Promise<void> {
    this.abort.abort(ABORT_CANCEL);
    await this.preparing;
    if (this.finished) return;
    await this.swarm?.close();
    await this.tree?.release();
    await this.cancelled(message);
  }

  /** The link is gone: stop, keep what is staged for a resume. */
  async close(): Promise<void> {
    this.abort.abort(ABORT_CLOSED);
    await this.preparing;
    // Placing already: it ends by itself (and lingers, serving peers, if placed).
    if (this.finishing) return;
    this.finished = true;
    await this.swarm?.close();
    await this.tree?.release();
  }
}
