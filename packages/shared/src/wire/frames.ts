import {
  MAX_GROUP_NAME, MAX_PARTIALS_PER_FRAME, MAX_REASON, MAX_SERVER_NAME, MAX_WIRE_NAME, PROTOCOL_VERSION, SHA256_LENGTH, TRANSFER_ID_LENGTH,
} from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import { encode, Reader, truncateUtf8, type Sink } from './cursor.js';

/**
 * Data-plane frames, carried over the mutual-TLS connection between the server and a member:
 *
 *   length u32 (bytes that follow) | type u8 | body
 *
 * Each side's first frame is HELLO. The server then pushes OFFER; the member answers ACCEPT (with the
 * offset it already holds) or DECLINE; DATA frames follow from that offset; the member answers RESULT.
 * Right after HELLO the server asks which partials the member holds (a CANCEL for RECLAIM_TRANSFER);
 * the member lists them in PARTIALS and the server CANCELs each one it will never offer again.
 */
export const FRAME_HEADER_LENGTH = 5;
export const HELLO_MAGIC = Buffer.from('GCDP', 'latin1');

export const FrameType = {
  HELLO: 1,
  OFFER: 2,
  ACCEPT: 3,
  DECLINE: 4,
  DATA: 5,
  RESULT: 6,
  PING: 7,
  PONG: 8,
  CANCEL: 9,
  PARTIALS: 10,
} as const;

/**
 * The all-zero transfer id, which no transfer has (ids are random). A CANCEL for it asks the member to
 * report its partials (PARTIALS). It is a CANCEL so that a member predating PARTIALS ignores it, as it
 * ignores any CANCEL for a transfer not in flight, and a member sends PARTIALS only to a server that
 * asked: a server predating it would close the connection on an unknown frame type.
 */
export const RECLAIM_TRANSFER: Buffer = Buffer.alloc(TRANSFER_ID_LENGTH);
export const RECLAIM_REQUEST: Frame = { type: 'cancel', transfer: RECLAIM_TRANSFER, message: 'which partials do you hold?' };

export function isReclaimRequest(frame: Frame): boolean {
  return frame.type === 'cancel' && frame.transfer.equals(RECLAIM_TRANSFER);
}

/**
 * Outcome of a delivery as the member reports it, in DECLINE and RESULT. Unknown values decode as
 * FAILED so that a newer member's reasons still read as a failure.
 */
export const Outcome = {
  OK: 0,
  FAILED: 1,
  CHECKSUM: 2,
  NO_SPACE: 3,
  BAD_NAME: 4,
  NAME_CLASH: 5,
  IO_ERROR: 6,
  CANCELLED: 7,
  NOT_MEMBER: 8,
  PERMISSION_DENIED: 9,
} as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

export const OUTCOME_NAMES: Record<Outcome, string> = {
  0: 'ok',
  1: 'failed',
  2: 'checksum mismatch',
  3: 'insufficient space',
  4: 'unsafe name',
  5: 'name clash',
  6: 'i/o error',
  7: 'cancelled',
  8: 'not a member',
  9: 'permission denied',
};

export interface Offer {
  transfer: Buffer;
  group: string;
  name: string;
  size: number;
  sha256: Buffer;
}

export type Frame =
  | { type: 'hello'; version: number; name: string }
  | ({ type: 'offer' } & Offer)
  | { type: 'accept'; transfer: Buffer; offset: number }
  | { type: 'decline'; transfer: Buffer; outcome: Outcome; message: string }
  | { type: 'data'; transfer: Buffer; offset: number; payload: Uint8Array }
  | { type: 'result'; transfer: Buffer; outcome: Outcome; message: string }
  | { type: 'ping'; time: number }
  | { type: 'pong'; time: number }
  | { type: 'cancel'; transfer: Buffer; message: string }
  | { type: 'partials'; transfers: Buffer[] };

const TYPE_CODES = {
  hello: FrameType.HELLO,
  offer: FrameType.OFFER,
  accept: FrameType.ACCEPT,
  decline: FrameType.DECLINE,
  data: FrameType.DATA,
  result: FrameType.RESULT,
  ping: FrameType.PING,
  pong: FrameType.PONG,
  cancel: FrameType.CANCEL,
  partials: FrameType.PARTIALS,
} as const;

function writeBody(sink: Sink, frame: Frame): void {
  switch (frame.type) {
    case 'hello':
      sink.bytes(HELLO_MAGIC);
      sink.u8(frame.version);
      sink.str8(frame.name);
      return;
    case 'offer':
      sink.bytes(frame.transfer);
      sink.str8(frame.group);
      sink.str16(frame.name);
      sink.u64(frame.size);
      sink.bytes(frame.sha256);
      return;
    case 'accept':
      sink.bytes(frame.transfer);
      sink.u64(frame.offset);
      return;
    case 'decline':
    case 'result':
      sink.bytes(frame.transfer);
      sink.u8(frame.outcome);
      sink.str8(truncateUtf8(frame.message, MAX_REASON));
      return;
    case 'data':
      sink.bytes(frame.transfer);
      sink.u64(frame.offset);
      sink.bytes(frame.payload);
      return;
    case 'ping':
    case 'pong':
      sink.u64(frame.time);
      return;
    case 'cancel':
      sink.bytes(frame.transfer);
      sink.str8(truncateUtf8(frame.message, MAX_REASON));
      return;
    case 'partials':
      sink.u16(frame.transfers.length);
      for (const transfer of frame.transfers) sink.bytes(transfer);
      return;
  }
}

