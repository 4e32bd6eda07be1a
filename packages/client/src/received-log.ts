import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, ErrorCode, GroupcastError, type Logger } from '@groupcast/shared';

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
}

function isRecord(value: unknown): value is ReceivedRecord {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record.transfer === 'string' && /^[0-9a-f]{32}$/.test(record.transfer)
    && typeof record.group === 'string' && typeof record.name === 'string' && typeof record.size === 'number';
}

/**
 * Parses the log. A line that does not parse (the torn tail of an append cut by a crash) is counted
 * and skipped: losing one dedup entry costs at worst a re-check of a file already in place.
 */
export function parseReceivedLog(text: string): { records: ReceivedRecord[]; bad: number } {
  const records: ReceivedRecord[] = [];
  let bad = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const value: unknown = JSON.parse(line);
      if (isRecord(value)) records.push(value);
      else bad++;
    } catch {
      bad++;
    }
  }
  return { records, bad };
}

/**
 * The transfers this member has completed, so that a server re-offering one (it missed our RESULT)
 * is answered "have it" without touching the disk. Appends are serialised but not fsynced: the file
 * itself is fsynced in place before its line is written, and a line lost to a power cut only means a
 * re-offer is answered by rehashing that file ("already present"). An fsync per line would cost a
 * disk flush per file received, most of the time of a many-small-files distribution.
 */
export class ReceivedLog {
  readonly path: string;
  private readonly done = new Set<string>();
  private appending: Promise<void> = Promise.resolve();
  /** The file does not end in a newline (torn append): the next record must start a fresh line. */
  private needsNewline = false;

  constructor(stateDir: string, private readonly log: Logger) {
    this.path = join(stateDir, RECEIVED_LOG);
  }

  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read ${this.path}`, { cause: err });
    }
    const { records, bad } = parseReceivedLog(text);
    for (const record of records) this.done.add(record.transfer);
    this.needsNewline = text.length > 0 && !text.endsWith('\n');
    if (bad > 0) this.log.warn({ path: this.path, skipped: bad }, 'skipped unreadable lines in the received log');
  }

  has(transferHex: string): boolean {
    return this.done.has(transferHex);
  }

  append(record: ReceivedRecord): Promise<void> {
    this.done.add(record.transfer);
    const next = this.appending.then(() => this.write(record));
    this.appending = next.catch(() => undefined);
    return next;
  }

  private async write(record: ReceivedRecord): Promise<void> {
    const line = `${this.needsNewline ? '\n' : ''}${JSON.stringify(record)}\n`;
    const handle = await open(this.path, 'a', 0o600);
    try {
      await handle.write(line);
      this.needsNewline = false;
    } finally {
      await handle.close();
    }
  }

  async close(): Promise<void> {
    await this.appending;
  }
}
