import { join } from 'node:path';
import type { Logger, PeerId } from '@groupcast/shared';
import { Journal } from './journal.js';

export type DeliveryState = 'pending' | 'sending' | 'delivered' | 'failed';

export interface TransferRecord {
  id: string;
  group: string;
  name: string;
  size: number;
  sha256: string;
  createdAt: number;
  expiresAt: number;
}

export interface DeliveryRecord {
  transfer: string;
  member: PeerId;
  state: DeliveryState;
  attempts: number;
  /** Bytes sent over the wire on all attempts (resume keeps this below the size). */
  bytesSent: number;
  /** Why the last attempt did not deliver, or why it failed for good. */
  reason: string;
  updatedAt: number;
  /** Earliest time of the next attempt (backoff). */
  notBefore: number;
}

type Entry = { kind: 'transfer'; transfer: TransferRecord } | { kind: 'delivery'; delivery: DeliveryRecord };

const key = (transfer: string, member: PeerId): string => `${transfer}/${member}`;

/**
 * The durable record of what must reach whom. A transfer and its deliveries are on disk before the
 * operator is told the distribution exists; later state changes append to the journal without
 * waiting for fsync, because losing one to a power cut only makes the server offer again, and the
 * member answers an offer it already completed without any bytes moving.
 */
export class Outbox {
  private readonly journal: Journal<Entry>;
  private readonly transfers = new Map<string, TransferRecord>();
  private readonly deliveries = new Map<string, DeliveryRecord>();
  private readonly byMember = new Map<PeerId, DeliveryRecord[]>();

  constructor(private readonly options: { stateDir: string; log: Logger; clock?: () => number }) {
    this.journal = new Journal(join(options.stateDir, 'outbox.jsonl'));
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  async load(): Promise<void> {
    const { records, torn } = await this.journal.replay();
    if (torn > 0) this.options.log.warn({ torn }, 'skipped torn outbox lines from a crash');
    for (const entry of records) {
      if (entry.kind === 'transfer') this.transfers.set(entry.transfer.id, entry.transfer);
      else this.index(entry.delivery);
    }
    for (const delivery of this.deliveries.values()) {
      if (delivery.state === 'sending') delivery.state = 'pending';
    }
    await this.journal.rewrite(this.snapshotEntries());
  }

  private snapshotEntries(): Entry[] {
    return [
      ...[...this.transfers.values()].map((transfer): Entry => ({ kind: 'transfer', transfer })),
      ...[...this.deliveries.values()].map((delivery): Entry => ({ kind: 'delivery', delivery })),
    ];
  }

  private index(delivery: DeliveryRecord): void {
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
  }

  private newDelivery(transfer: string, member: PeerId): DeliveryRecord {
    const now = this.now();
    return { transfer, member, state: 'pending', attempts: 0, bytesSent: 0, reason: '', updatedAt: now, notBefore: 0 };
  }

  /** Records a transfer and one delivery per member, durably. */
  async create(transfer: TransferRecord, members: PeerId[]): Promise<DeliveryRecord[]> {
    this.transfers.set(transfer.id, transfer);
    const created = members.map((member) => this.newDelivery(transfer.id, member));
    for (const delivery of created) this.index(delivery);
    await Promise.all([
      this.journal.append({ kind: 'transfer', transfer }),
      ...created.map((delivery) => this.journal.append({ kind: 'delivery', delivery })),
    ]);
    await this.journal.sync();
    return created;
  }

  /** A member that joins late gets the group's unexpired transfers it has no delivery for. */
  async backfill(member: PeerId, group: string): Promise<DeliveryRecord[]> {
    const now = this.now();
    const added = [...this.transfers.values()]
      .filter((t) => t.group === group && t.expiresAt > now && !this.deliveries.has(key(t.id, member)))
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
  }

  transfer(id: string): TransferRecord | undefined {
    return this.transfers.get(id);
  }

  listTransfers(): TransferRecord[] {
    return [...this.transfers.values()];
  }

  deliveriesOf(transferId: string): DeliveryRecord[] {
    return [...this.deliveries.values()].filter((d) => d.transfer === transferId);
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
