import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { lstat } from 'node:fs/promises';
import { basename } from 'node:path';
import PQueue from 'p-queue';
import {
  backoffDelay, disconnectFields, ErrorCode, GroupcastError, manifestPieces, msFromEnvironment, Outcome, OUTCOME_NAMES, TokenBucket, TRANSFER_ID_LENGTH, validateFileName,
  type Logger, type Manifest, type PeerId,
} from '@groupcast/shared';
import type { Membership } from '../control/membership.js';
import { isMemberFault, type MemberSession } from './member-session.js';
import { isTerminal, type DeliveryRecord, type Outbox, type TransferRecord } from './outbox.js';
import type { ContentStore, RemovedFile, StoredFile } from './store.js';
import { TreeManifests, walkTree, type StoredTree, type WalkedTree } from './tree-store.js';
import { manifestOf } from './piece-file.js';
import { Tracker, type Seat } from './tracker.js';
import { DEFAULT_BACKLOG, type BacklogPolicy } from './backlog-policy.js';

/** Outcomes a retry cannot fix. */
const PERMANENT = new Set<Outcome>([
  Outcome.BAD_NAME, Outcome.NAME_CLASH, Outcome.NOT_MEMBER, Outcome.CANCELLED, Outcome.PERMISSION_DENIED,
]);
/** "Disk full twice" is permanent: the member's operator has to act. */
const NO_SPACE_ATTEMPTS = 2;
/** Files of one distribution stored at once (see distribute). */
const INGEST_CONCURRENCY = 8;
const MAX_ATTEMPTS = 5;
/**
 * A failed attempt is retried after a jittered backoff from this base (attempt n: base … base·2^n).
 * GC_RETRY_BASE_MS overrides it, for tests that wait out a member's attempts.
 */
const RETRY_BASE_MS = msFromEnvironment(process.env.GC_RETRY_BASE_MS, 1_000);
const RETRY_CAP_MS = 5 * 60_000;
/** Retention is checked every quarter of the keep time, within these bounds, so expiry is never late by much. */
const SWEEP_MIN_MS = 250;
const SWEEP_MAX_MS = 60_000;
/**
 * Pulled deliveries in flight at once, beside the `concurrency` streamed ones. A pulling member costs
 * the server a seat in the tracker, one open store file and the pieces it asks for, which the tracker
 * seeds about once for the whole swarm — not a file's worth of upload each, as a stream does. So they
 * do not take the stream slots: a group of up to this many members pulls in one wave, and all of them
 * can serve each other; past it, later members wait for a slot as streams do.
 */
export const MAX_PULLS = 256;
/**
 * A tree is pulled only when its pieces average at least this many bytes; one of many small files is
 * streamed. Each piece costs a REQUEST, its DATA, a HAVE to every link and two opens on each member
 * that passes it on, whatever its size: the 10,000-file build tree (100 MiB, pieces of 10 KiB on
 * average) pulled by 4 members on one box took 10.5 s and 17 CPU s in the members against 2.6–2.9 s
 * and 3.1–3.4 s streamed (`npm run bench -- --only trees`). Pieces of 64 KiB and more bring that cost
 * near the file swarm's. Trees of small files are pulled well once pieces can span files.
 */
export const MIN_PULLED_TREE_PIECE = 64 * 1024;
/** Finished transfers past retention kept for status; older ones are forgotten, bounding memory and the journal. */
export const HISTORY_LIMIT = 256;
export const EXPIRED_REASON = 'expired (retention)';
export const CANCELLED_REASON = 'cancelled by the operator';
export const RETRIED_REASON = 'retried by the operator';
export const NO_TREES_REASON = "member's groupcast cannot receive directories; upgrade it";

/**
 * The transfers a member joining now would be given under the policy, in the order they were
 * distributed. Retention keeps exactly these files besides the ones still being delivered: one rule
 * for both, so what the policy promises is still in the store.
 */
