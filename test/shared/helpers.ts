import { createPrivateKey } from 'node:crypto';
import fc from 'fast-check';
import { expect } from 'vitest';
import {
  INSTANCE_LENGTH, INVITE_PROOF_LENGTH, MAX_DATAGRAM, MAX_DESCRIPTION, MAX_GROUP_NAME, MAX_PARTIALS_PER_FRAME, MAX_REASON, MAX_SERVER_NAME,
  MAX_WIRE_NAME, NONCE_LENGTH, PROTOCOL_VERSION, SHA256_LENGTH, TRANSFER_ID_LENGTH,
} from '../../packages/shared/src/constants.js';
import { GroupcastError, type ErrorCode } from '../../packages/shared/src/errors.js';
import { signerFromPrivateKey, type Signer } from '../../packages/shared/src/identity.js';
import { LIST_COOKIE_LENGTH, NakReason, datagramLength, type ControlMessage, type GroupInfo } from '../../packages/shared/src/wire/control.js';
import { Outcome, type Frame } from '../../packages/shared/src/wire/frames.js';

/** PKCS#8 DER prefix for an Ed25519 private key; the 32-byte seed follows. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export function signerFromSeed(seed: Buffer): Signer {
  return signerFromPrivateKey(
    createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' }),
  );
}

/** Bytes start, start+1, …: easy to reproduce in any language. */
export function counting(start: number, length: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (start + i) & 0xff));
}

/** The worked examples' keys (docs/PROTOCOL.md): seeds 00..1f and 20..3f. */
export const serverSigner = signerFromSeed(counting(0x00, 32));
export const memberSigner = signerFromSeed(counting(0x20, 32));

/** Runs `fn` and returns the GroupcastError it throws; fails the test on anything else. */
export function wireError(fn: () => unknown): GroupcastError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GroupcastError);
    return err as GroupcastError;
  }
  throw new Error('expected a GroupcastError, but nothing was thrown');
}

export function expectCode(fn: () => unknown, code: ErrorCode): void {
  expect(wireError(fn).code).toBe(code);
}

/** Codes a decoder may raise for bytes off the wire. */
export const WIRE_CODES: readonly string[] = [
  'GC_ERR_WIRE_SHORT', 'GC_ERR_WIRE_TRAILING', 'GC_ERR_WIRE_MAGIC', 'GC_ERR_WIRE_VERSION', 'GC_ERR_WIRE_TYPE',
  'GC_ERR_WIRE_TOO_LARGE', 'GC_ERR_WIRE_FIELD', 'GC_ERR_WIRE_SIGNATURE',
];

/** Appends a valid signature to hand-built unsigned bytes, for datagrams the encoder would never make. */
export function signRaw(unsigned: Uint8Array, signer: Signer = memberSigner): Buffer {
  return Buffer.concat([unsigned, signer.sign(unsigned)]);
}

/** Replaces Buffers and byte views with hex, so decoded and original messages compare structurally. */
export function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

// ---- fast-check arbitraries ----

/** Drops whole code points from the end until the string fits `maxBytes` of UTF-8. */
export function truncateUtf8(s: string, maxBytes: number): string {
  const points = [...s];
  while (Buffer.byteLength(points.join('')) > maxBytes) points.pop();
  return points.join('');
}

/**
 * Any Unicode scalar value, one to four UTF-8 bytes. (fast-check's `unit: 'binary'` would do, but
 * building it costs most of a second per test file.)
 */
const codePoint = fc.oneof(
  fc.integer({ min: 0, max: 0x7f }),
  fc.integer({ min: 0x80, max: 0x7ff }),
  fc.integer({ min: 0x800, max: 0xd7ff }),
  fc.integer({ min: 0xe000, max: 0xffff }),
  fc.integer({ min: 0x1_0000, max: 0x10_ffff }),
);

/**
 * A well-formed Unicode string (no lone surrogates) of at most `maxBytes` UTF-8 bytes: any code
 * points, mostly-ASCII text, and strings exactly at the cap.
 */
export function utf8String(maxBytes: number, maxChars = maxBytes): fc.Arbitrary<string> {
  const chars = Math.min(maxBytes, maxChars);
  return fc.oneof(
    fc.array(codePoint, { maxLength: chars }).map((points) => truncateUtf8(String.fromCodePoint(...points), maxBytes)),
    fc.string({ unit: 'grapheme', maxLength: chars }).map((s) => truncateUtf8(s, maxBytes)),
    fc.string({ unit: 'binary-ascii', minLength: maxBytes, maxLength: maxBytes }),
  );
}

