import { once } from 'node:events';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DATA_CHUNK, MAX_FRAME, PROTOCOL_VERSION } from '../../packages/shared/src/constants.js';
import { ErrorCode, GroupcastError } from '../../packages/shared/src/errors.js';
import { FrameReader } from '../../packages/shared/src/wire/frame-reader.js';
import { Outcome, encodeFrame, type Frame } from '../../packages/shared/src/wire/frames.js';
import { counting, frame as frameArb, plain } from './helpers.js';

const TRANSFER = counting(0x10, 16);
const frames: Frame[] = [
  { type: 'hello', version: PROTOCOL_VERSION, name: 'group-server' },
  { type: 'offer', transfer: TRANSFER, group: 'Developers', name: 'build.tar.gz', size: 40, sha256: counting(0x80, 32) },
  { type: 'data', transfer: TRANSFER, offset: 0, payload: counting(0, 30) },
  { type: 'ping', time: 1 },
  { type: 'data', transfer: TRANSFER, offset: 30, payload: counting(30, 10) },
  { type: 'cancel', transfer: TRANSFER, message: 'stop' },
  { type: 'result', transfer: TRANSFER, outcome: Outcome.OK, message: '' },
];
const stream = Buffer.concat(frames.map(encodeFrame));

/** Feeds the chunks one write at a time, ends the stream, and returns the frames the handler saw. */
async function readAll(chunks: Buffer[]): Promise<unknown[]> {
  const seen: unknown[] = [];
  const reader = new FrameReader((frame) => {
    seen.push(plain(frame));
  });
  for (const chunk of chunks) reader.write(chunk);
  reader.end();
  await once(reader, 'finish');
  return seen;
}

/** Resolves with the first 'error' the reader emits. */
function firstError(reader: FrameReader): Promise<GroupcastError> {
  return new Promise((resolve) => reader.once('error', (err) => resolve(err as GroupcastError)));
}

function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const point of [...points, buf.length]) {
    if (point > from) chunks.push(buf.subarray(from, point));
    from = Math.max(from, point);
  }
  return chunks;
}

describe('FrameReader', () => {
  const expected = frames.map(plain);

  it('reads a stream written whole', async () => {
    expect(await readAll([stream])).toEqual(expected);
  });

  it('reads a stream split at every byte boundary', async () => {
    for (let cut = 1; cut < stream.length; cut++) {
      expect(await readAll([stream.subarray(0, cut), stream.subarray(cut)])).toEqual(expected);
    }
  });

  it('reads a stream written one byte at a time', async () => {
    expect(await readAll([...stream].map((byte) => Buffer.from([byte])))).toEqual(expected);
  });

  it('reads random frames in random chunkings (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), async (list, cuts) => {
        const bytes = Buffer.concat(list.map(encodeFrame));
        expect(await readAll(split(bytes, cuts))).toEqual(list.map(plain));
      }),
      { numRuns: 100 },
    );
  });

  it('refuses an oversized length from the header alone, before any body arrives', async () => {
    const reader = new FrameReader(() => undefined);
    const error = firstError(reader);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME + 1);
    reader.write(header);
    const err = await error;
    expect(err).toBeInstanceOf(GroupcastError);
    expect(err.code).toBe(ErrorCode.WIRE_TOO_LARGE);
  });

  it('refuses a length over a custom cap, and a zero length', async () => {
    for (const [length, cap] of [[101, 100], [0xffff_ffff, MAX_FRAME], [0, MAX_FRAME]] as const) {
      const reader = new FrameReader(() => undefined, cap);
      const error = firstError(reader);
      const header = Buffer.alloc(4);
      header.writeUInt32BE(length);
      reader.write(header.subarray(0, 2));
      reader.write(header.subarray(2));
      expect((await error).code).toBe(ErrorCode.WIRE_TOO_LARGE);
    }
  });

  it('takes a frame of exactly MAX_FRAME bytes (a full DATA chunk fits)', async () => {
    const payload = Buffer.alloc(MAX_FRAME - 1 - 16 - 8, 7);
    expect(payload.length).toBeGreaterThanOrEqual(DATA_CHUNK);
    const big: Frame = { type: 'data', transfer: TRANSFER, offset: 0, payload };
    const seen = await readAll([encodeFrame(big)]);
    expect(seen).toEqual([plain(big)]);
  });

  it('copies a frame that spans chunks into the buffer takeBody gives (a peer link reuses its DATA bodies)', async () => {
    const payload = Buffer.alloc(64 * 1024, 9);
    const frame: Frame = { type: 'data', transfer: TRANSFER, offset: 0, payload };
    const bytes = encodeFrame(frame);
    const given = Buffer.alloc(bytes.length);
    const payloads: Uint8Array[] = [];
    const reader = new FrameReader((f) => {
      if (f.type === 'data') payloads.push(f.payload);
    });
    reader.takeBody = (length) => given.subarray(0, length);
    const half = bytes.length >> 1;
    await new Promise<void>((resolve) => reader.write(bytes.subarray(0, half), () => resolve()));
    await new Promise<void>((resolve) => reader.write(bytes.subarray(half), () => resolve()));
    expect(payloads).toHaveLength(1);
    expect(Buffer.from(payloads[0]!).equals(payload)).toBe(true);
    // Compared as a boolean: a failing toBe would print two 64 KiB buffers, which takes vitest half a minute.
    expect(payloads[0]!.buffer === given.buffer, 'the payload lies in the given buffer').toBe(true);
  });

  it('errors with the decoder code when a frame body is bad', async () => {
    const reader = new FrameReader(() => undefined);
    const error = firstError(reader);
    reader.write(Buffer.from([0, 0, 0, 2, 0xee, 0]));
    expect((await error).code).toBe(ErrorCode.WIRE_TYPE);
  });

  it('passes on an error thrown by the handler', async () => {
    const reader = new FrameReader(() => {
      throw new GroupcastError(ErrorCode.PROTOCOL, 'unexpected');
    });
    const error = firstError(reader);
    reader.write(stream);
    expect((await error).code).toBe(ErrorCode.PROTOCOL);
  });

  it('holds the next frame back until the handler has finished (backpressure)', async () => {
    const seen: string[] = [];
    let release: () => void = () => undefined;
    const reader = new FrameReader((frame) => {
      seen.push(frame.type);
      if (frame.type === 'offer') return new Promise<void>((resolve) => (release = resolve));
      return undefined;
    });
    let written = false;
    reader.write(stream, () => (written = true));
    // Let everything that could run, run: the handler's promise is still pending.
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(seen).toEqual(['hello', 'offer']);
    expect(written).toBe(false);
    release();
    reader.end();
    await once(reader, 'finish');
    expect(seen).toEqual(frames.map((f) => f.type));
    expect(written).toBe(true);
  });
});
