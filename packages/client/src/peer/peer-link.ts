import type { TLSSocket } from 'node:tls';
import {
  Bitfield, DATA_CHUNK, DATA_HEADER_LENGTH, dataFrameIn, encodeFrame, ErrorCode, FrameReader, GroupcastError, HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_TIMEOUT_MS, MAX_FRAME, throttle,
  protocolViolation, type Frame, type Logger, type PeerId, type PieceLayout, type TokenBucket,
} from '@groupcast/shared';
import { PieceAssembly } from '../receive/piece-assembly.js';

/** Pieces one link may have requested from its peer at once; a peer asking more of us is cut off. */
export const LINK_REQUESTS = 4;
/** ...and no more bytes than this in requested pieces (one piece at least): what a link buffers to verify. */
const LINK_REQUEST_BYTES = 4 * 1024 * 1024;
/** Requests a peer may have queued with us; it asks for at most LINK_REQUESTS, so more is a violation. */
const MAX_SERVE_QUEUE = 2 * LINK_REQUESTS;
/** Output a link may have buffered (frames written but not yet taken by the socket); past it the peer is not reading: cut. */
export const MAX_LINK_BUFFERED = 8 * 1024 * 1024;
/**
 * A link with requests outstanding that brings no bytes for this long has its oldest request asked of
 * another source; the link is dropped after two in a row without DATA between. Progress, not completion:
 * a peer serving at a low `--peer-rate` to several links takes far longer than this for our four
 * pieces, but it is moving.
 */
export const PIECE_TIMEOUT_MS = 10_000;
const SLOW_STRIKES = 2;
/**
 * Bytes from a peer that count as progress against PIECE_TIMEOUT_MS: a TLS record's worth, more than
 * heartbeats and HAVEs bring, so a peer that only pings does not hold our requests (and if it pads with
 * frames to look busy, the endgame takes the last pieces it holds from someone else).
 */
const PROGRESS_BYTES = 16 * 1024;
/**
 * DATA bodies a link keeps for reuse once their piece is written (and hashed, if from memory). Every
 * body taken fresh is an ArrayBuffer the collector only counts, and one held across a write outlives
 * the young generation's collections (the daemons run a 1 MiB one, bench/README.md "Session 21"), so it
 * is freed only by a full collection; reused ones are not new. A link has up to LINK_REQUESTS pieces
 * arriving and more waiting on the disk (the swarm's WRITE_BACKLOG_BYTES), so 2 spares left a fresh
 * body for one frame in five and a member receiving 1 GiB from peers ran 77–90 full collections; with 8,
 * 1–20. Each holds one DATA frame (≤ MAX_FRAME bytes), so a link keeps at most ~2 MiB; a frame under half
 * of that (a short last chunk, or a small frame split across TLS records) gets a fresh buffer, so that
 * small frames never take one of these.
 */
const SPARE_BODIES = 8;
const BODY_BYTES = MAX_FRAME;

/** What a link needs from the transfer's swarm. */
export interface LinkOwner {
  readonly transfer: Buffer;
  /** Where each piece lies in the transfer's bytes (a file's, or a tree's concatenation). */
  readonly layout: PieceLayout;
  /** Every piece's SHA-256, in the layout's numbering. */
  readonly hashes: Buffer;
  readonly held: Bitfield;
  /** Reads held bytes (verified when they were written) into a DATA frame's payload. */
  readInto(position: number, into: Buffer): Promise<void>;
  /**
   * A piece arrived and matches its hash: its bytes, as they came, and what gives their buffers back to
   * the link for its next frames, to be called once nothing reads them any more (never, at the worst).
   */
  pieceArrived(link: PeerLink, piece: number, chunks: readonly Uint8Array[], release: () => void): void;
  /** A piece arrived whose hash is wrong: the peer is hostile or broken. */
  badPiece(link: PeerLink, piece: number): void;
  /** A request timed out or the link went: the piece is free to ask elsewhere. */
  released(link: PeerLink, piece: number): void;
  /** The peer said HAVE for a piece it did not hold before. */
  changed(link: PeerLink, piece: number): void;
  served(bytes: number): void;
  closed(link: PeerLink): void;
}


/**
 * One member-to-member connection for one transfer, after both sides said HELLO and BITFIELD. Either
 * side asks the other for pieces (REQUEST), gets them as DATA in order within the piece, checks each
 * piece before it is kept, and says HAVE for every new piece. Every bound of the server connection
 * holds here too: capped frames, bounded queues and output, heartbeats, per-piece timeouts.
 */