export const bytes = (length: number): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength: length, maxLength: length }).map((a) => Buffer.from(a));

export const u16 = fc.integer({ min: 0, max: 0xffff });
export const u64 = fc.oneof(
  fc.integer({ min: 0, max: 0xffff_ffff }),
  fc.maxSafeInteger().filter((n) => n >= 0),
  fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER),
);

const nakReason = fc.constantFrom(...(Object.values(NakReason) as NakReason[]));
const outcome = fc.constantFrom(...(Object.values(Outcome) as Outcome[]));
const op = fc.constantFrom('join' as const, 'leave' as const);
/** A join-code proof: absent, or exactly INVITE_PROOF_LENGTH bytes. */
const proof = fc.oneof(fc.constant(Buffer.alloc(0)), bytes(INVITE_PROOF_LENGTH));

const groupInfo: fc.Arbitrary<GroupInfo> = fc.record({
  name: utf8String(MAX_GROUP_NAME),
  description: utf8String(MAX_DESCRIPTION),
  open: fc.boolean(),
});

/** Every control message the encoder accepts, within the decoder's caps and one datagram. */
export const controlMessage: fc.Arbitrary<ControlMessage> = fc
  .oneof(
    fc.record({
      type: fc.constant('announce' as const),
      name: utf8String(MAX_SERVER_NAME),
      instance: bytes(INSTANCE_LENGTH),
      tcpPort: u16,
      groupCount: u16,
      groups: fc.array(utf8String(MAX_GROUP_NAME), { maxLength: 12 }),
    }),
    fc.record({
      type: fc.constant('list' as const),
      // Sixteen zero bytes mean "no cookie", so they decode as an empty one.
      cookie: fc.oneof(fc.constant(Buffer.alloc(0)), bytes(LIST_COOKIE_LENGTH).filter((b) => b.some((x) => x !== 0))),
    }),
    fc.record({ type: fc.constant('cookie' as const), request: bytes(NONCE_LENGTH), cookie: bytes(LIST_COOKIE_LENGTH) }),
    fc.record({
      type: fc.constant('groups' as const),
      request: bytes(NONCE_LENGTH),
      pages: fc.integer({ min: 1, max: 255 }),
      page: fc.nat(),
      tcpPort: u16,
      groups: fc.array(groupInfo, { maxLength: 4 }),
    }).map((m) => ({ ...m, page: m.page % m.pages })),
    fc.record({ type: fc.constant('join' as const), group: utf8String(MAX_GROUP_NAME), proof }),
    fc.record({ type: fc.constant('leave' as const), group: utf8String(MAX_GROUP_NAME) }),
    fc.record({
      type: fc.constant('ack' as const), request: bytes(NONCE_LENGTH), op, group: utf8String(MAX_GROUP_NAME), tcpPort: u16, proof,
    }),
    fc.record({
      type: fc.constant('nak' as const),
      request: bytes(NONCE_LENGTH),
      op,
      group: utf8String(MAX_GROUP_NAME),
      reason: nakReason,
      message: utf8String(MAX_REASON),
      proof,
    }),
  )
  .filter((m) => datagramLength(m) <= MAX_DATAGRAM);

export const envelope = fc.record({
  timestamp: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  nonce: bytes(NONCE_LENGTH),
});

const transfer = bytes(TRANSFER_ID_LENGTH);

export const frame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant('hello' as const), version: fc.constant(PROTOCOL_VERSION), name: utf8String(MAX_SERVER_NAME) }),
  fc.record({
    type: fc.constant('offer' as const),
    transfer,
    group: utf8String(MAX_GROUP_NAME),
    name: utf8String(MAX_WIRE_NAME, 300),
    size: u64,
    sha256: bytes(SHA256_LENGTH),
  }),
  fc.record({ type: fc.constant('accept' as const), transfer, offset: u64 }),
  fc.record({ type: fc.constant('decline' as const), transfer, outcome, message: utf8String(MAX_REASON) }),
  fc.record({
    type: fc.constant('data' as const),
    transfer,
    offset: u64,
    payload: fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
  }),
  fc.record({ type: fc.constant('result' as const), transfer, outcome, message: utf8String(MAX_REASON) }),
  fc.record({ type: fc.constant('ping' as const), time: u64 }),
  fc.record({ type: fc.constant('pong' as const), time: u64 }),
  fc.record({ type: fc.constant('cancel' as const), transfer, message: utf8String(MAX_REASON) }),
  fc.record({ type: fc.constant('partials' as const), transfers: fc.array(transfer, { maxLength: MAX_PARTIALS_PER_FRAME }) }),
);
