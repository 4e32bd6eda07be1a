import { open, readFile, type FileHandle } from 'node:fs/promises';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';
import { writeFileAtomic, writeFully } from './files.js';

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
 * append starts a fresh line so the torn one cannot swallow it. An append that fails (a full disk)
 * is cut off the file again, so it is all there or not at all and the next one starts a clean line.
 */
export class Journal<T> {
  private handle: FileHandle | undefined;
  /** The file's size after the last append that completed: where a failed one is cut back to. */
  private length = 0;
  private tail: Promise<void> = Promise.resolve();
  /** The file may not end in a newline (a torn append): the next record must start a fresh line. */
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
      await this.closeHandle();
      await writeFileAtomic(this.path, text);
      this.needsNewline = false;
    });
  }

  /** Resolves when the line is written; a failed write rejects its own promise only. */
  append(record: T): Promise<void> {
    return this.appendAll([record]);
  }

  /**
   * Appends the records as one write: after a crash or a full disk either all of them are in the file
   * or none is. Resolves when written; a failure rejects this call only.
   */
  appendAll(records: readonly T[]): Promise<void> {
    const lines = records.map((record) => `${JSON.stringify(record)}\n`).join('');
    this.appended += records.length;
    return this.enqueue(async () => {
      const handle = await this.openHandle();
      const data = Buffer.from(this.needsNewline ? `\n${lines}` : lines);
      try {
        await writeFully(handle, data, null);
      } catch (err) {
        await this.cutBack(handle);
        throw err;
      }
      this.length += data.length;
      this.needsNewline = false;
    });
  }

  private async openHandle(): Promise<FileHandle> {
    if (!this.handle) {
      const handle = await open(this.path, 'a', 0o600);
      this.length = (await handle.stat()).size;
      this.handle = handle;
    }
    return this.handle;
  }

  /** Removes what a failed append left; if even that fails, the next append starts a fresh line. */
  private async cutBack(handle: FileHandle): Promise<void> {
    try {
      await handle.truncate(this.length);
    } catch {
      this.needsNewline = true;
      await this.closeHandle();
    }
  }

  private async closeHandle(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
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
    await this.enqueue(() => this.closeHandle());
  }
}
