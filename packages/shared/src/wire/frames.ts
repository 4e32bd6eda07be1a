import {
  DATA_CHUNK, MAX_GROUP_NAME, MAX_PARTIALS_PER_FRAME, MAX_REASON, MAX_SERVER_NAME, MAX_WIRE_NAME, PROTOCOL_VERSION, SHA256_LENGTH, TRANSFER_ID_LENGTH,
} from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import { encode, Reader, truncateUtf8, type Sink } from './cursor.js';
import { readManifest, writeManifest, type Manifest } from './manifest.js';

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
  // ---- pieces (only on a connection that negotiated ALPN_PIECES) ----
  MANIFEST: 11,
  // ---- swarm: server ↔ member on an ALPN_PIECES connection, and member ↔ member on ALPN_PEERS ----
  PEERS: 12,
  BITFIELD: 13,
  HAVE: 14,
  REQUEST: 15,
  SEEDED: 16,
  // ---- trees (only to a member that said TREES) ----
  TREE: 17,
} as const;

/**
 * A tree's manifest (version 2) may be this large in all: 65,536 entries with their paths and 8 MiB of
 * piece hashes fit. The member holds the manifest in memory until the OFFER, so it is bounded here.
 */
export const MAX_TREE_MANIFEST_BYTES = 16 * 1024 * 1024;
/** Manifest bytes one TREE frame carries at most: a DATA frame's payload. */
export const TREE_CHUNK = DATA_CHUNK;

/** The member-to-member link: TLS 1.3, mutual, the ids members already have, this ALPN id. */
export const ALPN_PEERS = 'gcpp/1';
/** REQUEST for "any piece you choose": only to the server, which seeds what nobody holds yet. */
export const ANY_PIECE = 0xffff_ffff;
/** Peers one PEERS frame lists: what a member needs to choose its few links from, and a bounded frame. */
export const MAX_PEERS_LISTED = 64;
/** A peer's address in PEERS: an IP literal, as the server saw it. */
export const MAX_PEER_ADDRESS = 64;
/** The canonical text form of an id (PROTOCOL.md §3.1). */
const PEER_ID_TEXT = 63;

export interface PeerEntry {
  id: string;
  address: string;
  port: number;
}

/**
 * Pieces and capabilities are spoken only on a connection whose TLS handshake negotiated this ALPN id:
 * a version-1 peer offers no ALPN (or ignores it) and so never sees a capability field or a MANIFEST.
 */
export const ALPN_PIECES = 'gcdp/1.1';

/** Capability bits in HELLO (on an ALPN_PIECES connection). Unknown bits are ignored. */
export const Capability = {
  /** Takes a MANIFEST before each OFFER and verifies every piece. */
  PIECES: 1 << 0,
  /** Serves verified pieces to other members on its peer port. */
  PEERS: 1 << 1,
  /** Takes directory trees: TREE frames (a version-2 manifest) before the OFFER (PROTOCOL.md §7.7). */
  TREES: 1 << 2,
  /**
   * Said by a server: on the stream, it takes a BITFIELD before ACCEPT and then sends only the pieces not
   * set (PROTOCOL.md §7.5). A member sends that BITFIELD only to a server that said this: one predating
   * it would ignore the BITFIELD and stream everything, which the member would refuse.
   */
  HELD_PIECES: 1 << 3,
  /**
   * Said by a member with PEERS and TREES: it pulls a tree like a file, after TREE parts, PEERS and the
   * OFFER (PROTOCOL.md §7.7, *Pulled*). A member predating it says PEERS and TREES too, but would take
   * such a tree as a stream and wait for DATA that never comes: the server pulls trees only with this bit.
   */
  TREE_SWARM: 1 << 4,
} as const;

/** What a peer said it can do, after its name in HELLO. */
export interface Capabilities {
  flags: number;
  /** The port it serves pieces on; 0 when it does not. */
  peerPort: number;
}

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
  | { type: 'hello'; version: number; name: string; caps?: Capabilities }
  | ({ type: 'offer' } & Offer)
  | { type: 'accept'; transfer: Buffer; offset: number }
  | { type: 'decline'; transfer: Buffer; outcome: Outcome; message: string }
  | { type: 'data'; transfer: Buffer; offset: number; payload: Uint8Array }
  | { type: 'result'; transfer: Buffer; outcome: Outcome; message: string }
  | { type: 'ping'; time: number }
  | { type: 'pong'; time: number }
  | { type: 'cancel'; transfer: Buffer; message: string }
  | { type: 'partials'; transfers: Buffer[] }
  | { type: 'manifest'; transfer: Buffer; manifest: Manifest }
  | { type: 'peers'; transfer: Buffer; peers: PeerEntry[] }
  | { type: 'bitfield'; transfer: Buffer; bits: Buffer }
  | { type: 'have'; transfer: Buffer; piece: number }
  | { type: 'request'; transfer: Buffer; piece: number }
  | { type: 'seeded'; transfer: Buffer }
  | { type: 'tree'; transfer: Buffer; total: number; offset: number; chunk: Uint8Array };

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
  manifest: FrameType.MANIFEST,
  peers: FrameType.PEERS,
  bitfield: FrameType.BITFIELD,
  have: FrameType.HAVE,
  request: FrameType.REQUEST,
  seeded: FrameType.SEEDED,
  tree: FrameType.TREE,
} as const;

