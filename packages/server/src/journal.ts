import { open, readFile, type FileHandle } from 'node:fs/promises';
import { errnoCode, writeFileAtomic } from '@groupcast/shared';

/**
 * An append-only file of JSON lines. Appends reach the file in order at once (a kill -9 cannot lose
 * them; they are in the page cache); `sync()` makes them durable against power loss too. A torn last
 * line, left by a crash mid-write, is skipped on replay.
 */
export class Journal<T> {
  private handle: FileHandle | undefined;
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly path: string) {}

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
        records.push(JSON.parse(line) as T);
      } catch {
        torn++;
      }
    }
    return { records, torn };
  }

  /** Replaces the journal with exactly these records (compaction), then appends after them. */
  async rewrite(records: T[]): Promise<void> {
    await this.closeHandle();
    await writeFileAtomic(this.path, records.map((record) => `${JSON.stringify(record)}\n`).join(''));
  }

  /** Resolves when the line is written; a failed write rejects its own promise only. */
  append(record: T): Promise<void> {
    const line = `${JSON.stringify(record)}\n`;
    const written = this.tail.then(async () => {
      this.handle ??= await open(this.path, 'a', 0o600);
      await this.handle.write(line);
    });
    this.tail = written.catch(() => undefined);
    return written;
  }

  async sync(): Promise<void> {
    await this.tail;
    await this.handle?.sync();
  }

  private async closeHandle(): Promise<void> {
    await this.tail;
    await this.handle?.close();
    this.handle = undefined;
  }

  async close(): Promise<void> {
    await this.sync();
    await this.closeHandle();
  }
}
