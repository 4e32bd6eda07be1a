import { ErrorCode, GroupcastError } from './errors.js';

/**
 * Which pieces a peer holds: bit `i` (most significant bit of byte i/8 first, as BitTorrent) is piece i.
 * Spare bits in the last byte are zero; a BITFIELD from the wire with any set, or of the wrong length,
 * is refused.
 */
export class Bitfield {
  private held = 0;

  private constructor(
    readonly length: number,
    private readonly bits: Buffer,
  ) {
    for (let i = 0; i < length; i++) if (this.has(i)) this.held++;
  }

  static empty(length: number): Bitfield {
    return new Bitfield(length, Buffer.alloc(Math.ceil(length / 8)));
  }

  static full(length: number): Bitfield {
    const field = Bitfield.empty(length);
    for (let i = 0; i < length; i++) field.set(i);
    return field;
  }

  static fromWire(bits: Uint8Array, length: number): Bitfield {
    if (bits.length !== Math.ceil(length / 8)) {
      throw new GroupcastError(ErrorCode.WIRE_FIELD, `BITFIELD of ${bits.length} bytes for ${length} pieces`);
    }
    const spare = length % 8 === 0 ? 0 : 0xff >> (length % 8);
    if (bits.length > 0 && (bits[bits.length - 1]! & spare) !== 0) throw new GroupcastError(ErrorCode.WIRE_FIELD, 'BITFIELD sets bits past the last piece');
    return new Bitfield(length, Buffer.from(bits));
  }

  has(index: number): boolean {
    return index >= 0 && index < this.length && (this.bits[index >> 3]! & (0x80 >> (index & 7))) !== 0;
  }

  /** Returns false if the piece was held already. */
  set(index: number): boolean {
    if (index < 0 || index >= this.length) throw new RangeError(`piece ${index} of ${this.length}`);
    if (this.has(index)) return false;
    this.bits[index >> 3]! |= 0x80 >> (index & 7);
    this.held++;
    return true;
  }

  get count(): number {
    return this.held;
  }

  get complete(): boolean {
    return this.held === this.length;
  }

  toWire(): Buffer {
    return Buffer.from(this.bits);
  }
}
