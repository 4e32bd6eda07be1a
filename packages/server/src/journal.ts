import { open, readFile, type FileHandle } from 'node:fs/promises';
import { errnoCode, writeFileAtomic } from '@groupcast/shared';

/**
 * An append-only file of JSON lines. Appends reach the file in order at once (a kill -9 cannot lose
 * them; they are in the page cache); `sync()` makes them durable against power loss too. A torn last
 * line, left by a crash mid-write, and any line `valid` refuses, are skipped on replay.
 */
export class Journal<T> {
  private handle: FileHandle | undefined;
  private tail: Promise<void> = Promise.resolve();
  /** Lines appended after the last rewrite's snapshot: what compacting now would save. */
  appended = 0;

  constructor(
    private readonly path: string,
    private readonly valid: (record: unknown) => record is T,
  ) {}

  async replay(): Promise<{ records: T[]; torn: number }> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return { records: [], torn: 0 };
      throw err;
    }
    const records: T[] = [];
    let torn = 0;
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const record: unknown = JSON.parse(line);
        if (this.valid(record)) records.push(record);
        else torn++;
      } catch {
        torn++;
      }
    }
    return { records, torn };
  }

  /**
   * Replaces the journal with exactly these records (compaction), atomically. It runs in turn with the
   * appends: those made before it land in the old file, which it replaces with a snapshot that
   * already holds their effect; those made after it land in the new file.
   */
  rewrite(records: readonly T[]): Promise<void> {
    const text = records.map((record) => `${JSON.stringify(record)}\n`).join('');
    this.appended = 0;
    return this.enqueue(async () => {
      await this.handle?.close();
      this.handle = undefined;
      await writeFileAtomic(this.path, text);
    });
  }

  /** Resolves when the line is written; a failed write rejects its own promise only. */
  append(record: T): Promise<void> {
    const line = `${JSON.stringify(record)}\n`;
    this.appended++;
    return this.enqueue(async () => {
      this.handle ??= await open(this.path, 'a', 0o600);
      await this.handle.write(line);
    });
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const done = this.tail.then(step);
    this.tail = done.catch(() => undefined);
    return done;
  }

  async sync(): Promise<void> {
    await this.tail;
    await this.handle?.sync();
  }

  async close(): Promise<void> {
    await this.sync();
    await this.enqueue(async () => {
      await this.handle?.close();
      this.handle = undefined;
    });
  }
}
