import { createHash } from 'node:crypto';
import type { Signer } from '../../packages/shared/src/identity.js';
import { ackProof, joinProof, nakProof } from '../../packages/shared/src/invite.js';
import { NakReason, NO_PROOF, type ControlMessage } from '../../packages/shared/src/wire/control.js';
import { PROTOCOL_VERSION } from '../../packages/shared/src/constants.js';
import { Capability, Outcome, RECLAIM_REQUEST, type Frame } from '../../packages/shared/src/wire/frames.js';
import { encodeManifest, type Manifest } from '../../packages/shared/src/wire/manifest.js';
import { counting, memberSigner, serverSigner } from './helpers.js';

/** 2026-01-01T00:00:00.000Z, the worked examples' clock. */
export const T0 = Date.UTC(2026, 0, 1);

export const FILE_CONTENT = Buffer.from('hello world\n');

/** The join code of the worked examples (issued by the example server) and the key both ends stretch it into. */
export const GOLDEN_CODE = 'UBIIK-7Q2MX-4PNRO';
export const GOLDEN_INVITE_KEY = Buffer.from('e3b72d4af6fc7347438894a78cb99382bc4022ace73f77af58043f63d8f40c8f', 'hex');
const CODE_JOIN_NONCE = counting(0x40, 16);
export const TRANSFER = counting(0x10, 16);
/** A cookie is opaque to the member (an HMAC under the server's secret): any 16 bytes do here. */
const LIST_COOKIE = counting(0x30, 16);

const EMPTY_SHA256 = createHash('sha256').digest();
/** The worked example's tree: a dotfile, a directory, an empty executable inside it. */
export const GOLDEN_TREE: Manifest = {
  pieceSize: 262_144,
  tree: true,
  entries: [
    { kind: 'file', path: '.env', size: FILE_CONTENT.length, mode: 0o600, sha256: createHash('sha256').update(FILE_CONTENT).digest(), pieces: createHash('sha256').update(FILE_CONTENT).digest() },
    { kind: 'directory', path: 'bin', size: 0, mode: 0o755, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) },
    { kind: 'file', path: 'bin/run.sh', size: 0, mode: 0o755, sha256: EMPTY_SHA256, pieces: Buffer.alloc(0) },
  ],
};
export const GOLDEN_TREE_BYTES = encodeManifest(GOLDEN_TREE);

export interface DatagramExample {
  kind: 'datagram';
  signer: Signer;
  timestamp: number;
  nonce: Buffer;
  message: ControlMessage;
}

export interface FrameExample {
  kind: 'frame';
  frame: Frame;
}

/**
 * The worked examples of docs/PROTOCOL.md, by the name of their `<!-- golden:NAME -->` marker.
 * A conversation: the server announces, a member lists and joins, then receives one file.
 */
