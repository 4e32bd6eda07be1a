import { EventEmitter } from 'node:events';
import { open } from 'node:fs/promises';
import type { TLSSocket } from 'node:tls';
import {
  ALPN_PIECES, Capability, DATA_CHUNK, DATA_HEADER_LENGTH, dataFrameIn, encodeFrame, ErrorCode, FrameReader, GroupcastError,
  HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, Outcome, PROTOCOL_VERSION,
  type Capabilities, type Frame, type Logger, type Manifest, type PeerId,
} from '@groupcast/shared';
import type { TransferRecord } from './outbox.js';
import { servePieces, type PullLink, type SwarmFrame } from './delivery/piece-server.js';
import type { Seat, SeatLink } from './delivery/swarm.js';

export interface DeliveryOutcome {
  outcome: Outcome;
  message: string;
  /** Where the member resumed from. */
  offset: number;
  bytesSent: number;
}

type Reply = Extract<Frame, { type: 'accept' | 'decline' | 'result' }>;

const REPLY_TIMEOUT_MS = 30_000;
/**
 * Before answering an OFFER the member rehashes the partial it resumes from, which for a large file
 * takes a while: the wait grows with the size, at a slow disk's 50 MB/s. Heartbeats still find a dead link.
 */
const REHASH_BYTES_PER_MS = 50_000;
/** How long a closing connection may take to flush what was already written. */
const CLOSE_GRACE_MS = 2_000;
/** After the last byte the member fsyncs and renames; allow for a slow disk. */
const RESULT_TIMEOUT_MS = 120_000;

export interface MemberSessionEvents {
  ready: [];
  closed: [];
  /** A DATA frame went out: the position reached and the payload bytes it carried. */
  progress: [transfer: string, position: number, bytes: number];
}

/**
 * One member's data connection, after TLS has proven who it is. Runs one delivery at a time:
 * OFFER → ACCEPT(offset) | DECLINE → DATA… → RESULT. Heartbeats find a dead link within
 * HEARTBEAT_TIMEOUT_MS. Anything that violates the protocol closes the connection.
 */
export class MemberSession extends EventEmitter<MemberSessionEvents> {
  name = '';
  /** What the member said it can do; none unless the handshake negotiated ALPN_PIECES. */
  caps: Capabilities = { flags: 0, peerPort: 0 };
  /** Takes the swarm frames of the transfer being pulled (delivery/piece-server.ts). */
  private swarmFrames: ((frame: SwarmFrame) => void) | undefined;
  private readonly waiting = new Map<string, { resolve: (frame: Reply) => void; reject: (err: Error) => void }>();
  private readonly unclaimed = new Map<string, Reply>();
  private heartbeat: NodeJS.Timeout | undefined;
  private lastHeard = Date.now();
  private closed = false;

  constructor(
    readonly id: PeerId,
    private readonly socket: TLSSocket,
    private readonly log: Logger,
    private readonly serverName: string,
  ) {
    super();
  }

  get address(): string {
    return this.socket.remoteAddress ?? '';
  }

  private get negotiatedPieces(): boolean {
    return this.socket.alpnProtocol === ALPN_PIECES;
  }

  get supportsPieces(): boolean {
    return (this.caps.flags & Capability.PIECES) !== 0;
  }

  /** It pulls pieces, from peers and from the server, instead of taking the file as one stream. */
  get swarms(): boolean {
    return this.supportsPieces && (this.caps.flags & Capability.PEERS) !== 0;
  }

  get seatLink(): SeatLink {
    return {
      id: this.id, address: this.address, peerPort: this.caps.peerPort,
      send: (frame) => {
        if (!this.closed) this.socket.write(encodeFrame(frame));
      },
      isClosed: () => this.closed,
    };
  }

  private pullLink(transfer: string): PullLink {
    return {
      write: async (frame) => {
        if (!this.socket.write(frame)) await this.drained();
      },
      listen: (handler) => {
        this.swarmFrames = handler;
        return () => {
          if (this.swarmFrames === handler) this.swarmFrames = undefined;
        };
      },
      isClosed: () => this.closed,
      cancel: (reason) => this.cancel(transfer, reason),
      sent: (held, bytes) => this.emit('progress', transfer, held, bytes),
    };
  }