export class PeerLink {
  readonly remote: Bitfield;
  /**
   * What the peer was told this side holds, in the handshake's BITFIELD. Pieces kept between that and
   * the link opening were never announced over it (HAVE goes to open links): the swarm sends them on attach.
   */
  readonly announced: Bitfield;
  /** Requested pieces, oldest first (the peer serves them in order). */
  private readonly inbound = new Map<number, PieceAssembly>();
  /** Armed while requests are outstanding; refreshed by every chunk of bytes from the peer. */
  private readonly stall: NodeJS.Timeout;
  /** Bytes from the peer since the stall timer was last refreshed. */
  private progress = 0;
  /** Bytes from the peer since the link opened. */
  bytesIn = 0;
  private readonly serveQueue: number[] = [];
  private serving = false;
  /** The two frame buffers serve() takes turns with, made on first use, and when each is free again. */
  private readonly frames: Buffer[] = [];
  private readonly flushed: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
  private turn = 0;
  /** Releases of frames written but not yet taken: a destroyed socket may never call them back. */
  private readonly unflushed = new Set<() => void>();
  private strikes = 0;
  private lastHeard = Date.now();
  private readonly heartbeat: NodeJS.Timeout;
  private closedFlag = false;
  /** DATA bodies given back, free for the next frames; and every one this link handed out. */
  private readonly spareBodies = new Set<ArrayBuffer>();
  private readonly ownBodies = new WeakSet<ArrayBuffer>();

  constructor(
    readonly id: PeerId,
    private readonly socket: TLSSocket,
    private readonly reader: FrameReader,
    private readonly owner: LinkOwner,
    private readonly log: Logger,
    remoteBits: Buffer,
    /** `--peer-rate`: what this member uploads to all its peers together; every DATA frame served waits for it. */
    private readonly limits: readonly TokenBucket[],
    /** The BITFIELD this side sent in the handshake. */
    sentBits: Buffer,
  ) {
    this.remote = Bitfield.fromWire(remoteBits, owner.held.length);
    reader.takeBody = (length) => this.takeBody(length);
    this.announced = Bitfield.fromWire(sentBits, owner.held.length);
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_INTERVAL_MS);
    this.heartbeat.unref();
    // Refreshed rather than set per request (a cleared timer cannot be refreshed): firing with nothing outstanding does nothing.
    this.stall = setTimeout(() => this.stalled(), PIECE_TIMEOUT_MS);
    this.stall.unref();
    // Bytes, not frames: at a low rate one 256 KiB DATA frame alone can take longer than the timeout.
    socket.on('data', (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      this.progress += chunk.length;
      if (this.progress < PROGRESS_BYTES) return;
      this.progress = 0;
      if (this.inbound.size > 0) this.stall.refresh();
    });
    socket.on('close', () => this.close());
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  get free(): number {
    return Math.min(LINK_REQUESTS, Math.max(1, Math.floor(LINK_REQUEST_BYTES / this.owner.layout.pieceSize))) - this.inbound.size;
  }

  requested(piece: number): boolean {
    return this.inbound.has(piece);
  }

  /** Frames after the handshake, from the reader the node set up. */
  onFrame(frame: Frame): void | Promise<void> {
    if (this.closedFlag) return;
    this.lastHeard = Date.now();
    if ('transfer' in frame && !frame.transfer.equals(this.owner.transfer)) throw protocolViolation(`${frame.type} for another transfer`);
    switch (frame.type) {
      case 'have':
        if (frame.piece >= this.remote.length) throw protocolViolation(`HAVE for piece ${frame.piece} of ${this.remote.length}`);
        if (this.remote.set(frame.piece)) this.owner.changed(this, frame.piece);
        return;
      case 'request':
        return this.queueServe(frame.piece);
      case 'data':
        return this.data(frame.offset, frame.payload);
      case 'ping':
        this.send({ type: 'pong', time: frame.time });
        return;
      case 'pong':
        return;
      default:
        throw protocolViolation(`peer sent ${frame.type}`);
    }
  }

  send(frame: Frame): void {
    this.write(encodeFrame(frame));
  }

  private write(buf: Buffer, flushed?: () => void): boolean {
    if (this.closedFlag) return false;
    const flowing = this.socket.write(buf, flushed);
    if (this.socket.writableLength > MAX_LINK_BUFFERED) this.close(protocolViolation('peer is not reading: output buffer full'));
    return flowing;
  }

  /** Writes a frame from buffer `slot`; the slot is free again when the socket has taken it, or the link has closed. */
  private writeFrame(slot: number, frame: Buffer): boolean {
    let flowing = false;
    this.flushed[slot] = new Promise<void>((resolve) => {
      const release = (): void => {
        this.unflushed.delete(release);
        resolve();
      };
      this.unflushed.add(release);
      flowing = this.write(frame, release);
      if (this.closedFlag) release();
    });
    return flowing;
  }

  request(piece: number): void {
    const { start, end } = this.owner.layout.span(piece);
    if (this.inbound.size === 0) this.stall.refresh();
    this.inbound.set(piece, new PieceAssembly(piece, start, end - start));
    this.send({ type: 'request', transfer: this.owner.transfer, piece });
  }

