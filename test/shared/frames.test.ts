import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MAX_GROUP_NAME, MAX_PARTIALS_PER_FRAME, MAX_REASON, MAX_SERVER_NAME, MAX_WIRE_NAME, PROTOCOL_VERSION,
} from '../../packages/shared/src/constants.js';
import { ErrorCode, GroupcastError } from '../../packages/shared/src/errors.js';
import { encode } from '../../packages/shared/src/wire/cursor.js';
import {
  DATA_HEADER_LENGTH, FrameType, HELLO_MAGIC, Outcome, allocDataFrame, dataFrameIn, decodeFrame, encodeFrame, type Frame,
} from '../../packages/shared/src/wire/frames.js';
import { WIRE_CODES, counting, expectCode, frame as frameArb, plain } from './helpers.js';

const TRANSFER = counting(0x10, 16);
const SHA = counting(0x80, 32);

const examples: Record<Frame['type'], Frame> = {
  hello: { type: 'hello', version: PROTOCOL_VERSION, name: 'build-07' },
  offer: { type: 'offer', transfer: TRANSFER, group: 'Designers', name: 'Présentation 2026.pdf', size: 5_000_000_123, sha256: SHA },
  accept: { type: 'accept', transfer: TRANSFER, offset: 262_144 },
  decline: { type: 'decline', transfer: TRANSFER, outcome: Outcome.NO_SPACE, message: 'need 4.7 GB, have 1.2 GB' },
  data: { type: 'data', transfer: TRANSFER, offset: 262_144, payload: Buffer.from('some file bytes') },
  result: { type: 'result', transfer: TRANSFER, outcome: Outcome.OK, message: '' },
  ping: { type: 'ping', time: Date.UTC(2026, 0, 1) },
  pong: { type: 'pong', time: Date.UTC(2026, 0, 1) },
  cancel: { type: 'cancel', transfer: TRANSFER, message: 'cancelled by the operator' },
  partials: { type: 'partials', transfers: [TRANSFER, counting(0x20, 16)] },
  peers: { type: 'peers', transfer: TRANSFER, peers: [{ id: 'UBIIG7M-FA4CYFG-THXHFFQ-TCEEPTV-BRFS4IE-WNYSSE4-Z63ZDTT-YXSGSQX', address: '10.0.0.7', port: 47702 }] },
  bitfield: { type: 'bitfield', transfer: TRANSFER, bits: Buffer.from([0xf0]) },
  have: { type: 'have', transfer: TRANSFER, piece: 3 },
  request: { type: 'request', transfer: TRANSFER, piece: 0xffff_ffff },
  seeded: { type: 'seeded', transfer: TRANSFER },
  tree: { type: 'tree', transfer: TRANSFER, total: 1_000, offset: 600, chunk: Buffer.from('the next part of a manifest') },
  manifest: {
    type: 'manifest', transfer: TRANSFER,
    manifest: { pieceSize: 262_144, entries: [{ path: 'a.bin', size: 300_000, mode: 0o644, sha256: SHA, pieces: counting(0, 64) }] },
  },
};
const exampleList = Object.values(examples);

/** The body a FrameReader hands to decodeFrame: the frame without its length prefix. */
const body = (frame: Frame): Buffer => encodeFrame(frame).subarray(4);
const str8 = (s: string): Buffer => encode((sink) => sink.str8(s));
const u64 = (n: bigint): Buffer => {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64BE(n);
  return buf;
};
const typed = (type: number, ...parts: Buffer[]): Buffer => Buffer.concat([Buffer.from([type]), ...parts]);