function writeBody(sink: Sink, frame: Frame): void {
  switch (frame.type) {
    case 'hello':
      sink.bytes(HELLO_MAGIC);
      sink.u8(frame.version);
      sink.str8(frame.name);
      if (frame.caps) {
        sink.u32(frame.caps.flags);
        sink.u16(frame.caps.peerPort);
      }
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
    case 'manifest':
      sink.bytes(frame.transfer);
      writeManifest(sink, frame.manifest);
      return;
    case 'peers':
      sink.bytes(frame.transfer);
      sink.u8(frame.peers.length);
      for (const peer of frame.peers) {
        sink.str8(peer.id);
        sink.str8(peer.address);
        sink.u16(peer.port);
      }
      return;
    case 'bitfield':
      sink.bytes(frame.transfer);
      sink.bytes(frame.bits);
      return;
    case 'have':
    case 'request':
      sink.bytes(frame.transfer);
      sink.u32(frame.piece);
      return;
    case 'seeded':
      sink.bytes(frame.transfer);
      return;
    case 'tree':
      sink.bytes(frame.transfer);
      sink.u32(frame.total);
      sink.u32(frame.offset);
      sink.bytes(frame.chunk);
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

function readPeers(reader: Reader): PeerEntry[] {
  const count = reader.u8('peer count');
  if (count > MAX_PEERS_LISTED) throw new GroupcastError(ErrorCode.WIRE_FIELD, `PEERS lists ${count} peers, limit ${MAX_PEERS_LISTED}`);
  const peers: PeerEntry[] = [];
  for (let i = 0; i < count; i++) {
    peers.push({ id: reader.str8('peer id', PEER_ID_TEXT), address: reader.str8('peer address', MAX_PEER_ADDRESS), port: reader.u16('peer port') });
  }
  return peers;
}

/** One part of a tree's manifest: within the total, which is within MAX_TREE_MANIFEST_BYTES, and never empty. */
function readTreePart(reader: Reader): Frame {
  const transfer = transferId(reader);
  const total = reader.u32('tree total');
  const offset = reader.u32('tree offset');
  const chunk = reader.rest();
  if (total > MAX_TREE_MANIFEST_BYTES) throw new GroupcastError(ErrorCode.WIRE_FIELD, `tree manifest of ${total} bytes, limit ${MAX_TREE_MANIFEST_BYTES}`);
  if (chunk.length === 0 || offset + chunk.length > total) {
    throw new GroupcastError(ErrorCode.WIRE_FIELD, `tree part of ${chunk.length} bytes at ${offset} does not fit a ${total}-byte manifest`);
  }
  return { type: 'tree', transfer, total, offset, chunk };
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
      const name = reader.str8('name', MAX_SERVER_NAME);
      // The capability tail: present from a peer that negotiated ALPN_PIECES, absent in version 1.
      if (reader.remaining === 0) return { type: 'hello', version, name };
      return { type: 'hello', version, name, caps: { flags: reader.u32('capabilities'), peerPort: reader.u16('peer port') } };
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
    case FrameType.MANIFEST:
      return { type: 'manifest', transfer: transferId(reader), manifest: readManifest(reader) };
    case FrameType.PEERS:
      return { type: 'peers', transfer: transferId(reader), peers: readPeers(reader) };
    case FrameType.BITFIELD:
      return { type: 'bitfield', transfer: transferId(reader), bits: Buffer.from(reader.rest()) };
    case FrameType.HAVE:
    case FrameType.REQUEST:
      return { type: type === FrameType.HAVE ? 'have' : 'request', transfer: transferId(reader), piece: reader.u32('piece') };
    case FrameType.SEEDED:
      return { type: 'seeded', transfer: transferId(reader) };
    case FrameType.TREE:
      return readTreePart(reader);
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
