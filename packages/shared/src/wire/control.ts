import {
  INSTANCE_LENGTH, INVITE_PROOF_LENGTH, MAX_DATAGRAM, MAX_DESCRIPTION, MAX_GROUP_NAME, MAX_REASON, MAX_SERVER_NAME,
  NONCE_LENGTH, PROTOCOL_VERSION,
} from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import {
  PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, peerIdFromRawPublicKey, verifySignature, type PeerId, type Signer,
} from '../identity.js';
import { encode, Reader, truncateUtf8, type Sink } from './cursor.js';

/**
 * Control-plane datagrams (UDP multicast and unicast replies). Layout, all integers big-endian:
 *
 *   magic "GC" | version u8 | type u8 | timestamp u64 (ms) | nonce [16] | sender key [32] | body | signature [64]
 *
 * The Ed25519 signature covers every byte before it. A datagram never exceeds MAX_DATAGRAM bytes.
 */
export const DATAGRAM_MAGIC = Buffer.from('GC', 'latin1');
const HEADER_LENGTH = 2 + 1 + 1 + 8 + NONCE_LENGTH + PUBLIC_KEY_LENGTH;

export const DatagramType = {
  ANNOUNCE: 1,
  LIST: 2,
  GROUPS: 3,
  JOIN: 4,
  LEAVE: 5,
  ACK: 6,
  NAK: 7,
  COOKIE: 8,
} as const;

export type MembershipOp = 'join' | 'leave';

/** Why a JOIN or LEAVE was refused. Unknown values decode as 'other'. */
export const NakReason = {
  OTHER: 0,
  UNKNOWN_GROUP: 1,
  NOT_AUTHORIZED: 2,
  BAD_CODE: 3,
  RATE_LIMITED: 4,
  GROUP_FULL: 5,
} as const;
export type NakReason = (typeof NakReason)[keyof typeof NakReason];

export const NAK_REASON_NAMES: Record<NakReason, string> = {
  [NakReason.OTHER]: 'other',
  [NakReason.UNKNOWN_GROUP]: 'unknown group',
  [NakReason.NOT_AUTHORIZED]: 'not authorized',
  [NakReason.BAD_CODE]: 'bad join code',
  [NakReason.RATE_LIMITED]: 'rate limited',
  [NakReason.GROUP_FULL]: 'group full',
};

/**
 * A LIST's cookie: the server's proof that the source address of an earlier LIST is real (it received
 * the COOKIE sent there). A LIST carries one or sixteen zero bytes for none, then padding, so that a
 * LIST without one is as large as the COOKIE that answers it: an unproven source never gets back more
 * bytes than it sent.
 */
export const LIST_COOKIE_LENGTH = 16;
const LIST_PADDING_LENGTH = 16;

export interface GroupInfo {
  name: string;
  description: string;
  open: boolean;
}

export type ControlMessage =
  | { type: 'announce'; name: string; instance: Buffer; tcpPort: number; groupCount: number; groups: string[] }
  /** `cookie`: empty (none yet), or the LIST_COOKIE_LENGTH bytes of the server's last COOKIE. */
  | { type: 'list'; cookie: Buffer }
  | { type: 'groups'; request: Buffer; page: number; pages: number; tcpPort: number; groups: GroupInfo[] }
  /** `proof`: empty, or INVITE_PROOF_LENGTH bytes proving the member holds a join code (invite.ts). */
  | { type: 'join'; group: string; proof: Buffer }
  | { type: 'leave'; group: string }
  /** `proof`: empty, or the server's answer to a JOIN's join-code proof. */
  | { type: 'ack'; request: Buffer; op: MembershipOp; group: string; tcpPort: number; proof: Buffer }
  /**
   * `proof`: empty, or (after a JOIN with a join code the server issued and that is used, expired or cancelled) the
   * server's proof that it issued the code. On the wire only when not empty: an optional last field.
   */
  | { type: 'nak'; request: Buffer; op: MembershipOp; group: string; reason: NakReason; message: string; proof: Buffer }
  /** The answer to a LIST without a valid cookie: ask again with this one. */
  | { type: 'cookie'; request: Buffer; cookie: Buffer };

