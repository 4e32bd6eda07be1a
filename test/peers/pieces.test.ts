// Pieces and the manifest (PROTOCOL.md §7.4): how a file is cut, how each piece is checked, and how the
// manifest and the HELLO capability tail decode — every lying field refused before anything is allocated.

import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  Capability, choosePieceSize, decodeFrame, encodeFrame, ErrorCode, MAX_MANIFEST_PIECES, MAX_PIECE_SIZE, MIN_PIECE_SIZE,
  PieceHasher, PieceMismatch, pieceCount, PieceVerifier, PROTOCOL_VERSION, type Frame, type Manifest,
} from '../../packages/shared/src/index.js';
import { expectCode } from '../shared/helpers.js';

const sha = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest();
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function piecesOf(data: Buffer, pieceSize: number): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += pieceSize) out.push(sha(data.subarray(at, at + pieceSize)));
  return Buffer.concat(out);
}

describe('piece size', () => {
  it('is the smallest power of two from 256 KiB to 16 MiB that keeps a file within 2048 pieces', () => {
    expect(choosePieceSize(0)).toBe(MIN_PIECE_SIZE);
    expect(choosePieceSize(512 * MiB)).toBe(MIN_PIECE_SIZE);
    expect(choosePieceSize(512 * MiB + 1)).toBe(2 * MIN_PIECE_SIZE);
    expect(choosePieceSize(8 * GiB)).toBe(4 * MiB);
    expect(choosePieceSize(1024 * GiB)).toBe(MAX_PIECE_SIZE);
    expect(pieceCount(64 * MiB, choosePieceSize(64 * MiB))).toBe(256);
  });
});

describe('PieceHasher', () => {
  it('gives each piece its SHA-256 however the stream is chunked', () => {
    const data = randomBytes(3 * MIN_PIECE_SIZE + 12345);
    for (const chunk of [1000, MIN_PIECE_SIZE, MIN_PIECE_SIZE + 1, data.length]) {
      const hasher = new PieceHasher(MIN_PIECE_SIZE);
      for (let at = 0; at < data.length; at += chunk) hasher.update(data.subarray(at, at + chunk));
      expect(hasher.digest().equals(piecesOf(data, MIN_PIECE_SIZE))).toBe(true);
    }
  });

  it('lists no piece for an empty file', () => {
    expect(new PieceHasher(MIN_PIECE_SIZE).digest().length).toBe(0);
  });
});

