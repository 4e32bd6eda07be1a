import {
  allocDataFrame, ANY_PIECE, DATA_CHUNK, encodeFrame, ErrorCode, GroupcastError, shortId, throttle,
  protocolViolation, type Frame, type PieceLayout, type TokenBucket,
} from '@groupcast/shared';
import type { ByteSource } from './byte-source.js';
import type { Seat } from './tracker.js';

/** Requests a member may have queued at the server at once; more is a protocol violation (it asks for 8). */
export const MAX_QUEUED_REQUESTS = 64;
/**
 * A pulling member sends HAVE for every piece it gets, from anyone, REQUEST for what it needs, and its
 * BITFIELD again while slow peers are still bringing pieces (every 20 s); the server's own DATA to it is
 * progress too (a low --rate, a large piece). This long without any of them means it is stuck, and the
 * connection is closed (the delivery resumes on reconnect).
 */
export const PULL_IDLE_TIMEOUT_MS = 60_000;
/**
 * Pieces the server has chosen for one member under "any" requests that the member has not reported
 * (HAVE) yet: the next is chosen only when this one lands. A socket takes far more than it sends at once
 * (TLS and kernel buffers), so choosing a piece as soon as the socket took the last one committed pieces
 * seconds before they could leave — at 16 members on 25 Mbit/s a member kept a seeded piece a median
 * 2.4–2.8 s (at most 5.5 s) after the server's socket took it, and one member got 7 of 64 pieces, others
 * 2, so seeding ended when the most loaded member's downlink, shared with its peers, had taken them. One
 * at a time: 1.1–1.2 s, and t(16)/t(1) 1.51–1.60× against 1.57–1.69× in alternating runs. The member's
 * stream waits a HAVE's round trip between pieces; the server's uplink does not, other members' pieces
 * are on their way meanwhile.
 */
export const SEEDS_PER_MEMBER = 1;

export type SwarmFrame = Extract<Frame, { type: 'have' | 'bitfield' | 'request' }>;

/** What serving pieces needs from the member's connection. */
export interface PullLink {
  /** Writes a frame; resolves when the socket has room for more. */
  write(frame: Buffer): Promise<void>;
  /** Hands this transfer's HAVE, BITFIELD and REQUEST frames to `handler` until the returned function is called. */
  listen(handler: (frame: SwarmFrame) => void): () => void;
  isClosed(): boolean;
  /** Tells the member the transfer is abandoned (CANCEL). */
  cancel(reason: string): void;
  /** Progress: `held` is what the member holds by now, from anyone; `bytes` the payload just sent (0 on a HAVE). */
  sent(held: number, bytes: number): void;
}

export interface PullOptions {
  link: PullLink;
  seat: Seat;
  /** Opens what the pieces are read from: the store file, or a tree's files as one run (byte-source.ts). */
  open: () => Promise<ByteSource>;
  /** Where each piece lies in those bytes (the seat's swarm has the same). */
  layout: PieceLayout;
  /** For errors: the transfer's name. */
  name: string;
  transfer: Buffer;
  signal: AbortSignal;
  /** Settles when the member's RESULT arrives (or the wait for it fails). */
  ended: Promise<unknown>;
  /** Rate limits every DATA frame waits for: the distribution's, the server's. */
  limits: readonly TokenBucket[];
}


/**
 * The server's side of a pulled transfer: answers the member's REQUESTs in order, one piece at a time
 * as DATA frames, until its RESULT. "Any piece" gets a piece nobody holds yet (the seat chooses, once
 * fewer than SEEDS_PER_MEMBER it chose are unreported), or SEEDED when every piece has a holder; a
 * piece by index is sent whatever others hold — the server is the source of last resort. Returns the
 * payload bytes sent.
 */
