import { join } from 'node:path';
import { Journal, parseJsonLines, type Logger } from '@groupcast/shared';

export const RECEIVED_LOG = 'received.jsonl';

/** One completed transfer, one JSON line in `<stateDir>/received.jsonl`. */
export interface ReceivedRecord {
  transfer: string;
  group: string;
  name: string;
  sha256: string;
  size: number;
  path: string;
  time: string;
  /** What was placed; lines written before trees and versions have none and are files. */
  kind?: 'file' | 'tree' | undefined;
  /** The transfer whose version this one replaced at `path`, if it replaced one. */
  replaces?: string | undefined;
}

function isRecord(value: unknown): value is ReceivedRecord {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record.transfer === 'string' && /^[0-9a-f]{32}$/.test(record.transfer)
    && typeof record.group === 'string' && typeof record.name === 'string' && typeof record.size === 'number';
}

/** Parses the log; a torn or foreign line is counted (`bad`) and skipped. */
export function parseReceivedLog(text: string): { records: ReceivedRecord[]; bad: number } {
  const { records, torn } = parseJsonLines(text, isRecord);
  return { records, bad: torn };
}

/**
 * The transfers this member has completed, so that a server re-offering one (it missed our RESULT)
 * is answered "have it" without touching the disk. Appends are not fsynced: the file itself is
 * fsynced in place before its line is written, and a line lost to a power cut only means a re-offer
 * is answered by rehashing that file ("already present"). An fsync per line would cost a disk flush
 * per file received, most of the time of a many-small-files distribution.
 */
export class ReceivedLog {
  private readonly journal: Journal<ReceivedRecord>;
  private readonly done = new Set<string>();
  /** The newest record for each placed path: what groupcast put there last (versions.ts checks it is still there). */
  private readonly placed = new Map<string, ReceivedRecord>();

  constructor(stateDir: string, private readonly log: Logger) {
    this.journal = new Journal(join(stateDir, RECEIVED_LOG), isRecord);
  }

  get path(): string {
    return this.journal.path;
  }

  async load(): Promise<void> {
    const { records, torn } = await this.journal.replay();
    for (const record of records) this.remember(record);
    if (torn > 0) this.log.warn({ path: this.path, skipped: torn }, 'skipped unreadable lines in the received log');
  }

  has(transferHex: string): boolean {
    return this.done.has(transferHex);
  }

  /** The newest record of what was placed at `path`, if groupcast placed anything there. */
  placedAt(path: string): ReceivedRecord | undefined {
    return this.placed.get(path);
  }

  append(record: ReceivedRecord): Promise<void> {
    this.remember(record);
    return this.journal.append(record);
  }

  private remember(record: ReceivedRecord): void {
    this.done.add(record.transfer);
    if (typeof record.path === 'string') this.placed.set(record.path, record);
  }

  close(): Promise<void> {
    return this.journal.close();
  }
}
