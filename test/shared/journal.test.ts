import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isGroupcastError } from '../../packages/shared/src/errors.js';
import { Journal, parseJsonLines } from '../../packages/shared/src/runtime/journal.js';

interface Entry { n: number }
const isEntry = (value: unknown): value is Entry =>
  typeof value === 'object' && value !== null && typeof (value as Entry).n === 'number';

describe('Journal', () => {
  let dir: string;
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('skips a torn tail on replay and starts the next append on a fresh line', async () => {
    dir = await mkdtemp(join(tmpdir(), 'gc-journal-'));
    const path = join(dir, 'log.jsonl');
    await writeFile(path, '{"n":1}\n{"n":2');
    const journal = new Journal(path, isEntry);
    expect(await journal.replay()).toEqual({ records: [{ n: 1 }], torn: 1 });
    await journal.append({ n: 3 });
    await journal.close();
    const { records, torn } = parseJsonLines(await readFile(path, 'utf8'), isEntry);
    expect(records).toEqual([{ n: 1 }, { n: 3 }]);
    expect(torn).toBe(1);
  });

  it('reports an unreadable file as a state-directory error', async () => {
    dir = await mkdtemp(join(tmpdir(), 'gc-journal-'));
    const journal = new Journal(dir, isEntry);
    await expect(journal.replay()).rejects.toSatisfy((err: unknown) => isGroupcastError(err, 'GC_ERR_STATE_DIR'));
  });
});
