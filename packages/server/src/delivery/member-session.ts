import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import {
  ALPN_PIECES, Bitfield, Capability, DATA_CHUNK, DATA_HEADER_LENGTH, dataFrameIn, disconnectFields, encodeFrame, ErrorCode, formatBytes,
  formatDuration, FrameReader, GroupcastError, HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, isExpectedDisconnect, manifestPieces,
  MAX_PARTIALS_REPORTED, missingRanges, msFromEnvironment, Outcome, parseDuration, PROTOCOL_VERSION, RECLAIM_REQUEST, throttle, TREE_CHUNK,
  protocolViolation, type ByteRange, type Capabilities, type Frame, type Logger, type Manifest, type PeerId, type TokenBucket,
} from '@groupcast/shared';
import type { TransferRecord } from './outbox.js';
import { concatenatedSource, fileSource, type ByteSource } from './byte-source.js';
import { servePieces, type PullLink, type SwarmFrame } from './piece-server.js';
import type { LoadedTree } from './tree-store.js';
import type { Seat, SeatLink } from './tracker.js';

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
/**
 * The member's HELLO must come this soon after the handshake. Until it does the connection is not a
 * session (nothing is offered over it), so without a deadline a silent or pinging peer would hold a
 * socket and the member's slot in the data plane for as long as it liked.
 * GC_HELLO_TIMEOUT_MS overrides it, for tests.
 */
export const HELLO_TIMEOUT_MS = msFromEnvironment(process.env.GC_HELLO_TIMEOUT_MS, 10_000);
/**
 * Output the member has not taken yet (the socket's write buffer) beyond which it is disconnected.
 * Every write waits for 'drain' once the buffer is past its high-water mark, so an honest member never
 * has more than one DATA frame, the read-ahead one and a few small frames waiting (about 0.5 MiB);
 * this is the hard ceiling behind that rule, so no member can make the server hold more for it.
 */
export const MAX_UNREAD_BYTES = 2 * 1024 * 1024;
/**
 * The progress deadline. A member that kept the server waiting on its output for at least half of a
 * window and took less than PROGRESS_FLOOR_BYTES in it is stalled, and disconnected: it holds one of
 * the `--concurrency` delivery slots while doing nothing useful (heartbeats alone do not find it, it may
 * still send frames). A floor over a window, not "no byte for N s": a member that reads one small chunk
 * a second makes some progress forever. 1 MiB in 30 s (35 KB/s) is far below any LAN link or disk, so
 * an honest member is never cut; 30 s is twice the heartbeat timeout, so a link that died is found by
 * the heartbeat first (not charged) rather than reported as a stall (charged).
 * GC_PROGRESS_WINDOW_MS overrides the window, for tests.
 */
export const PROGRESS_WINDOW_MS = msFromEnvironment(process.env.GC_PROGRESS_WINDOW_MS, 30_000);
export const PROGRESS_FLOOR_BYTES = 1024 * 1024;
/** Errors that are the member's doing: bad bytes, a frame at the wrong time, a stall. They cost the delivery an attempt. */
const MEMBER_FAULTS = new Set<string>([
  ErrorCode.PROTOCOL, ErrorCode.STALLED, ErrorCode.WIRE_SHORT, ErrorCode.WIRE_TRAILING, ErrorCode.WIRE_MAGIC,
  ErrorCode.WIRE_VERSION, ErrorCode.WIRE_TYPE, ErrorCode.WIRE_TOO_LARGE, ErrorCode.WIRE_FIELD,
]);

/** One DATA frame's worth of the file. */
interface Chunk {
  at: number;
  length: number;
}

/** The DATA frames that carry `ranges`, in order, each at most DATA_CHUNK (a piece boundary is never crossed: DATA_CHUNK divides every piece size). */
function* chunksOf(ranges: readonly ByteRange[]): Generator<Chunk> {
  for (const { start, end } of ranges) {
    for (let at = start; at < end; at += DATA_CHUNK) yield { at, length: Math.min(DATA_CHUNK, end - at) };
  }
}

/** What a transfer's bytes are read from: its store file, or a tree's files as one run over their concatenation. */
function openContent(content: string | LoadedTree): Promise<ByteSource> {
  return typeof content === 'string' ? fileSource(content) : Promise.resolve(concatenatedSource(content.sources));
}

export function isMemberFault(err: unknown): err is GroupcastError {
  return err instanceof GroupcastError && MEMBER_FAULTS.has(err.code);
}