export function backlogOf(transfers: readonly TransferRecord[], policy: BacklogPolicy, now: number): TransferRecord[] {
  // A distribution to named members (--to) is theirs alone: no member joining later is given it.
  const live = transfers.filter((t) => t.expiresAt > now && t.to === undefined);
  if (policy !== 'latest') return policy === 'all' ? live : [];
  const newest = new Map<string, TransferRecord>();
  const nameOf = (t: TransferRecord): string => `${t.group}/${t.name}`;
  for (const t of live) {
    const seen = newest.get(nameOf(t));
    if (!seen || t.createdAt >= seen.createdAt) newest.set(nameOf(t), t);
  }
  return live.filter((t) => newest.get(nameOf(t)) === t);
}

export function sweepInterval(keepMs: number): number {
  return Math.min(SWEEP_MAX_MS, Math.max(SWEEP_MIN_MS, Math.floor(keepMs / 4)));
}

/** Where a delivery's bytes came from so far, over all its attempts. */
export interface DeliverySources {
  fromServer: number;
  fromPeers: number;
}

export interface DistributorEvents {
  /** A delivery changed state. */
  delivery: [delivery: DeliveryRecord];
  /** `position`: what the member holds (streamed: the offset reached; pulled: its pieces, from anyone). */
  progress: [transfer: string, member: PeerId, position: number, sources: DeliverySources];
}

export interface DistributorOptions {
  log: Logger;
  outbox: Outbox;
  store: ContentStore;
  membership: Membership;
  session: (member: PeerId) => MemberSession | undefined;
  concurrency: number;
  keepMs: number;
  /** `--rate`: the server's total upload, over every member and distribution. */
  rate?: TokenBucket | undefined;
  /** What a member joining later is given, and so what the store keeps; DEFAULT_BACKLOG when unset. */
  backlog?: BacklogPolicy;
  clock?: () => number;
}

const key = (transfer: string, member: PeerId): string => `${transfer}/${member}`;

/** A failed attempt's reason, as status shows it: the outcome's name and the member's message. */
function describeOutcome(outcome: Outcome, message: string): string {
  const name = OUTCOME_NAMES[outcome];
  if (!message) return name;
  // The member's message often starts with the outcome's own words ("insufficient space: need …").
  return message.startsWith(name) ? message : `${name}: ${message}`;
}

/**
 * Turns distributions into deliveries and runs them: each member's deliveries in order over its own
 * connection, at most `concurrency` streamed transfers at once across all members (one p-queue) and
 * MAX_PULLS pulled ones (another), failures retried with backoff and jitter, offline members left
 * pending until they reconnect.
 */
export class Distributor extends EventEmitter<DistributorEvents> {
  private readonly streams: PQueue;
  private readonly pulls: PQueue;
  /** Who holds which piece of each transfer being pulled: the server seeds from it and lists peers. */
  private readonly tracker: Tracker;
  /** Stored tree manifests, read for their deliveries and for what retention must keep. */
  private readonly trees: TreeManifests;
  private readonly active = new Set<PeerId>();
  private readonly inflight = new Map<string, { controller: AbortController; member: PeerId }>();
  private readonly retryTimers = new Map<PeerId, NodeJS.Timeout>();
  /** Buckets of distributions with a rate of their own, shared by their deliveries in flight. */
  private readonly transferRates = new Map<string, { bucket: TokenBucket; users: number }>();
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<RemovedFile[]> | undefined;
  /** A pass was asked for while one ran: run another when it ends, so no completion is missed. */
  private sweepAgain = false;
  /**
   * Operations about to reference store files the outbox does not reference yet (a distribution
   * between ingest and record, a backlog or a retry being queued): retention does not prune meanwhile.
   */
  private recording = 0;
  /** A pass skipped pruning because of `recording`: prune once the last of those ends. */
  private pruneSkipped = false;
  private closed = false;