export interface Datagram {
  sender: PeerId;
  publicKey: Buffer;
  timestamp: number;
  nonce: Buffer;
  message: ControlMessage;
}

const TYPE_CODES = {
  announce: DatagramType.ANNOUNCE,
  list: DatagramType.LIST,
  groups: DatagramType.GROUPS,
  join: DatagramType.JOIN,
  leave: DatagramType.LEAVE,
  ack: DatagramType.ACK,
  nak: DatagramType.NAK,
  cookie: DatagramType.COOKIE,
} as const;

const OP_CODES: Record<MembershipOp, number> = { join: 1, leave: 2 };
const GROUP_FLAG_OPEN = 0x01;

/** An absent proof (a JOIN without a join code, an ACK or NAK that proves nothing). */
export const NO_PROOF: Buffer = Buffer.alloc(0);

/** A proof field: a u8 length, 0 (none) or INVITE_PROOF_LENGTH, then the bytes. */
function writeProof(sink: Sink, proof: Buffer): void {
  if (proof.length !== 0 && proof.length !== INVITE_PROOF_LENGTH) {
    throw new RangeError(`a proof is 0 or ${INVITE_PROOF_LENGTH} bytes, not ${proof.length}`);
  }
  sink.u8(proof.length);
  sink.bytes(proof);
}

function readProof(reader: Reader): Buffer {
  const length = reader.u8('proof length');
  if (length !== 0 && length !== INVITE_PROOF_LENGTH) {
    throw new GroupcastError(ErrorCode.WIRE_FIELD, `proof of ${length} bytes, must be 0 or ${INVITE_PROOF_LENGTH}`);
  }
  return reader.bytes(length, 'proof');
}

function writeBody(sink: Sink, message: ControlMessage): void {
  switch (message.type) {
    case 'announce':
      sink.str8(message.name);
      sink.bytes(message.instance);
      sink.u16(message.tcpPort);
      sink.u16(message.groupCount);
      sink.u8(message.groups.length);
      for (const group of message.groups) sink.str8(group);
      return;
    case 'list':
      if (message.cookie.length !== 0 && message.cookie.length !== LIST_COOKIE_LENGTH) {
        throw new RangeError(`a cookie is 0 or ${LIST_COOKIE_LENGTH} bytes, not ${message.cookie.length}`);
      }
      sink.bytes(message.cookie.length === 0 ? Buffer.alloc(LIST_COOKIE_LENGTH) : message.cookie);
      sink.bytes(Buffer.alloc(LIST_PADDING_LENGTH));
      return;
    case 'cookie':
      if (message.cookie.length !== LIST_COOKIE_LENGTH) throw new RangeError(`a cookie is ${LIST_COOKIE_LENGTH} bytes`);
      sink.bytes(message.request);
      sink.bytes(message.cookie);
      return;
    case 'groups':
      sink.bytes(message.request);
      sink.u8(message.page);
      sink.u8(message.pages);
      sink.u16(message.tcpPort);
      sink.u8(message.groups.length);
      for (const group of message.groups) {
        sink.str8(group.name);
        sink.str8(group.description);
        sink.u8(group.open ? GROUP_FLAG_OPEN : 0);
      }
      return;
    case 'join':
      sink.str8(message.group);
      writeProof(sink, message.proof);
      return;
    case 'leave':
      sink.str8(message.group);
      return;
    case 'ack':
      sink.bytes(message.request);
      sink.u8(OP_CODES[message.op]);
      sink.str8(message.group);
      sink.u16(message.tcpPort);
      writeProof(sink, message.proof);
      return;
    case 'nak':
      sink.bytes(message.request);
      sink.u8(OP_CODES[message.op]);
      sink.str8(message.group);
      sink.u8(message.reason);
      sink.str8(truncateUtf8(message.message, MAX_REASON));
      if (message.proof.length > 0) writeProof(sink, message.proof);
      return;
  }
}