describe('frames: round trips', () => {
  it.each(exampleList.map((f) => [f.type, f] as const))('%s decodes to what was encoded', (_type, frame) => {
    const buf = encodeFrame(frame);
    expect(buf.readUInt32BE(0)).toBe(buf.length - 4);
    expect(buf[4]).toBe(FrameType[frame.type.toUpperCase() as keyof typeof FrameType]);
    expect(plain(decodeFrame(buf.subarray(4)))).toEqual(plain(frame));
  });

  it('every frame the encoder makes decodes to itself (property)', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        const buf = encodeFrame(frame);
        expect(buf.readUInt32BE(0)).toBe(buf.length - 4);
        expect(plain(decodeFrame(buf.subarray(4)))).toEqual(plain(frame));
      }),
      { numRuns: 500 },
    );
  });

  it('allocDataFrame lays out exactly what encodeFrame does', () => {
    fc.assert(
      fc.property(frameArb.filter((f) => f.type === 'data'), (frame) => {
        if (frame.type !== 'data') return;
        const { frame: buf, payload } = allocDataFrame(frame.transfer, frame.offset, frame.payload.length);
        expect(payload.length).toBe(frame.payload.length);
        payload.set(frame.payload);
        expect(buf.length).toBe(DATA_HEADER_LENGTH + frame.payload.length);
        expect(buf.equals(encodeFrame(frame))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it('dataFrameIn lays the same frame into a reused buffer, whatever was in it before', () => {
    const reused = Buffer.alloc(DATA_HEADER_LENGTH + 600, 0xee);
    fc.assert(
      fc.property(frameArb.filter((f) => f.type === 'data'), (frame) => {
        if (frame.type !== 'data') return;
        const { frame: buf, payload } = dataFrameIn(reused, frame.transfer, frame.offset, frame.payload.length);
        payload.set(frame.payload);
        expect(buf.equals(encodeFrame(frame))).toBe(true);
      }),
      { numRuns: 100 },
    );
    expect(() => dataFrameIn(reused, TRANSFER, 0, 601)).toThrow(RangeError);
  });

  it('fields at their caps are accepted', () => {
    const frames: Frame[] = [
      { type: 'hello', version: PROTOCOL_VERSION, name: 'n'.repeat(MAX_SERVER_NAME) },
      { type: 'offer', transfer: TRANSFER, group: 'g'.repeat(MAX_GROUP_NAME), name: 'f'.repeat(MAX_WIRE_NAME), size: Number.MAX_SAFE_INTEGER, sha256: SHA },
      { type: 'result', transfer: TRANSFER, outcome: Outcome.CHECKSUM, message: 'm'.repeat(MAX_REASON) },
      { type: 'data', transfer: TRANSFER, offset: 0, payload: Buffer.alloc(0) },
    ];
    for (const frame of frames) expect(plain(decodeFrame(body(frame)))).toEqual(plain(frame));
  });

  it('an unknown outcome reads as FAILED', () => {
    for (const outcome of [10, 100, 255]) {
      expect(decodeFrame(typed(FrameType.RESULT, TRANSFER, Buffer.from([outcome]), str8('')))).toMatchObject({ outcome: Outcome.FAILED });
      expect(decodeFrame(typed(FrameType.DECLINE, TRANSFER, Buffer.from([outcome]), str8('')))).toMatchObject({ outcome: Outcome.FAILED });
    }
  });

  it('a DATA payload is everything after the offset', () => {
    const decoded = decodeFrame(typed(FrameType.DATA, TRANSFER, u64(7n), Buffer.from([1, 2, 3])));
    expect(decoded).toMatchObject({ type: 'data', offset: 7 });
    expect(decoded.type === 'data' && Buffer.from(decoded.payload).equals(Buffer.from([1, 2, 3]))).toBe(true);
  });
});

describe('frames: rejection', () => {
  it('an empty frame is WIRE_SHORT', () => {
    expectCode(() => decodeFrame(Buffer.alloc(0)), ErrorCode.WIRE_SHORT);
  });

  // DATA and TREE end in their payload, which runs to the frame's end: cut or extended, they are tested on their own.
  it.each(exampleList.filter((f) => f.type !== 'data' && f.type !== 'tree' && f.type !== 'bitfield').map((f) => [f.type, f] as const))(
    '%s: every truncation is WIRE_SHORT',
    (_type, frame) => {
      const buf = body(frame);
      for (let length = 0; length < buf.length; length++) expectCode(() => decodeFrame(buf.subarray(0, length)), ErrorCode.WIRE_SHORT);
    },
  );

  it('data: every truncation inside the header is WIRE_SHORT', () => {
    const buf = body(examples.data);
    for (let length = 0; length < DATA_HEADER_LENGTH - 4; length++) {
      expectCode(() => decodeFrame(buf.subarray(0, length)), ErrorCode.WIRE_SHORT);
    }
  });

  it('tree: a cut inside the header is WIRE_SHORT; an empty part, or one past its total, is WIRE_FIELD', () => {
    const header = 1 + TRANSFER.length + 4 + 4;
    const buf = body(examples.tree);
    for (let length = 0; length < header; length++) expectCode(() => decodeFrame(buf.subarray(0, length)), ErrorCode.WIRE_SHORT);
    expectCode(() => decodeFrame(buf.subarray(0, header)), ErrorCode.WIRE_FIELD);
    expectCode(() => decodeFrame(Buffer.concat([buf, Buffer.alloc(1_000)])), ErrorCode.WIRE_FIELD);
  });

  // HELLO may carry a 6-byte capability tail, so its trailing-byte rule is tested on its own (test/peers).
  it.each(exampleList.filter((f) => f.type !== 'data' && f.type !== 'tree' && f.type !== 'hello' && f.type !== 'bitfield').map((f) => [f.type, f] as const))(
    '%s: trailing bytes are WIRE_TRAILING',
    (_type, frame) => {
      expectCode(() => decodeFrame(Buffer.concat([body(frame), Buffer.from([0])])), ErrorCode.WIRE_TRAILING);
      expectCode(() => decodeFrame(Buffer.concat([body(frame), Buffer.from('junk')])), ErrorCode.WIRE_TRAILING);
    },
  );

  it('an unknown frame type is WIRE_TYPE', () => {
    for (const type of [0, 18, 100, 128, 255]) {
      expectCode(() => decodeFrame(Buffer.from([type])), ErrorCode.WIRE_TYPE);
      expectCode(() => decodeFrame(typed(type, TRANSFER)), ErrorCode.WIRE_TYPE);
    }
  });

  it('HELLO: a bad magic is WIRE_MAGIC, a bad version is WIRE_VERSION', () => {
    expectCode(() => decodeFrame(typed(FrameType.HELLO, Buffer.from('HTTP'), Buffer.from([PROTOCOL_VERSION]), str8('x'))), ErrorCode.WIRE_MAGIC);
    expectCode(() => decodeFrame(typed(FrameType.HELLO, Buffer.from('gcdp'), Buffer.from([PROTOCOL_VERSION]), str8('x'))), ErrorCode.WIRE_MAGIC);
    for (const version of [0, 2, 255]) {
      expectCode(() => decodeFrame(typed(FrameType.HELLO, HELLO_MAGIC, Buffer.from([version]), str8('x'))), ErrorCode.WIRE_VERSION);
    }
  });

  it('a u64 above 2^53-1 is WIRE_FIELD; 2^53-1 itself is accepted', () => {
    const withU64 = (n: bigint): Buffer[] => [
      typed(FrameType.OFFER, TRANSFER, str8('g'), Buffer.from([0, 1, 0x66]), u64(n), SHA),
      typed(FrameType.ACCEPT, TRANSFER, u64(n)),
      typed(FrameType.DATA, TRANSFER, u64(n), Buffer.from([1])),
      typed(FrameType.PING, u64(n)),
      typed(FrameType.PONG, u64(n)),
    ];
    for (const n of [2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]) {
      for (const buf of withU64(n)) expectCode(() => decodeFrame(buf), ErrorCode.WIRE_FIELD);
    }
    for (const buf of withU64(2n ** 53n - 1n)) expect(() => decodeFrame(buf)).not.toThrow();
  });

  it('PARTIALS: more ids than a frame may list is WIRE_FIELD; a count the body does not hold is WIRE_SHORT', () => {
    const count = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
    const ids = (n: number): Buffer => Buffer.alloc(16 * n, 0x42);
    expect(() => decodeFrame(typed(FrameType.PARTIALS, count(MAX_PARTIALS_PER_FRAME), ids(MAX_PARTIALS_PER_FRAME)))).not.toThrow();
    expectCode(() => decodeFrame(typed(FrameType.PARTIALS, count(MAX_PARTIALS_PER_FRAME + 1), ids(MAX_PARTIALS_PER_FRAME + 1))), ErrorCode.WIRE_FIELD);
    expectCode(() => decodeFrame(typed(FrameType.PARTIALS, count(0xffff))), ErrorCode.WIRE_FIELD);
    expectCode(() => decodeFrame(typed(FrameType.PARTIALS, count(2), ids(1))), ErrorCode.WIRE_SHORT);
  });

  it('strings over their caps or not UTF-8 are WIRE_FIELD', () => {
    const over = (n: number): Buffer => Buffer.concat([Buffer.from([n + 1]), Buffer.alloc(n + 1, 0x61)]);
    const longName = Buffer.alloc(MAX_WIRE_NAME + 1, 0x61);
    const name16 = (content: Buffer): Buffer => Buffer.concat([Buffer.from([content.length >> 8, content.length & 0xff]), content]);
    const badUtf8 = Buffer.from([2, 0xc3, 0x28]);
    const frames: [string, Buffer][] = [
      ['hello name', typed(FrameType.HELLO, HELLO_MAGIC, Buffer.from([PROTOCOL_VERSION]), over(MAX_SERVER_NAME))],
      ['offer group', typed(FrameType.OFFER, TRANSFER, over(MAX_GROUP_NAME), name16(Buffer.from('f')), u64(1n), SHA)],
      ['offer name', typed(FrameType.OFFER, TRANSFER, str8('g'), name16(longName), u64(1n), SHA)],
      ['offer name utf-8', typed(FrameType.OFFER, TRANSFER, str8('g'), name16(Buffer.from([0xff, 0xfe])), u64(1n), SHA)],
      ['decline message', typed(FrameType.DECLINE, TRANSFER, Buffer.from([1]), over(MAX_REASON))],
      ['result message utf-8', typed(FrameType.RESULT, TRANSFER, Buffer.from([1]), badUtf8)],
      ['cancel message', typed(FrameType.CANCEL, TRANSFER, over(MAX_REASON))],
    ];
    for (const [what, buf] of frames) {
      let code: string | undefined;
      try {
        decodeFrame(buf);
      } catch (err) {
        code = (err as GroupcastError).code;
      }
      expect(code, what).toBe(ErrorCode.WIRE_FIELD);
    }
  });
});

describe('frames: totality', () => {
  function total(buf: Uint8Array): void {
    try {
      decodeFrame(buf);
    } catch (err) {
      if (!(err instanceof GroupcastError) || !WIRE_CODES.includes(err.code)) throw err;
    }
  }

  it('arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), total), { numRuns: 1000 });
  });

  it('arbitrary bodies behind every known type', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 17 }), fc.uint8Array({ maxLength: 120 }), (type, rest) => total(typed(type, Buffer.from(rest)))),
      { numRuns: 2000 },
    );
  });

  it('valid frames with random edits and cuts', () => {
    const valid = exampleList.map(body);
    fc.assert(
      fc.property(fc.constantFrom(...valid), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat(), (base, edits, cut) => {
        const buf = Buffer.from(base);
        for (const [at, value] of edits) buf[at % buf.length] = value;
        total(buf.subarray(0, cut % (buf.length + 1)));
      }),
      { numRuns: 1000 },
    );
  });
});