  /** No bytes for PIECE_TIMEOUT_MS with requests outstanding: the oldest is asked elsewhere. */
  private stalled(): void {
    const oldest = this.inbound.keys().next();
    if (oldest.done || this.closedFlag) return;
    this.inbound.delete(oldest.value);
    this.log.info({ piece: oldest.value }, 'piece request timed out; asking elsewhere');
    this.owner.released(this, oldest.value);
    if (++this.strikes >= SLOW_STRIKES) this.close(new GroupcastError(ErrorCode.TIMEOUT, 'peer too slow'));
    else if (this.inbound.size > 0) this.stall.refresh();
  }

  private data(offset: number, payload: Uint8Array): void {
    if (offset >= this.owner.layout.size) throw protocolViolation(`DATA at ${offset}, past the transfer's ${this.owner.layout.size} bytes`);
    const piece = this.owner.layout.pieceAt(offset);
    const assembly = this.inbound.get(piece);
    // Bytes of a piece that timed out may still be on their way: drop them.
    if (!assembly) return;
    assembly.add(offset, payload);
    this.strikes = 0;
    if (!assembly.complete) return;
    this.inbound.delete(piece);
    if (!assembly.matches(this.owner.hashes)) {
      this.owner.badPiece(this, piece);
      return;
    }
    // Once only: a body given back twice could be handed to two frames at once.
    let given = false;
    this.owner.pieceArrived(this, piece, assembly.chunks, () => {
      if (given) return;
      given = true;
      this.giveBack(assembly.chunks);
    });
  }

  private takeBody(length: number): Buffer | undefined {
    if (length > BODY_BYTES || length < BODY_BYTES / 2) return undefined;
    let body = this.spareBodies.values().next().value;
    if (body) this.spareBodies.delete(body);
    else {
      body = new ArrayBuffer(BODY_BYTES);
      this.ownBodies.add(body);
    }
    return Buffer.from(body, 0, length);
  }

  /** The buffers of a piece's chunks are free again: those this link handed out are kept for its next frames. */
  private giveBack(chunks: readonly Uint8Array[]): void {
    for (const chunk of chunks) {
      if (this.closedFlag || this.spareBodies.size >= SPARE_BODIES) return;
      if (this.ownBodies.has(chunk.buffer as ArrayBuffer)) this.spareBodies.add(chunk.buffer as ArrayBuffer);
    }
  }

  private queueServe(piece: number): void {
    if (!this.owner.held.has(piece)) throw protocolViolation(`REQUEST for piece ${piece}, which was never offered`);
    if (this.serveQueue.length >= MAX_SERVE_QUEUE) throw protocolViolation(`more than ${MAX_SERVE_QUEUE} requests queued`);
    this.serveQueue.push(piece);
    if (!this.serving) void this.serve().catch((err: unknown) => this.close(err as Error));
  }

  /**
   * Sends queued pieces one at a time, each chunk read from the partial straight into a DATA frame,
   * waiting for the socket to drain. Two frame buffers per link take turns, each filled again only once
   * the socket has taken what it held (the write callback), as the server's stream does: no buffer, copy
   * or garbage per chunk.
   */
  private async serve(): Promise<void> {
    this.serving = true;
    const { layout, transfer } = this.owner;
    try {
      for (let piece = this.serveQueue.shift(); piece !== undefined && !this.closedFlag; piece = this.serveQueue.shift()) {
        const { start, end } = layout.span(piece);
        const length = end - start;
        for (let at = 0; at < length && !this.closedFlag; at += DATA_CHUNK) {
          const chunk = Math.min(DATA_CHUNK, length - at);
          const slot = this.turn;
          this.turn = 1 - slot;
          await this.flushed[slot];
          if (this.closedFlag) return;
          const buffer = (this.frames[slot] ??= Buffer.alloc(DATA_HEADER_LENGTH + Math.min(DATA_CHUNK, layout.size)));
          const { frame, payload } = dataFrameIn(buffer, transfer, start + at, chunk);
          await this.owner.readInto(start + at, payload);
          const wait = throttle(this.limits, chunk);
          if (wait) await wait;
          if (!this.writeFrame(slot, frame)) await this.drained();
          this.owner.served(chunk);
        }
      }
    } finally {
      this.serving = false;
    }
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
  }

  private beat(): void {
    if (Date.now() - this.lastHeard > HEARTBEAT_TIMEOUT_MS) {
      this.close(new GroupcastError(ErrorCode.TIMEOUT, 'peer silent past the heartbeat timeout'));
      return;
    }
    this.send({ type: 'ping', time: Date.now() });
  }

  close(err?: Error): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    clearInterval(this.heartbeat);
    if (err) this.log.info({ err }, 'peer link closed');
    clearTimeout(this.stall);
    this.unflushed.forEach((release) => release());
    this.spareBodies.clear();
    for (const piece of this.inbound.keys()) this.owner.released(this, piece);
    this.inbound.clear();
    this.reader.destroy();
    this.socket.destroy();
    this.owner.closed(this);
  }
}
