import { Writable } from 'node:stream';
import { MAX_FRAME } from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import { decodeFrame, type Frame } from './frames.js';

type State = 'length' | 'body';

/**
 * Turns a byte stream into frames, however TCP splits it: a state machine that reads the length
 * prefix across chunk boundaries, refuses an oversized length before buffering the body, and hands
 * each frame to an async handler. The next chunk is not taken until the handler has finished, so a
 * slow consumer (a full disk write queue) pushes back on the socket.
 */
export class FrameReader extends Writable {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private state: State = 'length';
  private need = 4;
  /**
   * Where a frame that spans chunks is copied to: a buffer of at least `length` bytes the handler gives
   * back when done with it, or undefined for a fresh one. A peer link reuses its DATA bodies this way
   * (each fresh one is garbage the collector must find later).
   */
  takeBody: ((length: number) => Buffer | undefined) | undefined;

  constructor(
    private readonly onFrame: (frame: Frame) => void | Promise<void>,
    private readonly maxFrame = MAX_FRAME,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.drainFrames().then(() => callback(), callback);
  }

  private async drainFrames(): Promise<void> {
    while (this.buffered >= this.need) {
      const bytes = this.consume(this.need);
      if (this.state === 'length') {
        const length = bytes.readUInt32BE(0);
        if (length === 0 || length > this.maxFrame) {
          throw new GroupcastError(ErrorCode.WIRE_TOO_LARGE, `frame length ${length} outside 1..${this.maxFrame}`);
        }
        this.state = 'body';
        this.need = length;
      } else {
        this.state = 'length';
        this.need = 4;
        await this.onFrame(decodeFrame(bytes));
      }
    }
  }

  private consume(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    // Not zeroed: every byte of it is copied over below (`buffered` holds at least n).
    const out = this.takeBody?.(n) ?? Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0];
      if (!head) break;
      const take = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, take);
      filled += take;
      if (take === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(take);
    }
    this.buffered -= n;
    return out;
  }
}
