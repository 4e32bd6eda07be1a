import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANY_PIECE, decodeFrame, filePieces, MIN_PIECE_SIZE, type PeerId } from '../../packages/shared/src/index.js';
import { SEEDS_PER_MEMBER, servePieces, type PullLink, type SwarmFrame } from '../../packages/server/src/delivery/piece-server.js';
import { Tracker } from '../../packages/server/src/delivery/tracker.js';
import { fileSource } from '../../packages/server/src/delivery/byte-source.js';

/**
 * The server chooses a member's next piece to seed when one of the last it chose has landed (the
 * member's HAVE), not when the socket took the last one: a socket takes far more than it sends at once,
 * and choosing ahead piled the pieces into whichever members' buffers filled first, so seeding ended
 * when the most loaded member had taken them all. Checked on the server's pull stream itself, with a
 * member connection whose socket takes everything at once (the deep buffer), so no timing is involved.
 */
const PIECES = 16;
const SIZE = PIECES * MIN_PIECE_SIZE;
const TRANSFER = randomBytes(32);
let dir: string;
let path: string;

/** A member connection whose socket takes every frame at once; it keeps the pieces of the DATA frames. */
class DeepBufferLink implements PullLink {
  readonly pieces: number[] = [];
  handler: ((frame: SwarmFrame) => void) | undefined;
  async write(frame: Buffer): Promise<void> {
    const decoded = decodeFrame(frame.subarray(4));
    if (decoded.type === 'data') this.pieces.push(Math.floor(decoded.offset / MIN_PIECE_SIZE));
  }
  listen(handler: (frame: SwarmFrame) => void): () => void {
    this.handler = handler;
    return () => (this.handler = undefined);
  }
  isClosed(): boolean {
    return false;
  }
  cancel(): void {}
  sent(): void {}
}

const until = async (condition: () => boolean, what: string): Promise<void> => {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gc-seed-pace-'));
  path = join(dir, 'file.bin');
  await writeFile(path, randomBytes(SIZE));
});

afterAll(() => rm(dir, { recursive: true, force: true }));

describe('the server seeds a member as its pieces land', () => {
  it(`chooses a member's next piece once fewer than ${SEEDS_PER_MEMBER} chosen for it are unreported (HAVE), however much its socket takes`, async () => {
    const tracker = new Tracker(pino({ level: 'silent' }));
    const link = new DeepBufferLink();
    const seat = tracker.join(TRANSFER.toString('hex'), filePieces(SIZE, MIN_PIECE_SIZE), {
      id: 'member' as PeerId, address: '127.0.0.1', peerPort: 0, send: () => undefined, isClosed: () => false,
    });
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    const pull = servePieces({ link, seat, open: () => fileSource(path), layout: seat.swarm.layout, name: 'file.bin', transfer: TRANSFER, signal: new AbortController().signal, ended, limits: [] });
    for (let r = 0; r < 8; r++) link.handler!({ type: 'request', transfer: TRANSFER, piece: ANY_PIECE });

    await until(() => link.pieces.length >= SEEDS_PER_MEMBER, `${SEEDS_PER_MEMBER} pieces sent`);
    // Time for more to go, were they to (a file read each): none does until one is reported.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(link.pieces).toHaveLength(SEEDS_PER_MEMBER);

    link.handler!({ type: 'have', transfer: TRANSFER, piece: link.pieces[0]! });
    await until(() => link.pieces.length >= SEEDS_PER_MEMBER + 1, 'the next piece once one landed');
    expect(new Set(link.pieces).size).toBe(SEEDS_PER_MEMBER + 1);

    end();
    expect(await pull).toBe((SEEDS_PER_MEMBER + 1) * MIN_PIECE_SIZE);
  });
});
