import { join } from 'node:path';
import { Journal, stateWriteError, type Logger, type PeerId } from '@groupcast/shared';

export type DeliveryState = 'pending' | 'sending' | 'delivered' | 'failed';

export interface TransferRecord {
  id: string;
  group: string;
  name: string;
  size: number;
  sha256: string;
  createdAt: number;
  expiresAt: number;
  /** `distribute --rate`: bytes per second this distribution may take of the server's upload, over all its members. */
  rate?: number;
  /** `distribute --to`: the members it was sent to, the only ones it is for (never a later joiner's backlog). */
  to?: PeerId[];
}

export interface DeliveryRecord {
  transfer: string;
  member: PeerId;
  state: DeliveryState;
  attempts: number;
  /**
   * Payload bytes sent on all attempts that ended while the server ran (an attempt cut short by a crash
   * is not counted); resuming keeps this near the size instead of a multiple of it.
   */
  bytesSent: number;
  /** Bytes of the file the member took from its peers instead, counted the same way (see Seat). */
  bytesFromPeers: number;
  /** Why the last attempt did not deliver, or why it failed for good. */
  reason: string;
  updatedAt: number;
  /** Earliest time of the next attempt (backoff). */
  notBefore: number;
}

type Entry =
  | { kind: 'transfer'; transfer: TransferRecord }
  | { kind: 'delivery'; delivery: DeliveryRecord }
  /** A transfer dropped from history, so a replay before the next compaction does not bring it back. */
  | { kind: 'forget'; transfer: string };

const STATES = new Set<unknown>(['pending', 'sending', 'delivered', 'failed'] satisfies DeliveryState[]);

/** The shape replay trusts; anything else in the file (a hand edit, a torn line that parses) is skipped. */
function isEntry(value: unknown): value is Entry {
  if (typeof value !== 'object' || value === null) return false;
  const entry = value as { kind?: unknown; transfer?: { id?: unknown; sha256?: unknown }; delivery?: { transfer?: unknown; member?: unknown; state?: unknown } };
  if (entry.kind === 'forget') return typeof entry.transfer === 'string';
  if (entry.kind === 'transfer') return typeof entry.transfer?.id === 'string' && typeof entry.transfer.sha256 === 'string';
  if (entry.kind === 'delivery') {
    return typeof entry.delivery?.transfer === 'string' && typeof entry.delivery.member === 'string' && STATES.has(entry.delivery.state);
  }
  return false;
}

/** The journal is compacted once the lines appended since its last snapshot reach this and the live records' count. */
const COMPACT_MIN_LINES = 1_000;

export const isTerminal = (delivery: DeliveryRecord): boolean => delivery.state === 'delivered' || delivery.state === 'failed';

const key = (transfer: string, member: PeerId): string => `${transfer}/${member}`;

/**
 * The durable record of what must reach whom. A transfer and its deliveries are on disk before the
 * operator is told the distribution exists; later state changes append to the journal without
 * waiting for fsync, because losing one to a power cut only makes the server offer again, and the
 * member answers an offer it already completed without any bytes moving. The journal is rewritten as
 * a snapshot on start and whenever superseded lines outnumber live ones; the distributor forgets old
 * finished transfers, so neither memory nor the file grows with the server's age.
 */
export class Outbox {
  private readonly journal: Journal<Entry>;
  private readonly transfers = new Map<string, TransferRecord>();
  private readonly deliveries = new Map<string, DeliveryRecord>();
  private readonly byMember = new Map<PeerId, DeliveryRecord[]>();
  private readonly byTransfer = new Map<string, DeliveryRecord[]>();

