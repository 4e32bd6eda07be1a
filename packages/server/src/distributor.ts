import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';
import PQueue from 'p-queue';
import {
  backoffDelay, ErrorCode, GroupcastError, Outcome, TRANSFER_ID_LENGTH, validateFileName,
  type Logger, type PeerId,
} from '@groupcast/shared';
import type { Membership } from './membership.js';
import { describeOutcome, type MemberSession } from './member-session.js';
import type { DeliveryRecord, Outbox, TransferRecord } from './outbox.js';
import type { ContentStore } from './store.js';

/** Outcomes a retry cannot fix. */
const PERMANENT = new Set<Outcome>([Outcome.BAD_NAME, Outcome.NAME_CLASH, Outcome.NOT_MEMBER, Outcome.CANCELLED]);
/** "Disk full twice" is permanent: the member's operator has to act. */
const NO_SPACE_ATTEMPTS = 2;
const MAX_ATTEMPTS = 5;
const RETRY_BASE_MS = 1_000;
const RETRY_CAP_MS = 5 * 60_000;
const SWEEP_INTERVAL_MS = 60_000;

export interface DistributorEvents {
  /** A delivery changed state. */
  delivery: [delivery: DeliveryRecord];
  progress: [transfer: string, member: PeerId, position: number];
}

export interface DistributorOptions {
  log: Logger;
  outbox: Outbox;
  store: ContentStore;
  membership: Membership;
  session: (member: PeerId) => MemberSession | undefined;
  concurrency: number;
  keepMs: number;
  clock?: () => number;
}

const key = (transfer: string, member: PeerId): string => `${transfer}/${member}`;

/**
 * Turns distributions into deliveries and runs them: each member's deliveries in order over its own
 * connection, at most `concurrency` transfers at once across all members (the p-queue), failures
 * retried with backoff and jitter, offline members left pending until they reconnect.
 */
export class Distributor extends EventEmitter<DistributorEvents> {
  private readonly queue: PQueue;
  private readonly active = new Set<PeerId>();
  private readonly inflight = new Map<string, AbortController>();
  private readonly retryTimers = new Map<PeerId, NodeJS.Timeout>();
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: DistributorOptions) {
    super();
    this.queue = new PQueue({ concurrency: options.concurrency });
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  start(): void {
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
    void this.sweep();
  }

  /** Stores each file, records a delivery per current member, and starts sending to those online. */
  async distribute(group: string, paths: string[]): Promise<{ transfers: TransferRecord[]; members: PeerId[] }> {
    const { membership, store, outbox, log } = this.options;
    if (!membership.hasGroup(group)) throw new GroupcastError(ErrorCode.UNKNOWN_GROUP, `no group named "${group}"`);
    const names = paths.map((path) => validateFileName(basename(path)));
    const members = membership.targets(group);
    const transfers: TransferRecord[] = [];
    for (const [index, path] of paths.entries()) {
      const stored = await store.ingest(path);
      const now = this.now();
      const transfer: TransferRecord = {
        id: randomBytes(TRANSFER_ID_LENGTH).toString('hex'),
        group,
        name: names[index] ?? basename(path),
        size: stored.size,
        sha256: stored.sha256,
        createdAt: now,
        expiresAt: now + this.options.keepMs,
      };
      await outbox.create(transfer, members);
      transfers.push(transfer);
      log.info({ transfer: transfer.id, group, file: transfer.name, bytes: transfer.size, members: members.length }, 'distribution recorded');
    }
    for (const member of members) this.wake(member);
    return { transfers, members };
  }

  /** A member joined a group: give it the group's unexpired backlog. */
  async memberJoined(member: PeerId, group: string): Promise<void> {
    const added = await this.options.outbox.backfill(member, group);
    if (added.length > 0) this.options.log.info({ member, group, deliveries: added.length }, 'backlog queued for new member');
    this.wake(member);
  }

  /** The member lost the group: stop what is in flight and fail what is queued. */
  revoke(member: PeerId, group: string, reason: string): void {
    for (const delivery of this.options.outbox.deliveriesFor(member)) {
      if (this.options.outbox.transfer(delivery.transfer)?.group !== group) continue;
      this.inflight.get(key(delivery.transfer, member))?.abort(reason);
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
    void this.queue
      .add(() => this.run(member, delivery))
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
  }

  private async run(member: PeerId, delivery: DeliveryRecord): Promise<void> {
    const { outbox, store, log } = this.options;
    const session = this.options.session(member);
    const transfer = outbox.transfer(delivery.transfer);
    if (!session || !transfer || delivery.state !== 'pending') return;
    const controller = new AbortController();
    const k = key(transfer.id, member);
    this.inflight.set(k, controller);
    outbox.update(delivery, { state: 'sending', attempts: delivery.attempts + 1 });
    this.emit('delivery', delivery);
    const fields = { transfer: transfer.id, member, group: transfer.group, file: transfer.name };
    let sent = 0;
    const onProgress = (id: string, position: number, bytes: number): void => {
      if (id !== transfer.id) return;
      sent += bytes;
      this.emit('progress', transfer.id, member, position);
    };
    session.on('progress', onProgress);
    try {
      const result = await session.deliver(transfer, store.path(transfer.sha256), controller.signal);
      delivery.bytesSent += sent;
      if (result.outcome === Outcome.OK) {
        log.info({ ...fields, resumedAt: result.offset, bytesSent: result.bytesSent }, 'delivered');
        this.settle(delivery, 'delivered', '');
      } else {
        this.failedAttempt(delivery, result.outcome, describeOutcome(result.outcome, result.message), fields);
      }
    } catch (err) {
      delivery.bytesSent += sent;
      if (controller.signal.aborted && !this.closed) {
        log.warn({ ...fields, reason: String(controller.signal.reason) }, 'delivery cancelled');
        this.settle(delivery, 'failed', String(controller.signal.reason));
      } else {
        // A dropped link is not the member's fault: no attempt is charged, it resumes on reconnect.
        log.warn({ ...fields, err }, 'delivery interrupted');
        outbox.update(delivery, { attempts: Math.max(0, delivery.attempts - 1) });
        this.settle(delivery, 'pending', (err as Error).message, this.now() + backoffDelay(0, 250, 1_000));
      }
    } finally {
      session.off('progress', onProgress);
      this.inflight.delete(k);
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

  /** Expires deliveries past retention and drops store files nothing needs any more. */
  private async sweep(): Promise<void> {
    const { outbox, store, log } = this.options;
    const now = this.now();
    const needed = new Set<string>();
    const expired: TransferRecord[] = [];
    for (const transfer of outbox.listTransfers()) {
      const deliveries = outbox.deliveriesOf(transfer.id);
      if (transfer.expiresAt > now || deliveries.some((d) => d.state === 'sending')) {
        needed.add(transfer.sha256);
        continue;
      }
      expired.push(transfer);
      for (const delivery of deliveries) {
        if (delivery.state === 'pending') this.settle(delivery, 'failed', 'expired (retention)');
      }
    }
    for (const sha256 of new Set(expired.map((t) => t.sha256))) {
      if (needed.has(sha256)) continue;
      await store.remove(sha256).catch((err: unknown) => log.warn({ err, sha256 }, 'cannot remove expired store file'));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    for (const controller of this.inflight.values()) controller.abort('server shutting down');
    this.queue.clear();
    await this.queue.onIdle();
  }
}