  constructor(private readonly options: DistributorOptions) {
    super();
    this.streams = new PQueue({ concurrency: options.concurrency });
    this.pulls = new PQueue({ concurrency: Math.max(options.concurrency, MAX_PULLS) });
    this.tracker = new Tracker(options.log.child({ component: 'tracker' }));
    this.trees = new TreeManifests(options.store);
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  /** Applies retention once (so the store is tidy before the first distribution), then on a timer. */
  async start(): Promise<void> {
    await this.sweep();
    this.sweeper = setInterval(() => void this.sweep(), sweepInterval(this.options.keepMs));
    this.sweeper.unref();
  }

  /** Members in a transfer's swarm now, and the bytes members took from peers since start (metrics). */
  get swarm(): { members: number; peerBytes: number } {
    return { members: this.tracker.members, peerBytes: this.tracker.peerBytes };
  }

  /**
   * Stores each file, records a delivery per current member, and starts sending to those online.
   * `rate` caps what these files' deliveries take together, under the server's own --rate; `to`
   * sends to those members of the group only (the others, and members joining later, get nothing);
   * `onStoring` hears how far the store's copy of each file is.
   */
  async distribute(
    group: string, paths: string[],
    options: { rate?: number | undefined; to?: readonly PeerId[] | undefined; onStoring?: (path: string, position: number, size: number) => void } = {},
  ): Promise<{ transfers: TransferRecord[]; members: PeerId[] }> {
    const { membership, store, outbox, log } = this.options;
    const started = performance.now();
    if (!membership.hasGroup(group)) throw new GroupcastError(ErrorCode.UNKNOWN_GROUP, `no group named "${group}"`);
    const names = paths.map((path) => validateFileName(basename(path)));
    const to = options.to && new Set(options.to);
    const members = membership.targets(group).filter((id) => !to || to.has(id));
    // Every directory is walked (and refused, with what is wrong in it) before anything is stored.
    const trees = new Map<string, WalkedTree>();
    for (const path of paths) {
      if ((await lstat(path).catch(() => undefined))?.isDirectory()) trees.set(path, await walkTree(path));
    }
    const transfers: TransferRecord[] = [];
    this.recording++;
    try {
      // A retention pass already pruning the store must not see this file before the outbox does.
      await this.sweeping;
      // Files are stored a few at a time: each ingest and each outbox record ends in an fsync, and
      // overlapping them lets the file system commit them together instead of one flush per file.
      for (let first = 0; first < paths.length; first += INGEST_CONCURRENCY) {
        const batch = paths.slice(first, first + INGEST_CONCURRENCY);
        const stored = await Promise.all(batch.map((path): Promise<StoredFile | StoredTree> => {
          const progress = (position: number, size: number): void => options.onStoring?.(path, position, size);
          const tree = trees.get(path);
          return tree ? this.trees.ingest(tree, progress) : store.ingest(path, { progress });
        }));
        const now = this.now();
        const recorded = stored.map((file, i): TransferRecord => ({
          id: randomBytes(TRANSFER_ID_LENGTH).toString('hex'),
          group,
          name: names[first + i] ?? basename(batch[i] ?? ''),
          size: file.size,
          sha256: file.sha256,
          createdAt: now,
          expiresAt: now + this.options.keepMs,
          ...(options.rate === undefined ? {} : { rate: options.rate }),
          ...(to ? { to: members } : {}),
          ...('files' in file ? { kind: 'tree' as const, files: file.files } : {}),
        }));
        await Promise.all(recorded.map((transfer) => outbox.create(transfer, members)));
        for (const transfer of recorded) {
          transfers.push(transfer);
          log.info({
            transfer: transfer.id, group, file: transfer.name, bytes: transfer.size, members: members.length, ...(transfer.kind ? { files: transfer.files } : {}),
            // Walking, storing and recording, from the operator's request: what the first delivery waited for.
            storedMs: Math.round(performance.now() - started),
          }, 'distribution recorded');
        }
        // Sending starts with the first files recorded: storing the next ones overlaps delivering these.
        for (const member of members) this.wake(member);
      }
    } finally {
      this.endRecording();
    }
    return { transfers, members };
  }

  private endRecording(): void {
    if (--this.recording > 0 || !this.pruneSkipped) return;
    this.pruneSkipped = false;
    void this.sweep();
  }

  private get backlog(): BacklogPolicy {
    return this.options.backlog ?? DEFAULT_BACKLOG;
  }

  /** A member joined a group: give it the group's backlog, as the policy says (backlogOf). */
  async memberJoined(member: PeerId, group: string): Promise<void> {
    const { outbox, store, log } = this.options;
    this.recording++;
    try {
      await this.sweeping;
      const offered = backlogOf(outbox.listTransfers().filter((t) => t.group === group), this.backlog, this.now());
      // A file a narrower policy before a restart let retention remove cannot be offered.
      const held = await Promise.all(offered.map((t) => store.has(t.sha256)));
      const added = await outbox.backfill(member, offered.filter((_, i) => held[i]));
      if (added.length > 0) log.info({ member, group, deliveries: added.length, backlog: this.backlog }, 'backlog queued for new member');
    } finally {
      this.endRecording();
    }
    this.wake(member);
  }

  /**
   * The operator cancels deliveries: one in flight is stopped (the member is sent CANCEL and deletes
   * its partial) and fails as it ends; a pending one fails now. Returns those it ended or is ending.
   */
  cancel(deliveries: readonly DeliveryRecord[]): DeliveryRecord[] {
    const ended: DeliveryRecord[] = [];
    for (const delivery of deliveries) {
      if (delivery.state === 'sending') this.inflight.get(key(delivery.transfer, delivery.member))?.controller.abort(CANCELLED_REASON);
      else if (delivery.state === 'pending') this.settle(delivery, 'failed', CANCELLED_REASON);
      else continue;
      ended.push(delivery);
    }
    if (ended.length > 0) this.options.log.info({ transfer: ended[0]?.transfer, members: ended.map((d) => d.member) }, 'cancelling deliveries');
    return ended;
  }

  /**
   * Puts failed (or cancelled) deliveries of a transfer back in line as new ones: attempts reset, due
   * now. Refused (NOT_FOUND) once the transfer expired or the store no longer holds its file. A member
   * no longer authorized for the group is left as it is. Returns the deliveries queued again.
   */
  async retry(transfer: TransferRecord, deliveries: readonly DeliveryRecord[]): Promise<DeliveryRecord[]> {
    const { store, membership, log } = this.options;
    this.recording++;
    try {
      await this.sweeping;
      const what = `${transfer.name} (transfer ${transfer.id.slice(0, 12)})`;
      if (transfer.expiresAt <= this.now()) {
        throw new GroupcastError(ErrorCode.NOT_FOUND, `${what} has expired (--keep): distribute the file again`);
      }
      if (!(await store.has(transfer.sha256))) {
        throw new GroupcastError(ErrorCode.NOT_FOUND, `the store no longer holds ${what}: retention removed it once its deliveries ended; distribute the file again`);
      }
      const retried = deliveries.filter((d) => d.state === 'failed' && membership.isAuthorized(d.member, transfer.group));
      for (const delivery of retried) {
        this.options.outbox.update(delivery, { attempts: 0 });
        this.settle(delivery, 'pending', RETRIED_REASON);
      }
      if (retried.length > 0) log.info({ transfer: transfer.id, file: transfer.name, members: retried.map((d) => d.member) }, 'deliveries retried');
      for (const member of new Set(retried.map((d) => d.member))) this.wake(member);
      return retried;
    } finally {
      this.endRecording();
    }
  }

  /** Runs a retention pass now (after one under way) and returns the store files it removed. */
  async prune(): Promise<RemovedFile[]> {
    await this.sweeping;
    return this.sweep();
  }

  /** The member lost the group: stop what is in flight and fail what is queued. */
  revoke(member: PeerId, group: string, reason: string): void {
    for (const delivery of this.options.outbox.deliveriesFor(member)) {
      if (this.options.outbox.transfer(delivery.transfer)?.group !== group) continue;
      // Its peers are told first (PEERS without it), and drop their links to it.
      this.tracker.leave(delivery.transfer, member);
      this.inflight.get(key(delivery.transfer, member))?.controller.abort(reason);
      if (delivery.state === 'pending') this.settle(delivery, 'failed', reason);
    }
  }

  private eligible(member: PeerId): (delivery: DeliveryRecord) => boolean {
    return (delivery) => {
      const transfer = this.options.outbox.transfer(delivery.transfer);
      return !!transfer && this.options.membership.isAuthorized(member, transfer.group);
    };
  }

  /** Schedules the member's next due delivery, unless one is already running for it. */
  wake(member: PeerId): void {
    if (this.closed || this.active.has(member) || !this.options.session(member)) return;
    const { outbox } = this.options;
    const delivery = outbox.nextDue(member, this.now(), this.eligible(member));
    if (!delivery) {
      this.scheduleRetry(member);
      return;
    }
    this.active.add(member);
    void this.run(member, delivery)
      .catch((err: unknown) => this.options.log.error({ err, member }, 'delivery crashed'))
      .finally(() => {
        this.active.delete(member);
        this.wake(member);
      });
  }

  private scheduleRetry(member: PeerId): void {
    const at = this.options.outbox.nextRetryAt(member, this.eligible(member));
    clearTimeout(this.retryTimers.get(member));
    if (at === undefined) return;
    const timer = setTimeout(() => {
      this.retryTimers.delete(member);
      this.wake(member);
    }, Math.max(0, at - this.now()));
    timer.unref();
    this.retryTimers.set(member, timer);
  }

  private settle(delivery: DeliveryRecord, state: 'delivered' | 'failed' | 'pending', reason: string, notBefore = 0): void {
    this.options.outbox.update(delivery, { state, reason, notBefore });
    this.emit('delivery', delivery);
    // Retention follows the deliveries: the last one of a transfer to end may free its file now.
    if (state !== 'pending' && this.options.outbox.deliveriesOf(delivery.transfer).every(isTerminal)) void this.sweep();
  }

  /**
   * Runs one delivery in a slot: a pull slot when the member can pull, a stream slot when it cannot or
   * when the transfer turns out not to be pullable (no piece hashes, no peer online).
   */
  private async run(member: PeerId, delivery: DeliveryRecord): Promise<void> {
    const session = this.options.session(member);
    if (session?.supportsPieces && session.swarms && (await this.pulls.add(() => this.attempt(member, delivery, true)))) return;
    if (this.closed) return;
    await this.streams.add(() => this.attempt(member, delivery, false));
  }

  /** One attempt at a delivery. In a pull slot it runs only if it is pulled; false: it needs a stream slot. */
  private async attempt(member: PeerId, delivery: DeliveryRecord, pullSlot: boolean): Promise<boolean> {
    const { outbox, store, log } = this.options;
    const session = this.options.session(member);
    const transfer = outbox.transfer(delivery.transfer);
    if (!session || !transfer || delivery.state !== 'pending') return true;
    const fields = { transfer: transfer.id, member, group: transfer.group, file: transfer.name };
    // A tree goes only to a member that can take one (PROTOCOL.md §7.7).
    if (transfer.kind === 'tree' && !session.supportsTrees) {
      log.error({ ...fields }, 'delivery failed: the member cannot receive directories');
      this.settle(delivery, 'failed', NO_TREES_REASON);
      return true;
    }
    const tree = transfer.kind === 'tree' ? await this.trees.load(transfer.sha256).catch((err: unknown) => err as Error) : undefined;
    if (tree instanceof Error) {
      this.failedAttempt(delivery, Outcome.FAILED, `cannot read the tree's manifest from the store: ${tree.message}`, fields);
      return true;
    }
    const manifest = session.supportsPieces && !tree ? await this.manifestFor(transfer, fields) : undefined;
    // A tree's manifest carries its piece hashes (§7.7); a tree without a piece (only empty files), or
    // of small pieces (MIN_PULLED_TREE_PIECE), is streamed.
    const layout = tree ? manifestPieces(tree.manifest) : manifest && manifestPieces(manifest);
    const pulled = layout !== undefined && layout.count > 0 && (tree ? session.pullsTrees && layout.size >= layout.count * MIN_PULLED_TREE_PIECE : session.swarms)
      && this.hasSwarmPeers(member, transfer);
    if (pullSlot && !pulled) return false;
    const controller = new AbortController();
    const k = key(transfer.id, member);
    this.inflight.set(k, { controller, member });
    outbox.update(delivery, { state: 'sending', attempts: delivery.attempts + 1 });
    this.emit('delivery', delivery);
    let sent = 0;
    let seat: Seat | undefined;
    const onProgress = (id: string, position: number, bytes: number): void => {
      if (id !== transfer.id) return;
      sent += bytes;
      this.emit('progress', transfer.id, member, position, {
        fromServer: delivery.bytesSent + sent, fromPeers: delivery.bytesFromPeers + (seat?.fromPeers ?? 0),
      });
    };
    const counted = (): void => {
      delivery.bytesSent += sent;
      delivery.bytesFromPeers += seat?.fromPeers ?? 0;
    };
    session.on('progress', onProgress);
    const limits = this.limitsFor(transfer);
    try {
      seat = pulled ? this.tracker.join(transfer.id, layout, session.seatLink) : undefined;
      const result = await session.deliver(transfer, tree ?? store.path(transfer.sha256), controller.signal, manifest, seat, limits.buckets);
      counted();
      if (result.outcome === Outcome.OK) seat?.complete();
      else seat?.leave();
      if (result.outcome === Outcome.OK) {
        log.info({ ...fields, resumedAt: result.offset, bytesSent: result.bytesSent }, 'delivered');
        this.settle(delivery, 'delivered', '');
      } else {
        this.failedAttempt(delivery, result.outcome, describeOutcome(result.outcome, result.message), fields);
      }
    } catch (err) {
      counted();
      if (controller.signal.aborted && !this.closed) {
        log.warn({ ...fields, reason: String(controller.signal.reason) }, 'delivery cancelled');
        this.settle(delivery, 'failed', String(controller.signal.reason));
      } else if (isMemberFault(err)) {
        // The member broke the protocol or stalled: that costs an attempt and backs off, or a member
        // that does it on every offer would be re-offered (and hold a slot) forever.
        this.failedAttempt(delivery, Outcome.FAILED, err.message, fields);
      } else {
        // A dropped link is not the member's fault: no attempt is charged, it resumes on reconnect.
        const reason = this.closed ? 'interrupted: server shutting down' : `interrupted: ${(err as Error).message}`;
        if (this.closed) log.info({ ...fields, bytesSent: sent }, 'delivery interrupted: server shutting down');
        else log.warn({ ...fields, ...disconnectFields(err), bytesSent: sent }, 'delivery interrupted');
        outbox.update(delivery, { attempts: Math.max(0, delivery.attempts - 1) });
        this.settle(delivery, 'pending', reason, this.now() + backoffDelay(0, 250, 1_000));
      }
    } finally {
      if (seat && !seat.held.complete) seat.leave();
      session.off('progress', onProgress);
      limits.release();
      this.inflight.delete(k);
    }
    return true;
  }

  /**
   * The rate limits one delivery's DATA frames wait for: its distribution's bucket (shared by that
   * distribution's deliveries in flight, made for the first and dropped after the last) and the server's.
   */
  private limitsFor(transfer: TransferRecord): { buckets: TokenBucket[]; release: () => void } {
    const server = this.options.rate ? [this.options.rate] : [];
    if (transfer.rate === undefined) return { buckets: server, release: () => undefined };
    let shared = this.transferRates.get(transfer.id);
    if (!shared) this.transferRates.set(transfer.id, (shared = { bucket: new TokenBucket(transfer.rate), users: 0 }));
    shared.users++;
    const entry = shared;
    return {
      buckets: [entry.bucket, ...server],
      release: () => {
        if (--entry.users === 0 && this.transferRates.get(transfer.id) === entry) this.transferRates.delete(transfer.id);
      },
    };
  }

  /**
   * Whether another member that can swarm is online for this transfer's group (for a tree, one that
   * pulls trees): pulling pays only with peers; a member alone gets the stream (and checks it piece by
   * piece all the same).
   */
  private hasSwarmPeers(member: PeerId, transfer: TransferRecord): boolean {
    return this.options.membership.targets(transfer.group).some((other) => {
      const session = other === member ? undefined : this.options.session(other);
      return transfer.kind === 'tree' ? session?.pullsTrees === true : session?.swarms === true;
    });
  }

  /** Without its pieces a transfer is still delivered, streamed whole and checked at the end. */
  private async manifestFor(transfer: TransferRecord, fields: object): Promise<Manifest | undefined> {
    try {
      return manifestOf(transfer, await this.options.store.pieces(transfer.sha256, transfer.size));
    } catch (err) {
      this.options.log.warn({ ...fields, err }, 'no piece hashes for this transfer; streaming it without');
      return undefined;
    }
  }

  private failedAttempt(delivery: DeliveryRecord, outcome: Outcome, reason: string, fields: object): void {
    const permanent = PERMANENT.has(outcome)
      || (outcome === Outcome.NO_SPACE && delivery.attempts >= NO_SPACE_ATTEMPTS)
      || delivery.attempts >= MAX_ATTEMPTS;
    if (permanent) {
      this.options.log.error({ ...fields, reason, attempts: delivery.attempts }, 'delivery failed');
      this.settle(delivery, 'failed', reason);
      return;
    }
    const retryIn = backoffDelay(delivery.attempts, RETRY_BASE_MS, RETRY_CAP_MS);
    this.options.log.warn({ ...fields, reason, attempts: delivery.attempts, retryIn }, 'delivery attempt failed');
    this.settle(delivery, 'pending', reason, this.now() + retryIn);
  }

  /** Runs one retention pass; asked for while one runs, another follows it. */
  private sweep(): Promise<RemovedFile[]> {
    if (this.closed) return Promise.resolve([]);
    if (this.sweeping) {
      this.sweepAgain = true;
      return this.sweeping;
    }
    this.sweeping = this.expire()
      .catch((err: unknown) => {
        this.options.log.error({ err }, 'retention sweep failed');
        return [];
      })
      .finally(() => {
        this.sweeping = undefined;
        if (!this.sweepAgain) return;
        this.sweepAgain = false;
        void this.sweep();
      });
    return this.sweeping;
  }

  /**
   * Retention: a delivery still pending when its transfer expires fails (the member never came back);
   * the store keeps a file only while a delivery of it is pending or sending, or while the backlog
   * policy would still give it to a member joining now (backlogOf); finished transfers past retention
   * stay visible to status up to HISTORY_LIMIT, the oldest forgotten first.
   */
  private async expire(): Promise<RemovedFile[]> {
    const { outbox, store, log } = this.options;
    const now = this.now();
    const transfers = outbox.listTransfers();
    const backlog = new Set(backlogOf(transfers, this.backlog, now));
    const needed = new Set<string>();
    const finished: TransferRecord[] = [];
    for (const transfer of transfers) {
      const deliveries = outbox.deliveriesOf(transfer.id);
      const expired = transfer.expiresAt <= now;
      for (const delivery of expired ? deliveries.filter((d) => d.state === 'pending') : []) {
        log.warn({ transfer: transfer.id, member: delivery.member, group: transfer.group, file: transfer.name }, 'delivery expired');
        this.settle(delivery, 'failed', EXPIRED_REASON);
      }
      if (backlog.has(transfer) || !deliveries.every(isTerminal)) {
        needed.add(transfer.sha256);
        // A tree's manifest names the store files it needs.
        if (transfer.kind === 'tree') for (const file of await this.trees.contents(transfer.sha256)) needed.add(file);
      } else if (expired) finished.push(transfer);
    }
    finished.sort((a, b) => b.expiresAt - a.expiresAt);
    for (const transfer of finished.slice(HISTORY_LIMIT)) outbox.forget(transfer.id);
    if (this.recording > 0) {
      this.pruneSkipped = true;
      return [];
    }
    const removed = await store.prune(needed);
    if (removed.length > 0) {
      log.info({ files: removed.length, bytes: removed.reduce((sum, file) => sum + file.bytes, 0) }, 'removed store files no transfer needs');
    }
    return removed;
  }

  /**
   * Stops taking work and ends what is in flight by closing those members' links. To a member that is
   * a dropped connection: it keeps its partial and resumes at the next offer (a CANCEL would make it
   * delete the partial). Resolves once every interrupted delivery is back to pending.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.pulls.clear();
    this.streams.clear();
    for (const { member } of this.inflight.values()) {
      this.options.session(member)?.close(new GroupcastError(ErrorCode.CLOSED, 'server shutting down'));
    }
    await Promise.all([this.pulls.onIdle(), this.streams.onIdle()]);
    await this.sweeping;
  }
}