  start(): void {
    const reader = new FrameReader((frame) => this.onFrame(frame));
    this.socket.pipe(reader);
    reader.on('error', (err) => this.close(err));
    this.socket.on('error', (err) => this.close(err));
    this.socket.on('close', () => this.close());
    this.socket.write(encodeFrame({
      type: 'hello', version: PROTOCOL_VERSION, name: this.serverName,
      ...(this.negotiatedPieces ? { caps: { flags: Capability.PIECES, peerPort: 0 } } : {}),
    }));
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_INTERVAL_MS);
    this.heartbeat.unref();
  }

  private beat(): void {
    if (Date.now() - this.lastHeard > HEARTBEAT_TIMEOUT_MS) {
      this.close(new GroupcastError(ErrorCode.TIMEOUT, 'member silent past the heartbeat timeout'));
      return;
    }
    this.socket.write(encodeFrame({ type: 'ping', time: Date.now() }));
  }

  private onFrame(frame: Frame): void {
    if (this.closed) return; // still draining after a graceful close: nothing more is answered
    this.lastHeard = Date.now();
    switch (frame.type) {
      case 'hello':
        this.name = frame.name;
        if (this.negotiatedPieces && frame.caps) this.caps = frame.caps;
        this.emit('ready');
        return;
      case 'ping':
        this.socket.write(encodeFrame({ type: 'pong', time: frame.time }));
        return;
      case 'pong':
        return;
      case 'have':
      case 'bitfield':
      case 'request':
        // A late HAVE about a transfer no longer pulled is harmless; a REQUEST for one is a violation.
        if (this.swarmFrames) this.swarmFrames(frame);
        else if (frame.type === 'request') throw new GroupcastError(ErrorCode.PROTOCOL, 'REQUEST for no transfer being pulled');
        return;
      case 'accept':
      case 'decline':
      case 'result': {
        // RESULT can arrive in the same chunk as ACCEPT, before deliver() asks for it: keep it until
        // asked. A reply to a transfer already cancelled is kept too, and dropped at the next offer.
        const transfer = frame.transfer.toString('hex');
        const waiter = this.waiting.get(transfer);
        if (waiter) waiter.resolve(frame);
        else this.unclaimed.set(transfer, frame);
        return;
      }
      default:
        throw new GroupcastError(ErrorCode.PROTOCOL, `member sent ${frame.type}`);
    }
  }

  /** Registers for the member's next reply about a transfer; the timeout starts when armed. */
  private expect(transfer: string): { reply: Promise<Reply>; arm: (timeoutMs: number) => void; received: () => boolean } {
    let timer: NodeJS.Timeout | undefined;
    let received = false;
    const reply = new Promise<Reply>((resolve, reject) => {
      const settle = (): void => {
        received = true;
        clearTimeout(timer);
        this.waiting.delete(transfer);
      };
      this.waiting.set(transfer, {
        resolve: (frame) => {
          settle();
          resolve(frame);
        },
        reject: (err) => {
          settle();
          reject(err);
        },
      });
    });
    reply.catch(() => undefined);
    const early = this.unclaimed.get(transfer);
    if (early) {
      this.unclaimed.delete(transfer);
      this.waiting.get(transfer)?.resolve(early);
    }
    const arm = (timeoutMs: number): void => {
      if (received) return;
      // A member that is alive (heartbeats) but does not answer is stuck mid-transfer: only a new
      // connection resets both ends, and a re-offer on this one would break the one-at-a-time rule.
      timer = setTimeout(() => {
        this.close(new GroupcastError(ErrorCode.TIMEOUT, 'member did not answer in time'));
      }, timeoutMs);
    };
    return { reply, arm, received: () => received };
  }

  /** Offers a file and streams it from the offset the member holds. Rejects if the link fails. */
  async deliver(transfer: TransferRecord, path: string, signal: AbortSignal, manifest?: Manifest, seat?: Seat): Promise<DeliveryOutcome> {
    if (this.closed) throw new GroupcastError(ErrorCode.CLOSED, 'connection closed');
    const id = Buffer.from(transfer.id, 'hex');
    this.unclaimed.clear();
    const answer = this.expect(transfer.id);
    answer.arm(REPLY_TIMEOUT_MS + Math.ceil(transfer.size / REHASH_BYTES_PER_MS));
    // The manifest goes first, so the member has it when it checks its partial and answers the OFFER.
    if (manifest && this.supportsPieces) this.socket.write(encodeFrame({ type: 'manifest', transfer: id, manifest }));
    // PEERS before the OFFER tells the member to pull this transfer instead of taking the stream.
    if (manifest && seat) this.socket.write(encodeFrame({ type: 'peers', transfer: id, peers: seat.swarm.peersFor(seat) }));
    this.socket.write(encodeFrame({
      type: 'offer', transfer: id, group: transfer.group, name: transfer.name, size: transfer.size,
      sha256: Buffer.from(transfer.sha256, 'hex'),
    }));
    const first = await answer.reply;
    if (first.type === 'decline') return { outcome: first.outcome, message: first.message, offset: 0, bytesSent: 0 };
    if (first.type !== 'accept' || first.offset > transfer.size) {
      throw this.violation(`bad answer to offer: ${first.type}`);
    }
    // A member that fails mid-file (a full disk) answers RESULT early: stop streaming then.
    const result = this.expect(transfer.id);
    const bytesSent = seat && manifest
      ? await servePieces({
        link: this.pullLink(transfer.id), seat, path, size: transfer.size, pieceSize: manifest.pieceSize, transfer: id, signal, ended: result.reply,
      })
      : await this.stream(transfer, id, path, first.offset, signal, result.received);
    result.arm(RESULT_TIMEOUT_MS);
    const last = await result.reply;
    if (last.type !== 'result') throw this.violation(`expected result, got ${last.type}`);
    return { outcome: last.outcome, message: last.message, offset: first.offset, bytesSent };
  }

  /**
   * Sends the file from `from` as DATA frames. Two frame buffers take turns: while one is being written
   * to the socket, the next chunk is read into the other (read-ahead), and a buffer is refilled only
   * once the socket has taken what it held (the write callback). The disk and the socket work at the
   * same time, and a transfer holds two frames, allocated once, whatever the file's size.
   */
  private async stream(
    transfer: TransferRecord, id: Buffer, path: string, from: number, signal: AbortSignal, answered: () => boolean,
  ): Promise<number> {
    const file = await open(path, 'r');
    // Made on first use and no larger than the file needs: a small file costs one small buffer.
    const buffers: Buffer[] = [];
    const released = [Promise.resolve(), Promise.resolve()];
    const fill = async (slot: number, at: number): Promise<Buffer> => {
      await released[slot];
      const length = Math.min(DATA_CHUNK, transfer.size - at);
      const buffer = (buffers[slot] ??= Buffer.alloc(DATA_HEADER_LENGTH + Math.min(DATA_CHUNK, transfer.size - from)));
      const { frame, payload } = dataFrameIn(buffer, id, at, length);
      const { bytesRead } = await file.read(payload, 0, length, at);
      if (bytesRead !== length) throw new GroupcastError(ErrorCode.NOT_FOUND, `store file ${path} is shorter than recorded`);
      return frame;
    };
    // A destroyed socket may never call a write back: the session's end releases the buffers as well.
    const unflushed = new Set<() => void>();
    const releaseAll = (): void => unflushed.forEach((release) => release());
    this.once('closed', releaseAll);
    let position = from;
    let slot = 0;
    let next = position < transfer.size ? fill(slot, position) : undefined;
    try {
      while (next && !answered()) {
        if (signal.aborted) {
          const reason = String(signal.reason ?? 'cancelled');
          this.cancel(transfer.id, reason);
          throw new GroupcastError(ErrorCode.CLOSED, `cancelled: ${reason}`);
        }
        if (this.closed) throw new GroupcastError(ErrorCode.CLOSED, 'connection closed mid-transfer');
        const frame = await next;
        const length = frame.length - DATA_HEADER_LENGTH;
        position += length;
        const sent = slot;
        slot = 1 - slot;
        next = position < transfer.size ? fill(slot, position) : undefined;
        next?.catch(() => undefined); // awaited on the next turn, or in finally
        let flowing = true;
        released[sent] = new Promise<void>((resolve) => {
          const release = (): void => {
            unflushed.delete(release);
            resolve();
          };
          unflushed.add(release);
          flowing = this.socket.write(frame, release);
        });
        if (!flowing) await this.drained();
        this.emit('progress', transfer.id, position, length);
      }
    } finally {
      await next?.catch(() => undefined);
      this.off('closed', releaseAll);
      await file.close();
    }
    return position - from;
  }

  /** Waits for 'drain' or the session's end, and removes both listeners either way (it runs once per frame). */
  private async drained(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.off('closed', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.once('closed', done);
    });
  }

  cancel(transfer: string, reason: string): void {
    const waiter = this.waiting.get(transfer);
    waiter?.reject(new GroupcastError(ErrorCode.CLOSED, reason));
    if (!this.closed) {
      this.socket.write(encodeFrame({ type: 'cancel', transfer: Buffer.from(transfer, 'hex'), message: reason }));
    }
  }

  private violation(message: string): GroupcastError {
    const err = new GroupcastError(ErrorCode.PROTOCOL, message);
    this.close(err);
    return err;
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    if (err) this.log.warn({ err }, 'member connection closed');
    else this.log.info('member connection closed');
    for (const waiter of this.waiting.values()) waiter.reject(new GroupcastError(ErrorCode.CLOSED, 'connection closed'));
    // End gracefully so frames already written (a CANCEL on revoke) reach the member; a peer that is
    // gone does not hold the socket open past the grace period.
    this.socket.end();
    const grace = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
    grace.unref();
    this.socket.once('close', () => clearTimeout(grace));
    this.emit('closed');
  }
}