interface Pending {
  reply: Promise<Reply>;
  /** Starts the timeout; a member that does not answer in time is stalled. */
  arm: (timeoutMs: number) => void;
  received: () => boolean;
}

export interface MemberSessionEvents {
  ready: [];
  closed: [];
  /** A DATA frame went out: the position reached and the payload bytes it carried. */
  progress: [transfer: string, position: number, bytes: number];
}

/**
 * One member's data connection, after TLS has proven who it is. It becomes a session when the member's
 * HELLO arrives (within HELLO_TIMEOUT_MS). Runs one delivery at a time: OFFER → ACCEPT(offset) |
 * DECLINE → DATA… → RESULT. Heartbeats find a dead link within the heartbeat timeout; the progress
 * deadline finds a member that is alive but stopped reading. Every frame goes out through send(), which
 * holds the member to MAX_UNREAD_BYTES. Anything that violates the protocol closes the connection.
 */
export class MemberSession extends EventEmitter<MemberSessionEvents> {
  name = '';
  /** Why the connection was closed, when it was the member's doing (isMemberFault). */
  fault: GroupcastError | undefined;
  private hello = false;
  /** The transfer offered now; only replies about it are accepted. */
  private current: string | undefined;
  /** The last transfer cancelled: a reply to it may have crossed the CANCEL, and is dropped. */
  private cancelled: string | undefined;
  private waiter: { resolve: (frame: Reply) => void; reject: (err: Error) => void } | undefined;
  /** A reply to the current transfer that came before it was asked for (RESULT in ACCEPT's chunk): at most one. */
  private early: Reply | undefined;
  /** While an OFFER waits for its answer: the pieces the member said it holds (BITFIELD before ACCEPT, §7.5). */
  private held: { transfer: string; bits: Buffer | undefined } | undefined;
  /** What the member said it can do; none unless the handshake negotiated ALPN_PIECES. */
  caps: Capabilities = { flags: 0, peerPort: 0 };
  /** Takes the swarm frames of the transfer being pulled (delivery/piece-server.ts). */
  private swarmFrames: ((frame: SwarmFrame) => void) | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private helloDeadline: NodeJS.Timeout | undefined;
  private progressCheck: NodeJS.Timeout | undefined;
  private lastHeard = Date.now();
  /** False while the member's frames wait unread because a PONG to it waits for the socket to drain. */
  private listening = true;
  /** Bytes handed to the socket; minus its writableLength, what the member has taken. */
  private written = 0;
  /** Since when a write has been waiting for 'drain', if one is. */
  private blockedAt: number | undefined;
  /** The progress window under way: when it began, what had been taken then, how long output waited in it. */
  private window = { start: Date.now(), taken: 0, waitedMs: 0 };
  private closed = false;
  private partialsReported = 0;

  constructor(
    readonly id: PeerId,
    private readonly socket: TLSSocket,
    private readonly log: Logger,
    private readonly serverName: string,
    /** Whether a transfer may still be offered to this member (its delivery is pending or sending). */
    private readonly isLive: (transfer: string) => boolean,
    /** `--heartbeat-timeout`: silent this long, the member is dead (or, if the server stopped listening to it, stalled); PINGs go out every third. */
    private readonly heartbeatTimeoutMs: number,
  ) {
    super();
  }

  get address(): string {
    return this.socket.remoteAddress ?? '';
  }

  /** The member has said HELLO: only now may anything be offered to it. */
  get ready(): boolean {
    return this.hello && !this.closed;
  }

  private get negotiatedPieces(): boolean {
    return this.socket.alpnProtocol === ALPN_PIECES;
  }

  get supportsPieces(): boolean {
    return (this.caps.flags & Capability.PIECES) !== 0;
  }

  /** It takes directory trees (TREE frames, PROTOCOL.md §7.7); trees need pieces too. */
  get supportsTrees(): boolean {
    return this.supportsPieces && (this.caps.flags & Capability.TREES) !== 0;
  }

  /** It pulls pieces, from peers and from the server, instead of taking the file as one stream. */
  get swarms(): boolean {
    return this.supportsPieces && (this.caps.flags & Capability.PEERS) !== 0;
  }

  /** It pulls trees too (TREE parts, PEERS, OFFER: PROTOCOL.md §7.7); a member that only said peers and trees takes them streamed. */
  get pullsTrees(): boolean {
    return this.swarms && this.supportsTrees && (this.caps.flags & Capability.TREE_SWARM) !== 0;
  }