export async function servePieces(options: PullOptions): Promise<number> {
  const { link, seat, signal, transfer } = options;
  const queue: number[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  /** When the member last sent a frame for this pull, or the server last finished sending it a piece. */
  let lastProgress = Date.now();
  const stir = (): void => {
    wake?.();
    wake = undefined;
  };
  const unlisten = link.listen((frame) => {
    if (!frame.transfer.equals(transfer)) {
      if (frame.type === 'request') throw protocolViolation('REQUEST for another transfer than the one being pulled');
      return;
    }
    lastProgress = Date.now();
    switch (frame.type) {
      case 'bitfield':
        seat.bitfield(frame.bits);
        link.sent(seat.heldBytes, 0);
        stir();
        return;
      case 'have':
        if (frame.piece >= seat.swarm.pieces) throw protocolViolation(`HAVE for piece ${frame.piece} of ${seat.swarm.pieces}`);
        seat.have(frame.piece);
        // Progress is what the member holds, from anyone: pieces from peers move it too.
        link.sent(seat.heldBytes, 0);
        // A seeded piece landed: the next "any" request may have its piece now.
        stir();
        return;
      case 'request':
        if (frame.piece !== ANY_PIECE && frame.piece >= seat.swarm.pieces) throw protocolViolation(`REQUEST for piece ${frame.piece} of ${seat.swarm.pieces}`);
        if (queue.length >= MAX_QUEUED_REQUESTS) throw protocolViolation(`more than ${MAX_QUEUED_REQUESTS} requests queued`);
        queue.push(frame.piece);
        stir();
    }
  });
  // The member has accepted and is ready for PEERS: it and everyone else learn the new list now.
  seat.swarm.announce();
  const end = (): void => {
    ended = true;
    stir();
  };
  // Settled either way: a rejection (the connection closed) is handled by the delivery that awaits it.
  options.ended.then(end, end);
  const onAbort = (): void => stir();
  signal.addEventListener('abort', onAbort);
  const idle = setInterval(stir, 1_000);
  idle.unref();
  const file = await options.open();
  let bytes = 0;
  try {
    for (;;) {
      if (ended) return bytes;
      if (signal.aborted) {
        const reason = String(signal.reason ?? 'cancelled');
        link.cancel(reason);
        throw new GroupcastError(ErrorCode.CLOSED, `cancelled: ${reason}`);
      }
      if (link.isClosed()) throw new GroupcastError(ErrorCode.CLOSED, 'connection closed mid-transfer');
      if (Date.now() - lastProgress > PULL_IDLE_TIMEOUT_MS) throw new GroupcastError(ErrorCode.TIMEOUT, 'member made no progress pulling pieces');
      const next = queue[0];
      if (next === undefined || (next === ANY_PIECE && seat.assigned.size >= SEEDS_PER_MEMBER)) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      queue.shift();
      const piece = next === ANY_PIECE ? seat.choose() : next;
      if (piece === undefined) {
        await link.write(encodeFrame({ type: 'seeded', transfer }));
        continue;
      }
      bytes += await sendPiece(file, options, piece);
      lastProgress = Date.now();
    }
  } finally {
    clearInterval(idle);
    signal.removeEventListener('abort', onAbort);
    unlisten();
    await file.close();
  }
}

async function sendPiece(file: ByteSource, options: PullOptions, piece: number): Promise<number> {
  const { layout, transfer, link } = options;
  const { start, end } = layout.span(piece);
  for (let at = start; at < end; at += DATA_CHUNK) {
    const chunk = Math.min(DATA_CHUNK, end - at);
    const { frame, payload } = allocDataFrame(transfer, at, chunk);
    const bytesRead = await file.read(payload, at);
    if (bytesRead !== chunk) throw new GroupcastError(ErrorCode.NOT_FOUND, `store data of ${options.name} is shorter than recorded`);
    const wait = throttle(options.limits, chunk);
    if (wait) await wait;
    // Marked before the last frame goes, not after the socket drained: the member's HAVE for it can come
    // back first (a piece of one frame, a small file's, often does), and would count as from peers.
    if (at + chunk === end) options.seat.sent(piece);
    await link.write(frame);
    link.sent(options.seat.heldBytes, chunk);
  }
  // For the scale benchmark's --scale-trace: when the socket took the piece, against when the member kept it.
  options.seat.swarm.log.debug({ piece, member: shortId(options.seat.link.id) }, 'piece sent');
  return end - start;
}
