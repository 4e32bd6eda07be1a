import { open, readFile, type FileHandle } from 'node:fs/promises';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';
import { writeFileAtomic } from './files.js';

/**
 * Parses JSON lines, keeping those `valid` accepts. A line that does not parse (the torn tail of an
 * append cut by a crash) or that `valid` refuses is counted and skipped, never thrown.
 */
export function parseJsonLines<T>(text: string, valid: (record: unknown) => record is T): { records: T[]; torn: number } {
  const records: T[] = [];
  let torn = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const record: unknown = JSON.parse(line);
      if (valid(record)) records.push(record);
      else torn++;
    } catch {
      torn++;
    }
  }
  return { records, torn };
}

/**
 * An append-only file of JSON lines. Appends reach the file in order at once (a kill -9 cannot lose
 * them; they are in the page cache); `sync()` makes them durable against power loss too. A torn last
 * line, left by a crash mid-write, and any line `valid` refuses, are skipped on replay, and the next
 * append starts a fresh line so the torn one cannot swallow it.
 */
export class Journal<T> {
  private handle: FileHandle | undefined;
  private tail: Promise<void> = Promise.resolve();
  /** The file does not end in a newline (a torn append): the next record must start a fresh line. */
  private needsNewline = false;
  /** Lines appended after the last rewrite's snapshot: what compacting now would save. */
  appended = 0;

  constructor(
    readonly path: string,
    private readonly valid: (record: unknown) => record is T,
  ) {}

  /** The records on disk; STATE_DIR if the file exists but cannot be read. */
  async replay(): Promise<{ records: T[]; torn: number }> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return { records: [], torn: 0 };
      throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read ${this.path}`, { cause: err });
    }
    this.needsNewline = text.length > 0 && !text.endsWith('\n');
    return parseJsonLines(text, this.valid);
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
      this.needsNewline = false;
    });
  }

  /** Resolves when the line is written; a failed write rejects its own promise only. */
  append(record: T): Promise<void> {
    const line = `${JSON.stringify(record)}\n`;
    this.appended++;
    return this.enqueue(async () => {
      this.handle ??= await open(this.path, 'a', 0o600);
      await this.handle.write(this.needsNewline ? `\n${line}` : line);
      this.needsNewline = false;
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
