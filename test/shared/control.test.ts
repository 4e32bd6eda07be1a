import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  INVITE_PROOF_LENGTH, MAX_DATAGRAM, MAX_DESCRIPTION, MAX_GROUP_NAME, MAX_REASON, MAX_SERVER_NAME, NONCE_LENGTH, PROTOCOL_VERSION,
} from '../../packages/shared/src/constants.js';
import { ErrorCode, GroupcastError } from '../../packages/shared/src/errors.js';
import { SIGNATURE_LENGTH } from '../../packages/shared/src/identity.js';
import {
  DatagramType, LIST_COOKIE_LENGTH, NakReason, NO_PROOF, datagramLength, decodeDatagram, encodeDatagram, type ControlMessage,
} from '../../packages/shared/src/wire/control.js';
import { encode } from '../../packages/shared/src/wire/cursor.js';
import {
  WIRE_CODES, controlMessage, counting, envelope, expectCode, memberSigner, plain, serverSigner, signRaw, wireError,
} from './helpers.js';

const T = Date.UTC(2026, 0, 1);
const NONCE = counting(0xb0, NONCE_LENGTH);
const REQUEST = counting(0xc0, NONCE_LENGTH);
/** Offsets in the envelope: magic 0–1, version 2, type 3, timestamp 4–11, nonce 12–27, key 28–59, body 60–. */
const BODY_OFFSET = 60;

const examples = {
  announce: {
    type: 'announce', name: 'Office server', instance: counting(1, 8), tcpPort: 47701, groupCount: 3,
    groups: ['Developers', 'Designers', 'Présentation'],
  },
  list: { type: 'list', cookie: counting(0x30, LIST_COOKIE_LENGTH) },
  groups: {
    type: 'groups', request: REQUEST, page: 1, pages: 2, tcpPort: 47701,
    groups: [
      { name: 'Developers', description: 'Builds and tools', open: false },
      { name: 'Everyone', description: '', open: true },
    ],
  },
  join: { type: 'join', group: 'Developers', proof: counting(0x70, INVITE_PROOF_LENGTH) },
  leave: { type: 'leave', group: 'Designers' },
  ack: { type: 'ack', request: REQUEST, op: 'join', group: 'Developers', tcpPort: 47701, proof: counting(0x90, INVITE_PROOF_LENGTH) },
  nak: { type: 'nak', request: REQUEST, op: 'leave', group: 'Ops', reason: NakReason.UNKNOWN_GROUP, message: 'no group named "Ops"', proof: NO_PROOF },
  provenNak: {
    type: 'nak', request: REQUEST, op: 'join', group: 'Developers', reason: NakReason.BAD_CODE, message: 'join code expired',
    proof: counting(0xa0, INVITE_PROOF_LENGTH),
  },
  cookie: { type: 'cookie', request: REQUEST, cookie: counting(0x30, LIST_COOKIE_LENGTH) },
} satisfies Record<ControlMessage['type'], ControlMessage> & { provenNak: ControlMessage };
const exampleList = Object.values(examples);

function encodeExample(message: ControlMessage): Buffer {
  return encodeDatagram(message, memberSigner, { timestamp: T, nonce: NONCE });
}

/** The signed part of a datagram with an arbitrary type byte and body, as a hand-rolled sender would build it. */
function unsigned(type: number, body: Uint8Array, options: { version?: number; timestamp?: bigint } = {}): Buffer {
  const header = Buffer.alloc(BODY_OFFSET);
  header.write('GC', 0, 'latin1');
  header.writeUInt8(options.version ?? PROTOCOL_VERSION, 2);
  header.writeUInt8(type, 3);
  header.writeBigUInt64BE(options.timestamp ?? BigInt(T), 4);
  NONCE.copy(header, 12);
  memberSigner.publicKey.copy(header, 28);
  return Buffer.concat([header, body]);
}

/** A str8 field holding raw bytes, for strings no encoder would write. */
function rawStr8(content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([content.length]), content]);
}

const str8 = (s: string): Buffer => encode((sink) => sink.str8(s));