  /**
   * `keepMs`, when given, is the retention in force: every transfer loaded expires at its creation
   * plus it, so a shorter (or longer) `--keep` at a restart applies to what is already stored.
   */
  constructor(private readonly options: { stateDir: string; log: Logger; clock?: () => number; keepMs?: number }) {
    this.journal = new Journal(join(options.stateDir, 'outbox.jsonl'), isEntry);
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  async load(): Promise<void> {
    const { records, torn } = await this.journal.replay();
    if (torn > 0) this.options.log.warn({ torn }, 'skipped torn outbox lines from a crash');
    for (const entry of records) {
      if (entry.kind === 'transfer') this.transfers.set(entry.transfer.id, entry.transfer);
      else if (entry.kind === 'forget') this.drop(entry.transfer);
      else if (this.transfers.has(entry.delivery.transfer)) this.index(entry.delivery);
    }
    const { keepMs } = this.options;
    if (keepMs !== undefined) for (const transfer of this.transfers.values()) transfer.expiresAt = transfer.createdAt + keepMs;
    // What was in flight when the server stopped goes back in line; the member kept its partial, so
    // the next offer resumes it. As with a dropped link, the interrupted attempt is not charged.
    for (const delivery of this.deliveries.values()) {
      if (delivery.state !== 'sending') continue;
      Object.assign(delivery, { state: 'pending', attempts: Math.max(0, delivery.attempts - 1), reason: 'interrupted: server restarted', notBefore: 0 });
    }
    // The snapshot only saves space: on a full state disk the server starts on the journal as it is
    // (the next start replays it the same way) and delivers what is pending.
    await this.journal.rewrite(this.snapshotEntries()).catch((err: unknown) => {
      this.options.log.warn({ err: stateWriteError('cannot compact the outbox journal', this.journal.path, err) }, 'starting on the journal as it is');
    });
  }

  private snapshotEntries(): Entry[] {
    return [
      ...[...this.transfers.values()].map((transfer): Entry => ({ kind: 'transfer', transfer })),
      ...[...this.deliveries.values()].map((delivery): Entry => ({ kind: 'delivery', delivery })),
    ];
  }

  /** Rewrites the journal as a snapshot once superseded lines outnumber the live records. */
  private compactIfBloated(): void {
    const live = this.transfers.size + this.deliveries.size;
    if (this.journal.appended < Math.max(COMPACT_MIN_LINES, live)) return;
    this.journal.rewrite(this.snapshotEntries()).catch((err: unknown) => {
      this.options.log.error({ err }, 'cannot compact the outbox journal');
    });
  }

  private index(delivery: DeliveryRecord): void {
    // Journals written before peers were counted have no such field.
    if (typeof delivery.bytesFromPeers !== 'number') delivery.bytesFromPeers = 0;
    const k = key(delivery.transfer, delivery.member);
    const existing = this.deliveries.get(k);
    if (existing) {
      Object.assign(existing, delivery);
      return;
    }
    this.deliveries.set(k, delivery);
    const list = this.byMember.get(delivery.member) ?? [];
    list.push(delivery);
    this.byMember.set(delivery.member, list);
    const ofTransfer = this.byTransfer.get(delivery.transfer) ?? [];
    ofTransfer.push(delivery);
    this.byTransfer.set(delivery.transfer, ofTransfer);
  }

  /**
   * Drops a transfer and its deliveries from memory and the journal (a tombstone now, gone at the next
   * compaction). Only for history: the caller makes sure nothing about it is still to happen.
   */
  forget(transferId: string): void {
    if (!this.drop(transferId)) return;
    this.journal.append({ kind: 'forget', transfer: transferId }).catch((err: unknown) => {
      this.options.log.error({ err, transfer: transferId }, 'cannot journal a forgotten transfer');
    });
    this.compactIfBloated();
  }

  private drop(transferId: string): boolean {
    if (!this.transfers.delete(transferId)) return false;
    for (const delivery of this.byTransfer.get(transferId) ?? []) {
      this.deliveries.delete(key(transferId, delivery.member));
      const list = (this.byMember.get(delivery.member) ?? []).filter((d) => d !== delivery);
      if (list.length > 0) this.byMember.set(delivery.member, list);
      else this.byMember.delete(delivery.member);
    }
    this.byTransfer.delete(transferId);
    return true;
  }

  private newDelivery(transfer: string, member: PeerId): DeliveryRecord {
    const now = this.now();
    return { transfer, member, state: 'pending', attempts: 0, bytesSent: 0, bytesFromPeers: 0, reason: '', updatedAt: now, notBefore: 0 };
  }

  /**
   * Records a transfer and one delivery per member, durably, in one append: if it cannot be written
   * and synced (a full state disk) the transfer is not recorded at all, neither on disk nor here, and
   * this rejects (NO_SPACE or STATE_DIR) so that nobody is told it exists.
   */
  async create(transfer: TransferRecord, members: PeerId[]): Promise<DeliveryRecord[]> {
    this.transfers.set(transfer.id, transfer);
    const created = members.map((member) => this.newDelivery(transfer.id, member));
    for (const delivery of created) this.index(delivery);
    let written = false;
    try {
      await this.journal.appendAll([
        { kind: 'transfer', transfer },
        ...created.map((delivery): Entry => ({ kind: 'delivery', delivery })),
      ]);
      written = true;
      await this.journal.sync();
    } catch (err) {
      this.drop(transfer.id);
      // Written but not synced: a tombstone keeps a restart from bringing back what was refused.
      if (written) this.journal.append({ kind: 'forget', transfer: transfer.id }).catch(() => undefined);
      throw stateWriteError('cannot record the distribution', this.journal.path, err);
    }
    return created;
  }

  /** A member that joins late gets these transfers (its backlog), those it has no delivery for yet. */
  async backfill(member: PeerId, transfers: readonly TransferRecord[]): Promise<DeliveryRecord[]> {
    const added = transfers
      .filter((t) => this.transfers.has(t.id) && !this.deliveries.has(key(t.id, member)))
      .map((t) => this.newDelivery(t.id, member));
    for (const delivery of added) {
      this.index(delivery);
      await this.journal.append({ kind: 'delivery', delivery });
    }
    return added;
  }

  update(delivery: DeliveryRecord, patch: Partial<Omit<DeliveryRecord, 'transfer' | 'member'>>): void {
    Object.assign(delivery, patch, { updatedAt: this.now() });
    this.journal.append({ kind: 'delivery', delivery: { ...delivery } }).catch((err: unknown) => {
      this.options.log.error({ err, transfer: delivery.transfer, member: delivery.member }, 'cannot journal delivery');
    });
    this.compactIfBloated();
  }

  transfer(id: string): TransferRecord | undefined {
    return this.transfers.get(id);
  }

  listTransfers(): TransferRecord[] {
    return [...this.transfers.values()];
  }

  /** Whether the transfer may still be offered to the member: its delivery is pending or sending. */
  isLive(transferId: string, member: PeerId): boolean {
    const state = this.deliveries.get(key(transferId, member))?.state;
    return state === 'pending' || state === 'sending';
  }

  deliveriesOf(transferId: string): readonly DeliveryRecord[] {
    return this.byTransfer.get(transferId) ?? [];
  }

  deliveriesFor(member: PeerId): readonly DeliveryRecord[] {
    return this.byMember.get(member) ?? [];
  }

  allDeliveries(): IterableIterator<DeliveryRecord> {
    return this.deliveries.values();
  }

  /** The member's oldest pending delivery that is due, in the order they were distributed. */
  nextDue(member: PeerId, now: number, eligible: (d: DeliveryRecord) => boolean): DeliveryRecord | undefined {
    return this.deliveriesFor(member).find((d) => d.state === 'pending' && d.notBefore <= now && eligible(d));
  }

  /** When the member's earliest backed-off delivery becomes due, if any. */
  nextRetryAt(member: PeerId, eligible: (d: DeliveryRecord) => boolean): number | undefined {
    const times = this.deliveriesFor(member)
      .filter((d) => d.state === 'pending' && eligible(d))
      .map((d) => d.notBefore);
    return times.length ? Math.min(...times) : undefined;
  }

  async close(): Promise<void> {
    await this.journal.close();
  }
}
