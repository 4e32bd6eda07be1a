import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { base32nopad } from '@scure/base';
import { INVITE_PROOF_LENGTH } from './constants.js';
import { ErrorCode, GroupcastError } from './errors.js';
import { luhn32, type PeerId } from './identity.js';

/**
 * Join codes (`group-server invite`). A code is 15 characters of the id alphabet, shown in three
 * blocks of five:
 *
 *   PPPP SSSSSSSSSS C
 *   PPPP        the first four characters of the server's id: which server the code is for (not secret)
 *   SSSSSSSSSS  the secret: 50 random bits
 *   C           Luhn mod-32 check character of the 14 before it, so a typo fails before anything is sent
 *
 * The code itself never crosses the network. Both ends stretch it into a key with scrypt; a JOIN
 * carries an HMAC of the member's public key under that key (the member holds the code), and the ACK
 * an HMAC of both public keys and the request (the server issued it — a rogue server with the same id
 * prefix cannot make one). The stretching makes each offline guess at a captured proof cost ~0.1 s
 * of CPU and 32 MiB; online guesses are rate-limited by the server. See docs/SECURITY.md for the math.
 */
export const JOIN_CODE_PREFIX_CHARS = 4;
export const JOIN_CODE_SECRET_CHARS = 10;
const CODE_CHARS = JOIN_CODE_PREFIX_CHARS + JOIN_CODE_SECRET_CHARS + 1;

/** scrypt cost: N = 2^15, r = 8 needs 32 MiB and ~0.1 s on one core, once per code on each end. */
export const INVITE_KDF = { N: 1 << 15, r: 8, p: 1, keyLength: 32 } as const;
const KDF_MAXMEM = 64 * 1024 * 1024;
const KDF_SALT = 'groupcast-invite-v1\0';
const JOIN_LABEL = Buffer.from('groupcast-join-v1\0', 'latin1');
const ACK_LABEL = Buffer.from('groupcast-ack-v1\0', 'latin1');
const NAK_LABEL = Buffer.from('groupcast-nak-v1\0', 'latin1');

export interface JoinCode {
  /** Canonical form, as printed: `PPPPS-SSSSS-SSSSC`. */
  text: string;
  /** The server id's first characters; a server whose id does not start with them is not the one. */
  serverPrefix: string;
  secret: string;
}

function fromCompact(compact: string): JoinCode {
  return {
    text: (compact.match(/.{5}/g) ?? []).join('-'),
    serverPrefix: compact.slice(0, JOIN_CODE_PREFIX_CHARS),
    secret: compact.slice(JOIN_CODE_PREFIX_CHARS, JOIN_CODE_PREFIX_CHARS + JOIN_CODE_SECRET_CHARS),
  };
}

/** A fresh code for this server: 50 bits from the CSPRNG. */
export function newJoinCode(serverId: PeerId): JoinCode {
  // 7 random bytes are 56 bits; each of the first ten base32 characters carries five of them.
  const secret = base32nopad.encode(randomBytes(7)).slice(0, JOIN_CODE_SECRET_CHARS);
  const body = serverId.slice(0, JOIN_CODE_PREFIX_CHARS) + secret;
  return fromCompact(body + luhn32(body));
}

/**
 * Reads a code typed by a person: any case, dashes and spaces ignored, and the digits people type
 * for look-alike letters (0 for O, 1 for I, 8 for B) read as those letters.
 */
export function parseJoinCode(text: string): JoinCode {
  const compact = text.toUpperCase().replace(/[-\s]/g, '').replace(/0/g, 'O').replace(/1/g, 'I').replace(/8/g, 'B');
  if (!/^[A-Z2-7]*$/.test(compact) || compact.length !== CODE_CHARS) {
    throw new GroupcastError(ErrorCode.BAD_CODE, `a join code is ${CODE_CHARS} letters and digits 2-7 (like ABCDE-FGHJK-LMNPQ)`);
  }
  const body = compact.slice(0, -1);
  if (luhn32(body) !== compact.slice(-1)) {
    throw new GroupcastError(ErrorCode.BAD_CODE, 'the join code has a typo (its check character does not match)');
  }
  return fromCompact(compact);
}

export function codeIsForServer(code: JoinCode, serverId: PeerId): boolean {
  return serverId.startsWith(code.serverPrefix);
}

/** The key both ends derive from a code. Async: scrypt runs on the thread pool, not the event loop. */
export function deriveInviteKey(code: JoinCode): Promise<Buffer> {
  const { N, r, p, keyLength } = INVITE_KDF;
  return new Promise((resolve, reject) => {
    scrypt(code.secret, KDF_SALT + code.serverPrefix, keyLength, { N, r, p, maxmem: KDF_MAXMEM }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

function mac(key: Uint8Array, parts: Uint8Array[]): Buffer {
  const hmac = createHmac('sha256', key);
  for (const part of parts) hmac.update(part);
  return hmac.digest().subarray(0, INVITE_PROOF_LENGTH);
}

/** What a JOIN carries: proof that the member's key holds the code. The group comes last (variable length). */
export function joinProof(key: Uint8Array, memberKey: Uint8Array, group: string): Buffer {
  return mac(key, [JOIN_LABEL, memberKey, Buffer.from(group, 'utf8')]);
}

/** What the ACK carries back: proof that this server issued the code, bound to this member and request. */
export function ackProof(key: Uint8Array, serverKey: Uint8Array, memberKey: Uint8Array, request: Uint8Array, group: string): Buffer {
  return mac(key, [ACK_LABEL, serverKey, memberKey, request, Buffer.from(group, 'utf8')]);
}

/**
 * What a NAK to a JOIN with a used, expired or cancelled code carries: proof that the server refusing it issued the
 * code, so the member may take the refusal as final. Bound to the reason, like the ACK's to its request.
 */
export function nakProof(
  key: Uint8Array, serverKey: Uint8Array, memberKey: Uint8Array, request: Uint8Array, reason: number, group: string,
): Buffer {
  return mac(key, [NAK_LABEL, serverKey, memberKey, request, Uint8Array.of(reason), Buffer.from(group, 'utf8')]);
}

/** Constant-time comparison of a presented proof with the expected one. */
export function proofMatches(expected: Uint8Array, presented: Uint8Array): boolean {
  return expected.length === presented.length && timingSafeEqual(expected, presented);
}