/** A whole frame, length prefix included. */
export function encodeFrame(frame: Frame): Buffer {
  const buf = encode((sink) => {
    sink.u32(0);
    sink.u8(TYPE_CODES[frame.type]);
    writeBody(sink, frame);
  });
  buf.writeUInt32BE(buf.length - 4, 0);
  return buf;
}

export const DATA_HEADER_LENGTH = FRAME_HEADER_LENGTH + TRANSFER_ID_LENGTH + 8;

/**
 * A DATA frame whose payload region the caller fills in place (a file read straight into it), so the
 * bulk path copies each byte once.
 */
export function allocDataFrame(transfer: Buffer, offset: number, payloadLength: number): { frame: Buffer; payload: Buffer } {
  return dataFrameIn(Buffer.alloc(DATA_HEADER_LENGTH + payloadLength), transfer, offset, payloadLength);
}

/**
 * The same, laid into the start of a buffer the caller reuses from frame to frame (a sender streaming a
 * file keeps a couple of them instead of allocating one per chunk). Returns views into `buffer`.
 */
export function dataFrameIn(buffer: Buffer, transfer: Buffer, offset: number, payloadLength: number): { frame: Buffer; payload: Buffer } {
  if (buffer.length < DATA_HEADER_LENGTH + payloadLength) {
    throw new RangeError(`a ${buffer.length}-byte buffer cannot hold a DATA frame with ${payloadLength} bytes of payload`);
  }
  const frame = buffer.subarray(0, DATA_HEADER_LENGTH + payloadLength);
  frame.writeUInt32BE(frame.length - 4, 0);
  frame.writeUInt8(FrameType.DATA, 4);
  transfer.copy(frame, FRAME_HEADER_LENGTH);
  frame.writeBigUInt64BE(BigInt(offset), FRAME_HEADER_LENGTH + TRANSFER_ID_LENGTH);
  return { frame, payload: frame.subarray(DATA_HEADER_LENGTH) };
}

function readOutcome(reader: Reader): Outcome {
  const value = reader.u8('outcome');
  return value in OUTCOME_NAMES ? (value as Outcome) : Outcome.FAILED;
}

function transferId(reader: Reader): Buffer {
  return reader.bytes(TRANSFER_ID_LENGTH, 'transfer id');
}

function readTransferList(reader: Reader): Buffer[] {
  const count = reader.u16('partials count');
  if (count > MAX_PARTIALS_PER_FRAME) {
    throw new GroupcastError(ErrorCode.WIRE_FIELD, `PARTIALS lists ${count} transfers, over ${MAX_PARTIALS_PER_FRAME}`);
  }
  return Array.from({ length: count }, () => transferId(reader));
}

function readBody(type: number, reader: Reader): Frame {
  switch (type) {
    case FrameType.HELLO: {
      const magic = reader.bytes(HELLO_MAGIC.length, 'magic');
      if (!magic.equals(HELLO_MAGIC)) throw new GroupcastError(ErrorCode.WIRE_MAGIC, 'peer does not speak groupcast');
      const version = reader.u8('version');
      if (version !== PROTOCOL_VERSION) {
        throw new GroupcastError(ErrorCode.WIRE_VERSION, `peer speaks protocol ${version}, this build ${PROTOCOL_VERSION}`);
      }
      return { type: 'hello', version, name: reader.str8('name', MAX_SERVER_NAME) };
    }
    case FrameType.OFFER:
      return {
        type: 'offer',
        transfer: transferId(reader),
        group: reader.str8('group', MAX_GROUP_NAME),
        name: reader.str16('file name', MAX_WIRE_NAME),
        size: reader.u64('size'),
        sha256: reader.bytes(SHA256_LENGTH, 'sha256'),
      };
    case FrameType.ACCEPT:
      return { type: 'accept', transfer: transferId(reader), offset: reader.u64('offset') };
    case FrameType.DECLINE:
    case FrameType.RESULT:
      return {
        type: type === FrameType.DECLINE ? 'decline' : 'result',
        transfer: transferId(reader),
        outcome: readOutcome(reader),
        message: reader.str8('message', MAX_REASON),
      };
    case FrameType.DATA:
      return { type: 'data', transfer: transferId(reader), offset: reader.u64('offset'), payload: reader.rest() };
    case FrameType.PING:
    case FrameType.PONG:
      return { type: type === FrameType.PING ? 'ping' : 'pong', time: reader.u64('time') };
    case FrameType.CANCEL:
      return { type: 'cancel', transfer: transferId(reader), message: reader.str8('message', MAX_REASON) };
    case FrameType.PARTIALS:
      return { type: 'partials', transfers: readTransferList(reader) };
    default:
      throw new GroupcastError(ErrorCode.WIRE_TYPE, `unknown frame type ${type}`);
  }
}

/** Decodes one frame's type and body (the length prefix already stripped). Throws only GroupcastError. */
export function decodeFrame(buf: Uint8Array): Frame {
  const reader = new Reader(buf);
  const frame = readBody(reader.u8('frame type'), reader);
  reader.end(frame.type);
  return frame;
}