export const GOLDEN: Record<string, DatagramExample | FrameExample> = {
  announce: {
    kind: 'datagram', signer: serverSigner, timestamp: T0, nonce: counting(0xa0, 16),
    message: {
      type: 'announce', name: 'Office server', instance: Buffer.from('1122334455667788', 'hex'), tcpPort: 47701,
      groupCount: 2, groups: ['Developers', 'Designers'],
    },
  },
  list: {
    kind: 'datagram', signer: memberSigner, timestamp: T0 + 1_000, nonce: counting(0xb0, 16),
    message: { type: 'list', cookie: Buffer.alloc(0) },
  },
  cookie: {
    kind: 'datagram', signer: serverSigner, timestamp: T0 + 1_001, nonce: counting(0x50, 16),
    message: { type: 'cookie', request: counting(0xb0, 16), cookie: LIST_COOKIE },
  },
  'list-cookie': {
    kind: 'datagram', signer: memberSigner, timestamp: T0 + 1_002, nonce: counting(0x20, 16),
    message: { type: 'list', cookie: LIST_COOKIE },
  },
  groups: {
    kind: 'datagram', signer: serverSigner, timestamp: T0 + 1_003, nonce: counting(0xc0, 16),
    message: {
      type: 'groups', request: counting(0x20, 16), page: 0, pages: 1, tcpPort: 47701,
      groups: [
        { name: 'Developers', description: 'Build machines', open: false },
        { name: 'Designers', description: '', open: true },
      ],
    },
  },
  join: {
    kind: 'datagram', signer: memberSigner, timestamp: T0 + 2_000, nonce: counting(0xd0, 16),
    message: { type: 'join', group: 'Developers', proof: Buffer.alloc(0) },
  },
  ack: {
    kind: 'datagram', signer: serverSigner, timestamp: T0 + 2_003, nonce: counting(0xe0, 16),
    message: { type: 'ack', request: counting(0xd0, 16), op: 'join', group: 'Developers', tcpPort: 47701, proof: Buffer.alloc(0) },
  },
  nak: {
    kind: 'datagram', signer: serverSigner, timestamp: T0 + 2_004, nonce: counting(0xf0, 16),
    message: {
      type: 'nak', request: counting(0xd0, 16), op: 'join', group: 'Developers', reason: NakReason.NOT_AUTHORIZED,
      message: 'not authorized', proof: NO_PROOF,
    },
  },
  'join-code': {
    kind: 'datagram', signer: memberSigner, timestamp: T0 + 3_000, nonce: CODE_JOIN_NONCE,
    message: { type: 'join', group: 'Developers', proof: joinProof(GOLDEN_INVITE_KEY, memberSigner.publicKey, 'Developers') },
  },
  'ack-code': {
    kind: 'datagram', signer: serverSigner, timestamp: T0 + 3_003, nonce: counting(0x60, 16),
    message: {
      type: 'ack', request: CODE_JOIN_NONCE, op: 'join', group: 'Developers', tcpPort: 47701,
      proof: ackProof(GOLDEN_INVITE_KEY, serverSigner.publicKey, memberSigner.publicKey, CODE_JOIN_NONCE, 'Developers'),
    },
  },
  'nak-code': {
    kind: 'datagram', signer: serverSigner, timestamp: T0 + 3_004, nonce: counting(0x80, 16),
    message: {
      type: 'nak', request: CODE_JOIN_NONCE, op: 'join', group: 'Developers', reason: NakReason.BAD_CODE, message: 'join code expired',
      proof: nakProof(GOLDEN_INVITE_KEY, serverSigner.publicKey, memberSigner.publicKey, CODE_JOIN_NONCE, NakReason.BAD_CODE, 'Developers'),
    },
  },
  'hello-server': { kind: 'frame', frame: { type: 'hello', version: PROTOCOL_VERSION, name: 'Office server' } },
  'hello-member': { kind: 'frame', frame: { type: 'hello', version: PROTOCOL_VERSION, name: 'build-07' } },
  'request-any': { kind: 'frame', frame: { type: 'request', transfer: TRANSFER, piece: 0xffff_ffff } },
  have: { kind: 'frame', frame: { type: 'have', transfer: TRANSFER, piece: 3 } },
  'hello-server-caps': {
    kind: 'frame',
    frame: { type: 'hello', version: PROTOCOL_VERSION, name: 'Office server', caps: { flags: Capability.PIECES | Capability.HELD_PIECES, peerPort: 0 } },
  },
  'bitfield-held': { kind: 'frame', frame: { type: 'bitfield', transfer: TRANSFER, bits: Buffer.from([0xe7, 0xc0]) } },
  'hello-member-caps': {
    kind: 'frame',
    frame: { type: 'hello', version: PROTOCOL_VERSION, name: 'build-07', caps: { flags: Capability.PIECES | Capability.PEERS, peerPort: 47702 } },
  },
  manifest: {
    kind: 'frame',
    frame: {
      type: 'manifest', transfer: TRANSFER,
      manifest: {
        pieceSize: 262_144,
        entries: [{
          path: 'notes.txt', size: FILE_CONTENT.length, mode: 0o644, sha256: createHash('sha256').update(FILE_CONTENT).digest(),
          pieces: createHash('sha256').update(FILE_CONTENT).digest(),
        }],
      },
    },
  },
  offer: {
    kind: 'frame',
    frame: {
      type: 'offer', transfer: TRANSFER, group: 'Developers', name: 'notes.txt', size: FILE_CONTENT.length,
      sha256: createHash('sha256').update(FILE_CONTENT).digest(),
    },
  },
  accept: { kind: 'frame', frame: { type: 'accept', transfer: TRANSFER, offset: 0 } },
  data: { kind: 'frame', frame: { type: 'data', transfer: TRANSFER, offset: 0, payload: FILE_CONTENT } },
  result: { kind: 'frame', frame: { type: 'result', transfer: TRANSFER, outcome: Outcome.OK, message: '' } },
  'reclaim-request': { kind: 'frame', frame: RECLAIM_REQUEST },
  partials: { kind: 'frame', frame: { type: 'partials', transfers: [counting(0x20, 16)] } },
  ping: { kind: 'frame', frame: { type: 'ping', time: T0 + 5_000 } },
  tree: { kind: 'frame', frame: { type: 'tree', transfer: TRANSFER, total: GOLDEN_TREE_BYTES.length, offset: 0, chunk: GOLDEN_TREE_BYTES } },
};

/** The ids of the examples' keys, as `<!-- golden-id:NAME -->` shows them. */
export const GOLDEN_IDS: Record<string, Signer> = { server: serverSigner, member: memberSigner };