describe('control datagrams: round trips', () => {
  it.each(exampleList.map((m) => [m.type, m] as const))('%s decodes to what was encoded', (_type, message) => {
    const buf = encodeExample(message);
    expect(buf.length).toBe(datagramLength(message));
    expect(buf.subarray(0, 4)).toEqual(Buffer.from([0x47, 0x43, PROTOCOL_VERSION, DatagramType[message.type.toUpperCase() as keyof typeof DatagramType]]));
    const datagram = decodeDatagram(buf);
    expect(datagram.sender).toBe(memberSigner.id);
    expect(plain(datagram)).toEqual(plain({
      sender: memberSigner.id, publicKey: memberSigner.publicKey, timestamp: T, nonce: NONCE, message,
    }));
  });

  it('every message the encoder accepts decodes to itself (property)', () => {
    fc.assert(
      fc.property(controlMessage, envelope, fc.boolean(), (message, env, asServer) => {
        const signer = asServer ? serverSigner : memberSigner;
        const buf = encodeDatagram(message, signer, env);
        expect(buf.length).toBe(datagramLength(message));
        expect(buf.length).toBeLessThanOrEqual(MAX_DATAGRAM);
        const datagram = decodeDatagram(buf);
        expect(datagram.sender).toBe(signer.id);
        expect(plain(datagram.message)).toEqual(plain(message));
        expect(datagram.timestamp).toBe(env.timestamp);
        expect(datagram.nonce.equals(env.nonce)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('strings at exactly their caps are accepted', () => {
    const max = (n: number): string => 'x'.repeat(n);
    const messages: ControlMessage[] = [
      { type: 'announce', name: max(MAX_SERVER_NAME), instance: counting(0, 8), tcpPort: 1, groupCount: 1, groups: [max(MAX_GROUP_NAME)] },
      { type: 'groups', request: REQUEST, page: 0, pages: 1, tcpPort: 1, groups: [{ name: max(MAX_GROUP_NAME), description: max(MAX_DESCRIPTION), open: true }] },
      { type: 'join', group: max(MAX_GROUP_NAME), proof: counting(0, INVITE_PROOF_LENGTH) },
      { type: 'nak', request: REQUEST, op: 'join', group: max(MAX_GROUP_NAME), reason: NakReason.OTHER, message: max(MAX_REASON), proof: counting(0, INVITE_PROOF_LENGTH) },
    ];
    for (const message of messages) expect(plain(decodeDatagram(encodeExample(message)).message)).toEqual(plain(message));
  });

  it('a string starting with U+FEFF keeps it', () => {
    const message: ControlMessage = { type: 'leave', group: '\uFEFFDevelopers' };
    expect(decodeDatagram(encodeExample(message)).message).toEqual(message);
  });

  it('the encoder refuses a message that does not fit one datagram, and a nonce of the wrong size', () => {
    const big: ControlMessage = {
      type: 'announce', name: 'big', instance: counting(0, 8), tcpPort: 1, groupCount: 40, groups: Array(40).fill('g'.repeat(40)),
    };
    expect(datagramLength(big)).toBeGreaterThan(MAX_DATAGRAM);
    expect(() => encodeExample(big)).toThrow(RangeError);
    expect(() => encodeDatagram({ type: 'list', cookie: Buffer.alloc(0) }, memberSigner, { timestamp: T, nonce: Buffer.alloc(15) })).toThrow(RangeError);
    expect(() => encodeExample({ type: 'list', cookie: Buffer.alloc(15) })).toThrow(RangeError);
    expect(() => encodeExample({ type: 'cookie', request: REQUEST, cookie: Buffer.alloc(0) })).toThrow(RangeError);
  });

  it('a LIST without a cookie is exactly as large as the COOKIE that answers it, and decodes with an empty cookie', () => {
    const bare: ControlMessage = { type: 'list', cookie: Buffer.alloc(0) };
    expect(datagramLength(bare)).toBe(datagramLength(examples.cookie));
    expect(datagramLength(bare)).toBe(datagramLength(examples.list));
    expect(plain(decodeDatagram(encodeExample(bare)).message)).toEqual(plain(bare));
    const padded = Buffer.concat([Buffer.alloc(LIST_COOKIE_LENGTH), Buffer.alloc(16, 0xff)]);
    expect(decodeDatagram(signRaw(unsigned(DatagramType.LIST, padded))).message).toMatchObject({ type: 'list', cookie: Buffer.alloc(0) });
  });

  it('tolerates values it does not know: NAK reasons read as OTHER, unknown group flags are ignored', () => {
    const nakBody = Buffer.concat([REQUEST, Buffer.from([1]), str8('Developers'), Buffer.from([200]), str8('')]);
    const nak = decodeDatagram(signRaw(unsigned(DatagramType.NAK, nakBody))).message;
    expect(nak).toMatchObject({ type: 'nak', reason: NakReason.OTHER });

    const groupsBody = Buffer.concat([REQUEST, Buffer.from([0, 1, 0xba, 0x4d, 1]), str8('A'), str8(''), Buffer.from([0xfe])]);
    const groups = decodeDatagram(signRaw(unsigned(DatagramType.GROUPS, groupsBody))).message;
    expect(groups).toMatchObject({ type: 'groups', tcpPort: 47693, groups: [{ name: 'A', description: '', open: false }] });
  });
});

describe('control datagrams: rejection', () => {
  it.each(exampleList.map((m) => [m.type, m] as const))('%s: wrong magic is WIRE_MAGIC', (_type, message) => {
    for (const index of [0, 1]) {
      const buf = encodeExample(message);
      buf[index] = 0x58;
      expectCode(() => decodeDatagram(buf), ErrorCode.WIRE_MAGIC);
    }
  });

  it('a foreign first byte is WIRE_MAGIC even when the datagram is short', () => {
    expectCode(() => decodeDatagram(Buffer.from('X')), ErrorCode.WIRE_MAGIC);
    expectCode(() => decodeDatagram(Buffer.from('GX')), ErrorCode.WIRE_MAGIC);
    expectCode(() => decodeDatagram(Buffer.from('{"type":"announce"}')), ErrorCode.WIRE_MAGIC);
  });

  it.each([0, 2, 255])('version %i is WIRE_VERSION, signed or not', (version) => {
    const signed = signRaw(unsigned(DatagramType.LIST, Buffer.alloc(0), { version }));
    expectCode(() => decodeDatagram(signed), ErrorCode.WIRE_VERSION);
    const patched = encodeExample(examples.list);
    patched[2] = version;
    expectCode(() => decodeDatagram(patched), ErrorCode.WIRE_VERSION);
  });

  it.each(exampleList.map((m) => [m.type, m] as const))('%s: every truncation is WIRE_SHORT or WIRE_SIGNATURE', (_type, message) => {
    const buf = encodeExample(message);
    for (let length = 0; length < buf.length; length++) {
      const code = wireError(() => decodeDatagram(buf.subarray(0, length))).code;
      expect(code).toBe(length < BODY_OFFSET + SIGNATURE_LENGTH ? ErrorCode.WIRE_SHORT : ErrorCode.WIRE_SIGNATURE);
    }
  });

  it('a signed body cut short is WIRE_SHORT', () => {
    const body = Buffer.concat([REQUEST, Buffer.from([1]), str8('Developers')]); // ACK missing its tcp port and proof
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.ACK, body))), ErrorCode.WIRE_SHORT);
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.JOIN, Buffer.from([5, 0x41])))), ErrorCode.WIRE_SHORT);
  });

  it('more than 1200 bytes is WIRE_TOO_LARGE, whatever the bytes', () => {
    const valid = encodeExample(examples.announce);
    expectCode(() => decodeDatagram(Buffer.concat([valid, Buffer.alloc(MAX_DATAGRAM + 1 - valid.length)])), ErrorCode.WIRE_TOO_LARGE);
    expectCode(() => decodeDatagram(Buffer.alloc(65_507, 0x47)), ErrorCode.WIRE_TOO_LARGE);
  });

  it('exactly 1200 bytes is accepted', () => {
    const message: ControlMessage = {
      type: 'announce', name: '', instance: counting(0, 8), tcpPort: 1, groupCount: 0, groups: [],
    };
    const fixed = datagramLength(message);
    const groups: string[] = [];
    let room = MAX_DATAGRAM - fixed;
    while (room > 0) {
      const take = Math.min(MAX_GROUP_NAME, room - 1);
      groups.push('g'.repeat(take));
      room -= take + 1;
    }
    const full: ControlMessage = { ...message, groups };
    expect(datagramLength(full)).toBe(MAX_DATAGRAM);
    expect(decodeDatagram(encodeExample(full)).message).toMatchObject({ groups });
  });

  it('bytes after the signature break the signature; signed trailing bytes are WIRE_TRAILING', () => {
    for (const message of exampleList) {
      expectCode(() => decodeDatagram(Buffer.concat([encodeExample(message), Buffer.from([0])])), ErrorCode.WIRE_SIGNATURE);
    }
    const joinBody = Buffer.concat([str8('Developers'), str8(''), Buffer.from([0])]);
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.JOIN, joinBody))), ErrorCode.WIRE_TRAILING);
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.LIST, Buffer.alloc(33)))), ErrorCode.WIRE_TRAILING);
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.LIST, Buffer.alloc(31)))), ErrorCode.WIRE_SHORT);
  });

  /** Where a flipped bit is caught: in the magic, the version, a timestamp pushed past 2^53-1, else the signature. */
  function flippedBitCode(index: number, bit: number): ErrorCode {
    if (index < 2) return ErrorCode.WIRE_MAGIC;
    if (index === 2) return ErrorCode.WIRE_VERSION;
    // The timestamp is read before the signature is checked: a flip that takes it past 2^53-1
    // is refused as a bad field rather than a bad signature.
    if (index === 4 || (index === 5 && bit < 3)) return ErrorCode.WIRE_FIELD;
    return ErrorCode.WIRE_SIGNATURE;
  }

  function flip(original: Buffer, index: number, bit: number): ErrorCode {
    const buf = Buffer.from(original);
    buf[index]! ^= 0x80 >> bit;
    return wireError(() => decodeDatagram(buf)).code;
  }

  it('a flipped bit anywhere is refused (every bit of a JOIN)', () => {
    const original = encodeExample(examples.join);
    for (let index = 0; index < original.length; index++) {
      for (let bit = 0; bit < 8; bit++) expect(flip(original, index, bit)).toBe(flippedBitCode(index, bit));
    }
  });

  it.each(exampleList.map((m) => [m.type, m] as const))('%s: a flipped bit in every byte is refused', (_type, message) => {
    const original = encodeExample(message);
    for (let index = 0; index < original.length; index++) {
      const bit = index % 8;
      expect(flip(original, index, bit)).toBe(flippedBitCode(index, bit));
    }
  });

  it('an unknown type with a valid signature is WIRE_TYPE', () => {
    for (const type of [0, 9, 100, 255]) {
      expectCode(() => decodeDatagram(signRaw(unsigned(type, Buffer.alloc(0)))), ErrorCode.WIRE_TYPE);
      expectCode(() => decodeDatagram(signRaw(unsigned(type, Buffer.from('future body')))), ErrorCode.WIRE_TYPE);
    }
  });

  it('a signature by another key is WIRE_SIGNATURE', () => {
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.LIST, Buffer.alloc(0)), serverSigner)), ErrorCode.WIRE_SIGNATURE);
  });

  it.each([
    ['a lone continuation byte', [0x80]],
    ['an invalid byte', [0xff]],
    ['a truncated sequence', [0x41, 0xc3]],
    ['an overlong encoding', [0xc0, 0x80]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['a code point past U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ])('invalid UTF-8 (%s) in a string field is WIRE_FIELD', (_what, bytes) => {
    const bad = rawStr8(Buffer.from(bytes));
    const bodies: [number, Buffer][] = [
      [DatagramType.JOIN, Buffer.concat([bad, Buffer.from([0])])],
      [DatagramType.LEAVE, bad],
      [DatagramType.ANNOUNCE, Buffer.concat([bad, counting(0, 8), Buffer.from([0, 1, 0, 0, 0])])],
      [DatagramType.NAK, Buffer.concat([REQUEST, Buffer.from([1]), str8('g'), Buffer.from([1]), bad])],
    ];
    for (const [type, body] of bodies) expectCode(() => decodeDatagram(signRaw(unsigned(type, body))), ErrorCode.WIRE_FIELD);
  });

  it('a string longer than its cap is WIRE_FIELD', () => {
    const over = (n: number): Buffer => rawStr8(Buffer.alloc(n + 1, 0x61));
    const groupsEntry = (name: Buffer, description: Buffer): Buffer =>
      Buffer.concat([REQUEST, Buffer.from([0, 1, 0, 1, 1]), name, description, Buffer.from([0])]);
    const bodies: [string, number, Buffer][] = [
      ['server name', DatagramType.ANNOUNCE, Buffer.concat([over(MAX_SERVER_NAME), counting(0, 8), Buffer.from([0, 1, 0, 0, 0])])],
      ['announced group', DatagramType.ANNOUNCE, Buffer.concat([str8('s'), counting(0, 8), Buffer.from([0, 1, 0, 1, 1]), over(MAX_GROUP_NAME)])],
      ['listed group', DatagramType.GROUPS, groupsEntry(over(MAX_GROUP_NAME), str8(''))],
      ['description', DatagramType.GROUPS, groupsEntry(str8('g'), over(MAX_DESCRIPTION))],
      ['join group', DatagramType.JOIN, Buffer.concat([over(MAX_GROUP_NAME), Buffer.from([0])])],
      ['leave group', DatagramType.LEAVE, over(MAX_GROUP_NAME)],
      ['ack group', DatagramType.ACK, Buffer.concat([REQUEST, Buffer.from([1]), over(MAX_GROUP_NAME), Buffer.from([0, 1])])],
      ['nak message', DatagramType.NAK, Buffer.concat([REQUEST, Buffer.from([1]), str8('g'), Buffer.from([1]), over(MAX_REASON)])],
    ];
    for (const [what, type, body] of bodies) {
      const err = wireError(() => decodeDatagram(signRaw(unsigned(type, body))));
      expect(err.code, what).toBe(ErrorCode.WIRE_FIELD);
    }
  });

  it('a proof is 0 or 16 bytes: any other length is WIRE_FIELD, and the encoder refuses it', () => {
    for (const length of [1, 15, 17, 255]) {
      const proof = Buffer.concat([Buffer.from([length]), Buffer.alloc(Math.min(length, 20))]);
      expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.JOIN, Buffer.concat([str8('g'), proof])))), ErrorCode.WIRE_FIELD);
      const ack = Buffer.concat([REQUEST, Buffer.from([1]), str8('g'), Buffer.from([0, 1]), proof]);
      expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.ACK, ack))), ErrorCode.WIRE_FIELD);
      expect(() => encodeExample({ type: 'join', group: 'g', proof: Buffer.alloc(length) })).toThrow(RangeError);
    }
    const empty = decodeDatagram(signRaw(unsigned(DatagramType.JOIN, Buffer.concat([str8('g'), Buffer.from([0])])))).message;
    expect(empty).toMatchObject({ type: 'join', group: 'g' });
    expect(empty.type === 'join' && empty.proof.length).toBe(0);
  });

  it('other bad fields are WIRE_FIELD: page not below pages, unknown op, timestamp past 2^53-1', () => {
    const groupsHeader = (page: number, pages: number): Buffer => Buffer.concat([REQUEST, Buffer.from([page, pages, 0, 1, 0])]);
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.GROUPS, groupsHeader(0, 0)))), ErrorCode.WIRE_FIELD);
    expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.GROUPS, groupsHeader(2, 2)))), ErrorCode.WIRE_FIELD);
    expect(decodeDatagram(signRaw(unsigned(DatagramType.GROUPS, groupsHeader(1, 2)))).message).toMatchObject({ page: 1, pages: 2 });
    for (const op of [0, 3, 255]) {
      const body = Buffer.concat([REQUEST, Buffer.from([op]), str8('g'), Buffer.from([0, 1])]);
      expectCode(() => decodeDatagram(signRaw(unsigned(DatagramType.ACK, body))), ErrorCode.WIRE_FIELD);
    }
    const late = signRaw(unsigned(DatagramType.LIST, Buffer.alloc(0), { timestamp: 2n ** 53n }));
    expectCode(() => decodeDatagram(late), ErrorCode.WIRE_FIELD);
    const edge = signRaw(unsigned(DatagramType.LIST, Buffer.alloc(32), { timestamp: 2n ** 53n - 1n }));
    expect(decodeDatagram(edge).timestamp).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe('control datagrams: totality', () => {
  /** decodeDatagram returns or throws a GroupcastError with a wire code; nothing else escapes. */
  function total(buf: Uint8Array): void {
    try {
      decodeDatagram(buf);
    } catch (err) {
      if (!(err instanceof GroupcastError) || !WIRE_CODES.includes(err.code)) throw err;
    }
  }

  const valid = exampleList.map(encodeExample);

  it('arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1400 }), total), { numRuns: 1000 });
  });

  it('arbitrary bytes behind a plausible header', () => {
    const header = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 200 }));
    fc.assert(
      fc.property(header, ([type, rest]) => total(Buffer.concat([Buffer.from([0x47, 0x43, PROTOCOL_VERSION, type]), rest]))),
      { numRuns: 500 },
    );
  });

  it('arbitrary bodies under a valid signature, so the body parser sees them', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 }), fc.uint8Array({ maxLength: 300 }), (type, body) =>
        total(signRaw(unsigned(type, body)))),
      { numRuns: 600 },
    );
  });

  it('valid datagrams with random edits, cuts and extensions', () => {
    const edit = fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }));
    fc.assert(
      fc.property(fc.constantFrom(...valid), fc.array(edit, { maxLength: 4 }), fc.nat(), fc.uint8Array({ maxLength: 8 }), (base, edits, cut, extra) => {
        const buf = Buffer.from(base);
        for (const [at, value] of edits) buf[at % buf.length] = value;
        total(Buffer.concat([buf.subarray(0, cut % (buf.length + 1)), extra]));
      }),
      { numRuns: 1000 },
    );
  });
});