  get seatLink(): SeatLink {
    return {
      id: this.id, address: this.address, peerPort: this.caps.peerPort,
      send: (frame) => {
        this.send(encodeFrame(frame));
      },
      isClosed: () => this.closed,
    };
  }

  private pullLink(transfer: string): PullLink {
    return {
      write: async (frame) => {
        if (!this.send(frame)) await this.drained();
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
    this.socket.on('drain', () => this.unblocked());
    this.send(encodeFrame({
      type: 'hello', version: PROTOCOL_VERSION, name: this.serverName,
      ...(this.negotiatedPieces ? { caps: { flags: Capability.PIECES | Capability.HELD_PIECES, peerPort: 0 } } : {}),
    }));
    this.helloDeadline = setTimeout(() => {
      this.close(protocolViolation(`no HELLO within ${formatDuration(HELLO_TIMEOUT_MS)}`));
    }, HELLO_TIMEOUT_MS);
    this.heartbeat = setInterval(() => this.beat(), Math.min(HEARTBEAT_INTERVAL_MS, this.heartbeatTimeoutMs / 3));
    this.progressCheck = setInterval(() => this.checkProgress(), PROGRESS_WINDOW_MS);
    for (const timer of [this.helloDeadline, this.heartbeat, this.progressCheck]) timer.unref();
  }

  /**
   * The one way a frame goes out. A member whose unread output would pass MAX_UNREAD_BYTES is cut off
   * instead; false means "wait for drain()" (or that the connection is closed).
   */
  private send(frame: Buffer, flushed?: () => void): boolean {
    if (this.closed) return false;
    const unread = this.socket.writableLength + frame.length;
    if (unread > MAX_UNREAD_BYTES) {
      this.close(new GroupcastError(ErrorCode.STALLED, `stalled: ${formatBytes(unread)} of output unread`));
      return false;
    }
    this.written += frame.length;
    if (this.socket.write(frame, flushed)) return true;
    this.blockedAt ??= Date.now();
    return false;
  }

  private unblocked(): void {
    if (this.blockedAt === undefined) return;
    this.window.waitedMs += Date.now() - Math.max(this.blockedAt, this.window.start);
    this.blockedAt = undefined;
  }

  /** Ends a progress window: a member that kept output waiting most of it and took less than the floor is stalled. */
  private checkProgress(): void {
    const now = Date.now();
    const taken = this.written - this.socket.writableLength;
    const waited = this.window.waitedMs + (this.blockedAt === undefined ? 0 : now - Math.max(this.blockedAt, this.window.start));
    const progress = taken - this.window.taken;
    this.window = { start: now, taken, waitedMs: 0 };
    if (waited >= PROGRESS_WINDOW_MS / 2 && progress < PROGRESS_FLOOR_BYTES) {
      this.close(new GroupcastError(
        ErrorCode.STALLED,
        `stalled: took ${formatBytes(progress)} in ${formatDuration(PROGRESS_WINDOW_MS)}, under the floor of ${formatBytes(PROGRESS_FLOOR_BYTES)}`,
      ));
    }
  }

  private beat(): void {
    if (Date.now() - this.lastHeard > this.heartbeatTimeoutMs) {
      // Not heard because the server stopped listening: the member talks but has taken nothing all this time.
      this.close(this.listening
        ? new GroupcastError(ErrorCode.TIMEOUT, 'member silent past the heartbeat timeout')
        : new GroupcastError(ErrorCode.STALLED, `stalled: took no output for ${formatDuration(this.heartbeatTimeoutMs)}`));
      return;
    }
    this.send(encodeFrame({ type: 'ping', time: Date.now() }));
  }

  private onFrame(frame: Frame): void | Promise<void> {
    if (this.closed) return; // still draining after a graceful close: nothing more is answered
    this.lastHeard = Date.now();
    if (!this.hello && frame.type !== 'hello') throw protocolViolation(`${frame.type} before HELLO`);
    switch (frame.type) {
      case 'hello':
        if (this.hello) throw protocolViolation('a second HELLO');
        this.hello = true;
        clearTimeout(this.helloDeadline);
        this.name = frame.name;
        if (this.negotiatedPieces && frame.caps) this.caps = frame.caps;
        // Before any OFFER: ask for the member's partials, so it reclaims dead ones before it checks space.
        this.send(encodeFrame(RECLAIM_REQUEST));
        this.emit('ready');
        return;
      case 'partials':
        this.reclaimPartials(frame.transfers);
        return;
      case 'ping':
        // Not answering faster than the member reads: while the PONG waits, its next frames wait too.
        return this.send(encodeFrame({ type: 'pong', time: frame.time })) ? undefined : this.listenAfterDrain();
      case 'pong':
        return;
      case 'have':
      case 'bitfield':
      case 'request':
        // A late HAVE about a transfer no longer pulled is harmless; a REQUEST for one is a violation,
        // unless it crossed that transfer's CANCEL (the member asked before it read it).
        if (frame.type === 'request' && frame.transfer.toString('hex') === this.cancelled) return;
        if (this.swarmFrames) this.swarmFrames(frame);
        else if (frame.type === 'bitfield' && this.held?.transfer === frame.transfer.toString('hex')) this.held.bits = frame.bits;
        else if (frame.type === 'request') throw protocolViolation('REQUEST for no transfer being pulled');
        return;
      case 'accept':
      case 'decline':
      case 'result':
        this.onReply(frame);
        return;
      default:
        throw protocolViolation(`member sent ${frame.type}`);
    }
  }

  /** A reply is kept only for the transfer offered now; one about anything else breaks the protocol. */
  private onReply(frame: Reply): void {
    const transfer = frame.transfer.toString('hex');
    if (transfer === this.cancelled) return;
    if (transfer !== this.current) throw protocolViolation(`${frame.type} for a transfer not offered`);
    if (this.waiter) {
      this.waiter.resolve(frame);
      return;
    }
    if (this.early) throw protocolViolation(`${frame.type} after ${this.early.type}, before the server asked`);
    this.early = frame;
  }

  /** Answers PARTIALS: CANCEL for each reported transfer this member will never be offered again. */
  private reclaimPartials(transfers: Buffer[]): void {
    this.partialsReported += transfers.length;
    if (this.partialsReported > MAX_PARTIALS_REPORTED) {
      throw protocolViolation(`more than ${MAX_PARTIALS_REPORTED} partials reported`);
    }
    for (const transfer of transfers) {
      if (this.isLive(transfer.toString('hex'))) continue;
      this.send(encodeFrame({ type: 'cancel', transfer, message: 'will not be offered again' }));
    }
  }

  /** Registers for the member's next reply about the current transfer; the timeout starts when armed. */
  private expect(): Pending {
    let timer: NodeJS.Timeout | undefined;
    let received = false;
    const reply = new Promise<Reply>((resolve, reject) => {
      const waiter = {
        resolve: (frame: Reply): void => {
          settle();
          resolve(frame);
        },
        reject: (err: Error): void => {
          settle();
          reject(err);
        },
      };
      const settle = (): void => {
        received = true;
        clearTimeout(timer);
        if (this.waiter === waiter) this.waiter = undefined;
      };
      this.waiter = waiter;
    });
    reply.catch(() => undefined);
    const early = this.early;
    if (early) {
      this.early = undefined;
      this.waiter?.resolve(early);
    }
    const arm = (timeoutMs: number): void => {
      if (received) return;
      // A member that is alive (heartbeats) but does not answer is stuck mid-transfer: only a new
      // connection resets both ends, and a re-offer on this one would break the one-at-a-time rule.
      timer = setTimeout(() => {
        this.close(new GroupcastError(ErrorCode.STALLED, `stalled: no answer within ${formatDuration(timeoutMs)}`));
      }, timeoutMs);
    };
    return { reply, arm, received: () => received };
  }

  /**
   * Offers a file and streams it from the offset the member holds. Rejects if the link fails; with the
   * member's fault (isMemberFault) when that is why.
   */
  async deliver(
    transfer: TransferRecord, content: string | LoadedTree, signal: AbortSignal, manifest?: Manifest, seat?: Seat, limits: readonly TokenBucket[] = [],
  ): Promise<DeliveryOutcome> {
    if (this.closed) throw this.fault ?? new GroupcastError(ErrorCode.CLOSED, 'connection closed');
    this.current = transfer.id;
    this.early = undefined;
    try {
      return await this.offer(transfer, content, signal, manifest, seat, limits);
    } catch (err) {
      throw this.fault ?? err;
    } finally {
      this.current = undefined;
      this.early = undefined;
      this.held = undefined;
    }
  }

  /** `content`: the store file of a single file, or a tree (its manifest and store files). */
  private async offer(
    transfer: TransferRecord, content: string | LoadedTree, signal: AbortSignal, manifest: Manifest | undefined, seat: Seat | undefined,
    limits: readonly TokenBucket[],
  ): Promise<DeliveryOutcome> {
    const id = Buffer.from(transfer.id, 'hex');
    const answer = this.expect();
    answer.arm(REPLY_TIMEOUT_MS + Math.ceil(transfer.size / REHASH_BYTES_PER_MS));
    // Only a streamed transfer with a manifest (a file's, or a tree's) can skip pieces; only until the answer comes.
    const pieces = typeof content === 'string' ? manifest : content.manifest;
    this.held = pieces && !seat && this.supportsPieces ? { transfer: transfer.id, bits: undefined } : undefined;
    // The manifest goes first, so the member has it when it checks its partial and answers the OFFER.
    if (typeof content !== 'string') await this.sendTree(id, content.bytes);
    if (manifest && this.supportsPieces) this.send(encodeFrame({ type: 'manifest', transfer: id, manifest }));
    // PEERS before the OFFER tells the member to pull this transfer instead of taking the stream (a
    // file after its MANIFEST, a tree after its TREE parts, which carry its piece hashes: §7.6, §7.7).
    if (seat) this.send(encodeFrame({ type: 'peers', transfer: id, peers: seat.swarm.peersFor(seat) }));
    this.send(encodeFrame({
      type: 'offer', transfer: id, group: transfer.group, name: transfer.name, size: transfer.size,
      sha256: Buffer.from(transfer.sha256, 'hex'),
    }));
    const first = await answer.reply;
    if (first.type === 'decline') return { outcome: first.outcome, message: first.message, offset: 0, bytesSent: 0 };
    if (first.type !== 'accept') throw this.violation(`${first.type} in answer to an offer`);
    if (first.offset > transfer.size) throw this.violation(`accept at offset ${first.offset} past the size ${transfer.size}`);
    const ranges = this.rangesToStream(transfer.size, first.offset, pieces);
    // A member that fails mid-file (a full disk) answers RESULT early: stop streaming then.
    const result = this.expect();
    const bytesSent = seat
      ? await servePieces({
        link: this.pullLink(transfer.id), seat, open: () => openContent(content), layout: seat.swarm.layout, name: transfer.name, transfer: id,
        signal, ended: result.reply, limits,
      })
      : await this.stream(transfer, id, content, ranges, signal, result.received, limits);
    result.arm(RESULT_TIMEOUT_MS);
    const last = await result.reply;
    if (last.type !== 'result') throw this.violation(`${last.type} where a result was due`);
    return { outcome: last.outcome, message: last.message, offset: first.offset, bytesSent };
  }

  /**
   * What the stream sends: from the ACCEPT's offset to the end, less the pieces the member's BITFIELD
   * before ACCEPT said it holds (a tree's pieces numbered over its files, §7.7). A BITFIELD of the wrong
   * length breaks the protocol.
   */
  private rangesToStream(size: number, offset: number, manifest: Manifest | undefined): ByteRange[] {
    const bits = this.held?.bits;
    this.held = undefined;
    if (!bits || !manifest) return offset < size ? [{ start: offset, end: size }] : [];
    const layout = manifestPieces(manifest);
    let held: Bitfield;
    try {
      held = Bitfield.fromWire(bits, layout.count);
    } catch (err) {
      throw this.violation(`BITFIELD before ACCEPT: ${(err as Error).message}`);
    }
    return missingRanges(held, layout, offset);
  }

  /**
   * Sends `ranges` of the file, in order, as DATA frames. Two frame buffers take turns: while one is being written
   * to the socket, the next chunk is read into the other (read-ahead), and a buffer is refilled only
   * once the socket has taken what it held (the write callback). The disk and the socket work at the
   * same time, and a transfer holds two frames, allocated once, whatever the file's size. Each frame
   * waits for the rate limits (`limits`: the distribution's, the server's) before it goes.
   */
  private async stream(
    transfer: TransferRecord, id: Buffer, content: string | LoadedTree, ranges: readonly ByteRange[], signal: AbortSignal, answered: () => boolean,
    limits: readonly TokenBucket[],
  ): Promise<number> {
    const file = await openContent(content);
    // Made on first use and no larger than the file needs: a small file costs one small buffer.
    const buffers: Buffer[] = [];
    const largest = Math.max(0, ...ranges.map((range) => range.end - range.start));
    const released = [Promise.resolve(), Promise.resolve()];
    const fill = async (slot: number, { at, length }: Chunk): Promise<{ frame: Buffer; end: number }> => {
      await released[slot];
      const buffer = (buffers[slot] ??= Buffer.alloc(DATA_HEADER_LENGTH + Math.min(DATA_CHUNK, largest)));
      const { frame, payload } = dataFrameIn(buffer, id, at, length);
      const bytesRead = await file.read(payload, at);
      if (bytesRead !== length) throw new GroupcastError(ErrorCode.NOT_FOUND, `store data of ${transfer.name} is shorter than recorded`);
      return { frame, end: at + length };
    };
    // A destroyed socket may never call a write back: the session's end releases the buffers as well.
    const unflushed = new Set<() => void>();
    const releaseAll = (): void => unflushed.forEach((release) => release());
    this.once('closed', releaseAll);
    const chunks = chunksOf(ranges);
    const following = (slot: number): Promise<{ frame: Buffer; end: number }> | undefined => {
      const chunk = chunks.next();
      return chunk.done ? undefined : fill(slot, chunk.value);
    };
    let sentBytes = 0;
    let slot = 0;
    let next = following(slot);
    try {
      while (next && !answered()) {
        if (signal.aborted) {
          const reason = String(signal.reason ?? 'cancelled');
          this.cancel(transfer.id, reason);
          throw new GroupcastError(ErrorCode.CLOSED, `cancelled: ${reason}`);
        }
        if (this.closed) throw new GroupcastError(ErrorCode.CLOSED, 'connection closed mid-transfer');
        const { frame, end: position } = await next;
        const length = frame.length - DATA_HEADER_LENGTH;
        const wait = throttle(limits, length);
        if (wait) await wait;
        sentBytes += length;
        const sent = slot;
        slot = 1 - slot;
        next = following(slot);
        next?.catch(() => undefined); // awaited on the next turn, or in finally
        let flowing = true;
        released[sent] = new Promise<void>((resolve) => {
          const release = (): void => {
            unflushed.delete(release);
            resolve();
          };
          unflushed.add(release);
          flowing = this.send(frame, release);
        });
        if (!flowing) await this.drained();
        this.emit('progress', transfer.id, position, length);
      }
    } finally {
      await next?.catch(() => undefined);
      this.off('closed', releaseAll);
      await file.close();
    }
    return sentBytes;
  }

  /** A tree's manifest in TREE parts, waiting for the socket between them: it may be far larger than the unread limit. */
  private async sendTree(id: Buffer, bytes: Buffer): Promise<void> {
    for (let offset = 0; offset < bytes.length; offset += TREE_CHUNK) {
      const chunk = bytes.subarray(offset, offset + TREE_CHUNK);
      if (!this.send(encodeFrame({ type: 'tree', transfer: id, total: bytes.length, offset, chunk }))) await this.drained();
      if (this.closed) throw new GroupcastError(ErrorCode.CLOSED, 'connection closed while sending a tree');
    }
  }

  private async listenAfterDrain(): Promise<void> {
    this.listening = false;
    await this.drained();
    this.listening = true;
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

  private cancel(transfer: string, reason: string): void {
    this.cancelled = transfer;
    this.waiter?.reject(new GroupcastError(ErrorCode.CLOSED, reason));
    this.send(encodeFrame({ type: 'cancel', transfer: Buffer.from(transfer, 'hex'), message: reason }));
  }

  private violation(message: string): GroupcastError {
    const err = protocolViolation(message);
    this.close(err);
    return err;
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.helloDeadline);
    clearInterval(this.heartbeat);
    clearInterval(this.progressCheck);
    if (isMemberFault(err)) this.fault = err;
    // Closed on purpose (shutdown, revoke, a newer connection) or gone as members go (stopped, crashed,
    // out of reach): news, not trouble; the delivery it cut short says so where it matters.
    if (!err || isExpectedDisconnect(err)) this.log.info(err ? disconnectFields(err) : {}, 'member connection closed');
    else this.log.warn(disconnectFields(err), 'member connection closed');
    this.waiter?.reject(new GroupcastError(ErrorCode.CLOSED, 'connection closed'));
    // End gracefully so frames already written (a CANCEL on revoke) reach the member; a peer that is
    // gone does not hold the socket open past the grace period.
    this.socket.end();
    const grace = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
    grace.unref();
    this.socket.once('close', () => clearTimeout(grace));
    this.emit('closed');
  }
}