describe('PieceVerifier', () => {
  const data = randomBytes(2 * MIN_PIECE_SIZE + 100);
  const hashes = piecesOf(data, MIN_PIECE_SIZE);

  it('accepts the right bytes and counts the verified prefix piece by piece', () => {
    const verifier = new PieceVerifier(hashes, MIN_PIECE_SIZE, data.length);
    verifier.update(data.subarray(0, MIN_PIECE_SIZE - 1));
    expect(verifier.verified).toBe(0);
    verifier.update(data.subarray(MIN_PIECE_SIZE - 1, MIN_PIECE_SIZE + 10));
    expect(verifier.verified).toBe(MIN_PIECE_SIZE);
    verifier.update(data.subarray(MIN_PIECE_SIZE + 10));
    expect(verifier.verified).toBe(data.length);
  });

  it('names the first piece whose bytes do not match, and stops the prefix before it', () => {
    const bad = Buffer.from(data);
    bad[MIN_PIECE_SIZE + 7]! ^= 1;
    const verifier = new PieceVerifier(hashes, MIN_PIECE_SIZE, data.length);
    let caught: unknown;
    try {
      verifier.update(bad);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(PieceMismatch);
    expect((caught as PieceMismatch).piece).toBe(1);
    expect((caught as PieceMismatch).code).toBe(ErrorCode.CHECKSUM);
    expect(verifier.verified).toBe(MIN_PIECE_SIZE);
  });

  it('refuses bytes past the end of the file', () => {
    const verifier = new PieceVerifier(hashes, MIN_PIECE_SIZE, data.length);
    expectCode(() => verifier.update(Buffer.concat([data, Buffer.from([0])])), ErrorCode.PROTOCOL);
  });
});

describe('MANIFEST frame', () => {
  const transfer = randomBytes(16);
  const manifest = (overrides: Partial<Manifest['entries'][number]> = {}, pieceSize = MIN_PIECE_SIZE): Frame => ({
    type: 'manifest', transfer,
    manifest: { pieceSize, entries: [{ path: 'a.iso', size: 2 * MIN_PIECE_SIZE, mode: 0o644, sha256: randomBytes(32), pieces: randomBytes(64), ...overrides }] },
  });
  const body = (frame: Frame): Buffer => encodeFrame(frame).subarray(4);

  it('round-trips', () => {
    const frame = manifest();
    expect(decodeFrame(body(frame))).toEqual(frame);
  });

  it('refuses a piece count that does not fit the size', () => {
    expectCode(() => decodeFrame(body(manifest({ pieces: randomBytes(96) }))), ErrorCode.WIRE_FIELD);
  });

  it('refuses a piece size that is not a power of two in range', () => {
    for (const pieceSize of [MIN_PIECE_SIZE / 2, MIN_PIECE_SIZE + 1, 2 * MAX_PIECE_SIZE]) {
      expectCode(() => decodeFrame(body(manifest({ size: 0, pieces: Buffer.alloc(0) }, pieceSize))), ErrorCode.WIRE_FIELD);
    }
  });

  it('refuses mode bits beyond 7777, and a count of entries other than one', () => {
    expectCode(() => decodeFrame(body(manifest({ mode: 0o100644 }))), ErrorCode.WIRE_FIELD);
    const two = body(manifest());
    const countAt = 1 + 16 + 1 + 4;
    two.writeUInt16BE(2, countAt);
    expectCode(() => decodeFrame(two), ErrorCode.WIRE_FIELD);
    two.writeUInt16BE(0, countAt);
    expectCode(() => decodeFrame(two), ErrorCode.WIRE_FIELD);
  });

  it('refuses a claim of more pieces than a manifest may list before reading them', () => {
    const size = (MAX_MANIFEST_PIECES + 1) * MIN_PIECE_SIZE;
    // Only the header: the decoder must refuse on the count, not run short reading 256 KB of hashes.
    const frame = body(manifest({ size, pieces: Buffer.alloc(0) }));
    const countAt = frame.length - 4;
    frame.writeUInt32BE(MAX_MANIFEST_PIECES + 1, countAt);
    expectCode(() => decodeFrame(frame), ErrorCode.WIRE_FIELD);
  });
});

describe('HELLO capability tail', () => {
  const hello: Frame = { type: 'hello', version: PROTOCOL_VERSION, name: 'm', caps: { flags: Capability.PIECES, peerPort: 47702 } };
  const body = encodeFrame(hello).subarray(4);

  it('round-trips, and a version-1 HELLO has none', () => {
    expect(decodeFrame(body)).toEqual(hello);
    expect(decodeFrame(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: 'm' }).subarray(4))).not.toHaveProperty('caps');
  });

  it('is exactly six bytes: fewer is WIRE_SHORT, more WIRE_TRAILING', () => {
    for (let cut = 1; cut < 6; cut++) expectCode(() => decodeFrame(body.subarray(0, body.length - cut)), ErrorCode.WIRE_SHORT);
    expectCode(() => decodeFrame(Buffer.concat([body, Buffer.from([0])])), ErrorCode.WIRE_TRAILING);
  });
});

describe('Bitfield', () => {
  it('reads piece 0 as the top bit of byte 0, and refuses a wrong length or spare bits set', async () => {
    const { Bitfield } = await import('../../packages/shared/src/index.js');
    const field = Bitfield.fromWire(Buffer.from([0x80, 0x40]), 10);
    expect([field.has(0), field.has(1), field.has(9), field.count]).toEqual([true, false, true, 2]);
    expectCode(() => Bitfield.fromWire(Buffer.from([0x80]), 10), ErrorCode.WIRE_FIELD);
    expectCode(() => Bitfield.fromWire(Buffer.from([0x80, 0x20]), 10), ErrorCode.WIRE_FIELD);
    expect(Bitfield.full(10).toWire()).toEqual(Buffer.from([0xff, 0xc0]));
  });
});