export interface EnvelopeFields {
  timestamp: number;
  nonce: Buffer;
}

/** The unsigned part of a datagram: everything the signature covers. */
function encodeUnsigned(message: ControlMessage, publicKey: Buffer, envelope: EnvelopeFields): Buffer {
  if (envelope.nonce.length !== NONCE_LENGTH) throw new RangeError('nonce must be 16 bytes');
  return encode((sink) => {
    sink.bytes(DATAGRAM_MAGIC);
    sink.u8(PROTOCOL_VERSION);
    sink.u8(TYPE_CODES[message.type]);
    sink.u64(envelope.timestamp);
    sink.bytes(envelope.nonce);
    sink.bytes(publicKey);
    writeBody(sink, message);
  });
}

/** Encodes and signs. Throws RangeError if the message cannot fit in one datagram. */
export function encodeDatagram(message: ControlMessage, signer: Signer, envelope: EnvelopeFields): Buffer {
  const unsigned = encodeUnsigned(message, signer.publicKey, envelope);
  if (unsigned.length + SIGNATURE_LENGTH > MAX_DATAGRAM) {
    throw new RangeError(`${message.type} datagram of ${unsigned.length + SIGNATURE_LENGTH} bytes exceeds ${MAX_DATAGRAM}`);
  }
  return Buffer.concat([unsigned, signer.sign(unsigned)]);
}

/** How many bytes a message's datagram takes, for callers that pack lists to fit. */
export function datagramLength(message: ControlMessage): number {
  const unsigned = encodeUnsigned(message, Buffer.alloc(PUBLIC_KEY_LENGTH), {
    timestamp: 0,
    nonce: Buffer.alloc(NONCE_LENGTH),
  });
  return unsigned.length + SIGNATURE_LENGTH;
}

function readOp(reader: Reader): MembershipOp {
  const op = reader.u8('op');
  if (op === OP_CODES.join) return 'join';
  if (op === OP_CODES.leave) return 'leave';
  throw new GroupcastError(ErrorCode.WIRE_FIELD, `unknown membership op ${op}`);
}

function readNakReason(reader: Reader): NakReason {
  const reason = reader.u8('reason');
  return (Object.values(NakReason) as number[]).includes(reason) ? (reason as NakReason) : NakReason.OTHER;
}

