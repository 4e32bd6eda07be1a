import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIN_PIECE_SIZE } from '../../packages/shared/src/index.js';
import { HASH_HOLD_BYTES, PiecePartial } from '../../packages/client/src/peer/piece-partial.js';

/**
 * A member's whole-file hash runs in piece order behind the writes; a piece that arrives ahead of the
 * verified prefix is read back when the prefix reaches it, so its buffers must not be held meanwhile.
 * On one CPU-bound box nearly every piece arrives ahead and the hash steps queue behind read-backs:
 * a step that kept its piece's buffers held ~1,000 of them (250 MiB) in a member. Checked with a
 * read-back held back at will (no timing) and the collector run by hand.
 */
const PIECES = 12;
const SIZE = PIECES * MIN_PIECE_SIZE;
let dir: string;

/** Random content of `count` pieces: its bytes, each piece, and the manifest's piece hashes. */
function randomContent(count: number): { data: Buffer; piece: (i: number) => Buffer; hashes: Buffer } {
  const data = randomBytes(count * MIN_PIECE_SIZE);
  const piece = (i: number): Buffer => data.subarray(i * MIN_PIECE_SIZE, (i + 1) * MIN_PIECE_SIZE);
  const hashes = Buffer.concat(Array.from({ length: count }, (_, i) => createHash('sha256').update(piece(i)).digest()));
  return { data, piece, hashes };
}

const { data, piece, hashes } = randomContent(PIECES);

/** Writes pieces 3.. each from a buffer of its own; returns weak references to the buffers (none held here). */
async function writeAhead(partial: PiecePartial): Promise<Array<WeakRef<Buffer>>> {
  const ahead: Array<WeakRef<Buffer>> = [];
  for (let i = 3; i < PIECES; i++) {
    const copy = Buffer.from(piece(i));
    ahead.push(new WeakRef(copy));
    await partial.write(i, [copy]);
  }
  return ahead;
}

/** Read-backs wait until the test calls `release`: the hash is stuck behind the first meanwhile (`blocked` says it got there). */
function holdReadBacks(partial: PiecePartial): { blocked: Promise<void>; release: () => void } {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let readingBack!: () => void;
  const blocked = new Promise<void>((resolve) => (readingBack = resolve));
  const readInto = partial.readInto.bind(partial);
  partial.readInto = async (position, into) => {
    readingBack();
    await released;
    return readInto(position, into);
  };
  return { blocked, release };
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-prefix-hold-'));
});

afterAll(() => rm(dir, { recursive: true, force: true }));

describe('the prefix hash of a partial written in any order', () => {
  it('does not hold the buffers of pieces that arrived ahead while it reads back earlier ones', async () => {
    const partial = await PiecePartial.open(join(dir, 'file.part'), SIZE, { pieceSize: MIN_PIECE_SIZE, hashes }, new AbortController().signal);
    const { blocked, release } = holdReadBacks(partial);

    await partial.write(1, [Buffer.from(piece(1))]);
    await partial.write(0, [Buffer.from(piece(0))]);
    await blocked;
    // Piece 2 is missing: pieces 3.. arrive ahead of the prefix, each in a buffer of its own.
    const ahead = await writeAhead(partial);
    // Let the event loop drop the writes' own references, then collect.
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    expect(ahead.filter((ref) => ref.deref() !== undefined)).toHaveLength(0);

    release();
    await partial.write(2, [Buffer.from(piece(2))]);
    expect((await partial.digest()).equals(createHash('sha256').update(data).digest())).toBe(true);
    await partial.release();
  });

  it('does not hold a piece in order behind a long read-back: the hash is far from it, so it is read back too', async () => {
    // Pieces 1..11 arrive ahead (piece 0 missing), then piece 0: the hash takes 0 from memory and reads
    // back 1..11, held up here at piece 1. Piece 12 arrives meanwhile; every piece before it is held, so
    // the prefix reaches it, but only after 11 read-backs. On one box a member whose low piece came late
    // held every piece that arrived during such a run: 444 MiB for a 1 GiB file at 4 members.
    const count = 16;
    const { data: longData, piece: at, hashes: longHashes } = randomContent(count);
    const partial = await PiecePartial.open(join(dir, 'long.part'), count * MIN_PIECE_SIZE, { pieceSize: MIN_PIECE_SIZE, hashes: longHashes }, new AbortController().signal);
    for (let i = 1; i < 12; i++) await partial.write(i, [Buffer.from(at(i))]);
    const { blocked, release } = holdReadBacks(partial);
    await partial.write(0, [Buffer.from(at(0))]);
    await blocked;
    // The hash stands at piece 1: piece 12 is further ahead of it than the hash may hold.
    expect((12 - 1) * MIN_PIECE_SIZE).toBeGreaterThan(HASH_HOLD_BYTES);
    let copy: Buffer | undefined = Buffer.from(at(12));
    const behind = new WeakRef(copy);
    let given = false;
    await partial.write(12, [copy], () => (given = true));
    copy = undefined;
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    expect(given).toBe(true);
    expect(behind.deref()).toBeUndefined();

    release();
    for (let i = 13; i < count; i++) await partial.write(i, [Buffer.from(at(i))]);
    expect((await partial.digest()).equals(createHash('sha256').update(longData).digest())).toBe(true);
    await partial.release();
  });

  it('gives a piece\'s buffers back once nothing reads them: after the write when it is ahead, after the hash when in order', async () => {
    const partial = await PiecePartial.open(join(dir, 'release.part'), SIZE, { pieceSize: MIN_PIECE_SIZE, hashes }, new AbortController().signal);
    const released: number[] = [];
    await partial.write(1, [Buffer.from(piece(1))], () => released.push(1));
    // Ahead of the prefix (piece 0 is missing): it will be read back, so its buffers are free at once.
    expect(released).toEqual([1]);
    for (let i = 0; i < PIECES; i++) {
      if (i !== 1) await partial.write(i, [Buffer.from(piece(i))], () => released.push(i));
    }
    expect((await partial.digest()).equals(createHash('sha256').update(data).digest())).toBe(true);
    expect([...released].sort((a, b) => a - b)).toEqual(Array.from({ length: PIECES }, (_, i) => i));
    await partial.release();
  });
});
