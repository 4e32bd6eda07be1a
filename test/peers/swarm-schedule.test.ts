import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Bitfield, filePieces, peerIdFromRawPublicKey, type Frame, type PeerId } from '../../packages/shared/src/index.js';
import type { PeerLink } from '../../packages/client/src/peer/peer-link.js';
import type { PeerNode } from '../../packages/client/src/peer/peer-node.js';
import { MemberSwarm, WRITE_BACKLOG_BYTES, type PieceStore } from '../../packages/client/src/peer/swarm.js';

/**
 * The scheduler of a member's swarm runs once per piece kept, not once per HAVE heard (a member hears
 * ~8 HAVEs per piece; a run scanned every piece for every link with a free slot). What makes that
 * enough: a link whose piece arrived asks for its next one at once, not after the piece is written, so
 * between runs every link is full or has nothing to offer, and a HAVE can only bring its own piece.
 * Checked with a fake link and a partial whose writes wait until the test lets them go (no timing).
 */
const PIECES = 16;
const PIECE_SIZE = 256 * 1024;
const LINK_REQUESTS = 4;

const randomId = (): PeerId => peerIdFromRawPublicKey(randomBytes(32));

/** What the swarm uses of a link: its id, what the peer holds, and the requests it sends. */
function fakeLink(id: PeerId, remote: Bitfield): PeerLink & { asked: number[]; outstanding: Set<number> } {
  const outstanding = new Set<number>();
  const link = {
    id, remote, announced: Bitfield.empty(PIECES), asked: [] as number[], outstanding, isClosed: false,
    get free() { return LINK_REQUESTS - outstanding.size; },
    requested: (piece: number) => outstanding.has(piece),
    request(piece: number) { outstanding.add(piece); link.asked.push(piece); },
    send: (_frame: Frame) => undefined,
    close: () => undefined,
  };
  return link as unknown as PeerLink & { asked: number[]; outstanding: Set<number> };
}

/** A partial whose writes complete only when `finish` is called. */
function heldPartial(pieces = PIECES): { partial: PieceStore; finish: () => void } {
  const held = Bitfield.empty(pieces);
  let finish!: () => void;
  const gate = new Promise<void>((resolve) => (finish = resolve));
  const partial = {
    layout: filePieces(pieces * PIECE_SIZE, PIECE_SIZE), hashes: Buffer.alloc(32 * pieces), held,
    async write(piece: number) {
      await gate;
      held.set(piece);
    },
  };
  return { partial: partial as unknown as PieceStore, finish };
}

function swarmWith(partial: PieceStore, peers: PeerId[]): MemberSwarm {
  const node = { id: randomId(), register: () => undefined, unregister: () => undefined, dial: () => undefined };
  const swarm = new MemberSwarm({
    log: pino({ level: 'silent' }), node: node as unknown as PeerNode, transfer: randomBytes(16), partial,
    toServer: () => undefined, complete: () => undefined, failed: () => undefined,
    counters: { fromServer: 0, fromPeers: 0, toPeers: 0, badPieces: 0 }, badPeer: () => undefined,
  });
  swarm.start();
  swarm.peers(peers.map((id) => ({ id, address: '127.0.0.1', port: 1 })));
  return swarm;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Hands the swarm every piece the link has been asked for and not brought, as a peer on a fast link would. */
async function bringAsked(swarm: MemberSwarm, link: ReturnType<typeof fakeLink>): Promise<void> {
  for (const piece of [...link.outstanding]) {
    link.outstanding.delete(piece);
    swarm.pieceArrived(link, piece, [Buffer.alloc(PIECE_SIZE)], () => undefined);
  }
  await turn();
}

describe('a member swarm\'s scheduling', () => {
  it('a disk slower than the links: verified pieces waiting to be written stay bounded, and the rest follow once it catches up', async () => {
    const pieces = 4 * (WRITE_BACKLOG_BYTES / PIECE_SIZE);
    const all = Bitfield.empty(pieces);
    for (let i = 0; i < pieces; i++) all.set(i);
    const peer = randomId();
    const link = fakeLink(peer, all);
    const { partial, finish } = heldPartial(pieces);
    const swarm = swarmWith(partial, [peer]);
    swarm.attach(link);
    // The link brings at once whatever it is asked; no write finishes. Before the bound every piece
    // brought freed its slot for the next, until the member held the whole file in memory.
    for (let round = 0; round < pieces && link.outstanding.size > 0; round++) await bringAsked(swarm, link);
    expect(link.outstanding.size).toBe(0);
    expect(link.asked.length).toBeGreaterThanOrEqual(WRITE_BACKLOG_BYTES / PIECE_SIZE);
    expect(link.asked.length).toBeLessThanOrEqual(WRITE_BACKLOG_BYTES / PIECE_SIZE + LINK_REQUESTS);

    finish();
    for (let round = 0; round < pieces && new Set(link.asked).size < pieces; round++) await bringAsked(swarm, link);
    expect(new Set(link.asked).size).toBe(pieces);
    await swarm.close();
  });

  it('asks a link for its next piece as soon as one arrives, before the piece is written', async () => {
    const all = Bitfield.empty(PIECES);
    for (let i = 0; i < PIECES; i++) all.set(i);
    const peer = randomId();
    const link = fakeLink(peer, all);
    const { partial, finish } = heldPartial();
    const swarm = swarmWith(partial, [peer]);
    swarm.attach(link);
    expect(link.asked).toHaveLength(LINK_REQUESTS);

    const first = link.asked[0]!;
    link.outstanding.delete(first);
    swarm.pieceArrived(link, first, [Buffer.alloc(PIECE_SIZE)], () => undefined);
    await turn();
    expect(link.asked).toHaveLength(LINK_REQUESTS + 1);
    expect(link.asked.slice(LINK_REQUESTS)).not.toContain(first);
    finish();
    await swarm.close();
  });

  it('a HAVE on a link with a free slot is asked of that link at once, and not if the piece is on its way', async () => {
    const link = fakeLink(randomId(), Bitfield.empty(PIECES));
    const other = fakeLink(randomId(), Bitfield.empty(PIECES));
    const { partial, finish } = heldPartial();
    const swarm = swarmWith(partial, [link.id, other.id]);
    swarm.attach(link);
    swarm.attach(other);
    await turn();
    expect(link.asked).toHaveLength(0);

    link.remote.set(5);
    swarm.changed(link, 5);
    await turn();
    expect(link.asked).toEqual([5]);
    // The same piece offered by a second link while the first brings it: not asked twice (no endgame yet).
    other.remote.set(5);
    swarm.changed(other, 5);
    await turn();
    expect(other.asked).toEqual([]);
    finish();
    await swarm.close();
  });
});