function readBody(type: number, reader: Reader): ControlMessage {
  switch (type) {
    case DatagramType.ANNOUNCE: {
      const name = reader.str8('server name', MAX_SERVER_NAME);
      const instance = reader.bytes(INSTANCE_LENGTH, 'instance');
      const tcpPort = reader.u16('tcp port');
      const groupCount = reader.u16('group count');
      const listed = reader.u8('listed groups');
      const groups: string[] = [];
      for (let i = 0; i < listed; i++) groups.push(reader.str8('group', MAX_GROUP_NAME));
      return { type: 'announce', name, instance, tcpPort, groupCount, groups };
    }
    case DatagramType.LIST: {
      const cookie = reader.bytes(LIST_COOKIE_LENGTH, 'cookie');
      // Padding is ignored on receipt; it is there only to make the request as large as the COOKIE.
      reader.bytes(LIST_PADDING_LENGTH, 'padding');
      return { type: 'list', cookie: cookie.every((byte) => byte === 0) ? Buffer.alloc(0) : cookie };
    }
    case DatagramType.COOKIE:
      return { type: 'cookie', request: reader.bytes(NONCE_LENGTH, 'request'), cookie: reader.bytes(LIST_COOKIE_LENGTH, 'cookie') };
    case DatagramType.GROUPS: {
      const request = reader.bytes(NONCE_LENGTH, 'request');
      const page = reader.u8('page');
      const pages = reader.u8('pages');
      if (page >= pages) throw new GroupcastError(ErrorCode.WIRE_FIELD, `page ${page} of ${pages}`);
      const tcpPort = reader.u16('tcp port');
      const count = reader.u8('group count');
      const groups: GroupInfo[] = [];
      for (let i = 0; i < count; i++) {
        const name = reader.str8('group', MAX_GROUP_NAME);
        const description = reader.str8('description', MAX_DESCRIPTION);
        const open = (reader.u8('flags') & GROUP_FLAG_OPEN) !== 0;
        groups.push({ name, description, open });
      }
      return { type: 'groups', request, page, pages, tcpPort, groups };
    }
    case DatagramType.JOIN:
      return { type: 'join', group: reader.str8('group', MAX_GROUP_NAME), proof: readProof(reader) };
    case DatagramType.LEAVE:
      return { type: 'leave', group: reader.str8('group', MAX_GROUP_NAME) };
    case DatagramType.ACK:
      return {
        type: 'ack',
        request: reader.bytes(NONCE_LENGTH, 'request'),
        op: readOp(reader),
        group: reader.str8('group', MAX_GROUP_NAME),
        tcpPort: reader.u16('tcp port'),
        proof: readProof(reader),
      };
    case DatagramType.NAK:
      return {
        type: 'nak',
        request: reader.bytes(NONCE_LENGTH, 'request'),
        op: readOp(reader),
        group: reader.str8('group', MAX_GROUP_NAME),
        reason: readNakReason(reader),
        message: reader.str8('message', MAX_REASON),
        proof: reader.remaining > 0 ? readProof(reader) : NO_PROOF,
      };
    default:
      throw new GroupcastError(ErrorCode.WIRE_TYPE, `unknown datagram type ${type}`);
  }
}

/**
 * Decodes and verifies a datagram. Returns the message or throws a GroupcastError with a wire code;
 * it throws nothing else. Freshness and replay are the receiver's concern (see replay.ts).
 */
export function decodeDatagram(buf: Uint8Array): Datagram {
  if (buf.length > MAX_DATAGRAM) {
    throw new GroupcastError(ErrorCode.WIRE_TOO_LARGE, `datagram of ${buf.length} bytes exceeds ${MAX_DATAGRAM}`);
  }
  // A prefix of the magic ("", "G") is a truncated datagram, not a foreign one.
  if ((buf.length > 0 && buf[0] !== DATAGRAM_MAGIC[0]) || (buf.length > 1 && buf[1] !== DATAGRAM_MAGIC[1])) {
    throw new GroupcastError(ErrorCode.WIRE_MAGIC, 'not a groupcast datagram');
  }
  if (buf.length < HEADER_LENGTH + SIGNATURE_LENGTH) {
    throw new GroupcastError(ErrorCode.WIRE_SHORT, `datagram of ${buf.length} bytes is shorter than a header`);
  }
  const signed = buf.subarray(0, buf.length - SIGNATURE_LENGTH);
  const reader = new Reader(signed);
  reader.bytes(2, 'magic');
  const version = reader.u8('version');
  if (version !== PROTOCOL_VERSION) {
    throw new GroupcastError(ErrorCode.WIRE_VERSION, `datagram version ${version}, this build speaks ${PROTOCOL_VERSION}`);
  }
  const type = reader.u8('type');
  const timestamp = reader.u64('timestamp');
  const nonce = reader.bytes(NONCE_LENGTH, 'nonce');
  const publicKey = reader.bytes(PUBLIC_KEY_LENGTH, 'sender key');
  if (!verifySignature(publicKey, signed, buf.subarray(buf.length - SIGNATURE_LENGTH))) {
    throw new GroupcastError(ErrorCode.WIRE_SIGNATURE, 'bad signature');
  }
  const message = readBody(type, reader);
  reader.end(message.type);
  return { sender: peerIdFromRawPublicKey(publicKey), publicKey, timestamp, nonce, message };
}
