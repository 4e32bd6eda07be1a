import { ErrorCode, GroupcastError } from '../errors.js';

/**
 * Byte cursors for the codecs. Every read checks the bytes remaining first, so a decoder never reads
 * past its input and never allocates more than the input holds. Encoders run twice over the same
 * `Sink` interface: once to measure, once to write into a buffer allocated at exactly that size.
 */

// ignoreBOM keeps a leading U+FEFF in the string: stripping it would make decode(encode(s)) !== s.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface Sink {
  u8(value: number): void;
  u16(value: number): void;
  u32(value: number): void;
  u64(value: number): void;
  bytes(value: Uint8Array): void;
  /** A UTF-8 string behind a one-byte length. */
  str8(value: string): void;
  /** A UTF-8 string behind a two-byte length. */
  str16(value: string): void;
}

class Counter implements Sink {
  length = 0;
  u8(): void { this.length += 1; }
  u16(): void { this.length += 2; }
  u32(): void { this.length += 4; }
  u64(): void { this.length += 8; }
  bytes(value: Uint8Array): void { this.length += value.length; }
  str8(value: string): void { this.length += 1 + checkedLength(value, 0xff); }
  str16(value: string): void { this.length += 2 + checkedLength(value, 0xffff); }
}

class Writer implements Sink {
  private offset = 0;
  constructor(private readonly buf: Buffer) {}
  u8(value: number): void { this.offset = this.buf.writeUInt8(value, this.offset); }
  u16(value: number): void { this.offset = this.buf.writeUInt16BE(value, this.offset); }
  u32(value: number): void { this.offset = this.buf.writeUInt32BE(value, this.offset); }
  u64(value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`u64 out of range: ${value}`);
    this.offset = this.buf.writeBigUInt64BE(BigInt(value), this.offset);
  }
  bytes(value: Uint8Array): void {
    this.buf.set(value, this.offset);
    this.offset += value.length;
  }
  str8(value: string): void { this.u8(Buffer.byteLength(value)); this.offset += this.buf.write(value, this.offset); }
  str16(value: string): void { this.u16(Buffer.byteLength(value)); this.offset += this.buf.write(value, this.offset); }
}

function checkedLength(value: string, max: number): number {
  const length = Buffer.byteLength(value);
  if (length > max) throw new RangeError(`string of ${length} bytes exceeds ${max}`);
  return length;
}

/**
 * Cuts human-readable text (reasons, messages) to a byte budget on a character boundary, so an
 * encoder never emits a field its peer's decoder would refuse.
 */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let out = '';
  let bytes = 0;
  for (const char of text) {
    const size = Buffer.byteLength(char);
    if (bytes + size > maxBytes - 3) break;
    out += char;
    bytes += size;
  }
  return `${out}...`;
}

/** Measure, allocate once (zero-filled), write. */
export function encode(write: (sink: Sink) => void): Buffer {
  const counter = new Counter();
  write(counter);
  const buf = Buffer.alloc(counter.length);
  write(new Writer(buf));
  return buf;
}

export class Reader {
  private offset = 0;
  /** One view over the whole input: a field is read in place, with no view or copy made for it. */
  private readonly data: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.data = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get remaining(): number {
    return this.buf.length - this.offset;
  }

  get position(): number {
    return this.offset;
  }

  /** Where a field of `n` bytes starts; the reader moves past it. */
  private advance(n: number, what: string): number {
    if (n > this.remaining) {
      throw new GroupcastError(ErrorCode.WIRE_SHORT, `truncated ${what}: need ${n} bytes, have ${this.remaining}`);
    }
    const at = this.offset;
    this.offset += n;
    return at;
  }

  private take(n: number, what: string): Uint8Array {
    const at = this.advance(n, what);
    return this.buf.subarray(at, at + n);
  }

  u8(what = 'u8'): number { return this.data.getUint8(this.advance(1, what)); }
  u16(what = 'u16'): number { return this.data.getUint16(this.advance(2, what)); }
  u32(what = 'u32'): number { return this.data.getUint32(this.advance(4, what)); }

  u64(what = 'u64'): number {
    const at = this.advance(8, what);
    const high = this.data.getUint32(at);
    // 2^53-1 is the largest a number holds exactly: its high word is at most 2^21-1.
    if (high >= 2 ** 21) throw new GroupcastError(ErrorCode.WIRE_FIELD, `${what} is larger than 2^53-1`);
    return high * 2 ** 32 + this.data.getUint32(at + 4);
  }

  /** A copy, so the result never pins or aliases the input buffer. */
  bytes(n: number, what = 'bytes'): Buffer {
    return Buffer.from(this.take(n, what));
  }

  /** A view into the input, for bulk payloads that are consumed at once. */
  rest(): Uint8Array {
    return this.take(this.remaining, 'rest');
  }

  str8(what: string, max = 0xff): string {
    return this.str(this.u8(what), what, max);
  }

  str16(what: string, max = 0xffff): string {
    return this.str(this.u16(what), what, max);
  }

  private str(length: number, what: string, max: number): string {
    if (length > max) throw new GroupcastError(ErrorCode.WIRE_FIELD, `${what} is ${length} bytes, limit ${max}`);
    try {
      return utf8.decode(this.take(length, what));
    } catch (err) {
      if (err instanceof GroupcastError) throw err;
      throw new GroupcastError(ErrorCode.WIRE_FIELD, `${what} is not valid UTF-8`, { cause: err });
    }
  }

  /** Trailing bytes are an error: a message is exactly as long as its fields. */
  end(what: string): void {
    if (this.remaining !== 0) {
      throw new GroupcastError(ErrorCode.WIRE_TRAILING, `${this.remaining} trailing bytes after ${what}`);
    }
  }
}
