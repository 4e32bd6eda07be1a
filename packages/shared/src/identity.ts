import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { base32nopad } from '@scure/base';
import { ErrorCode, GroupcastError } from './errors.js';

/**
 * A peer's id is the SHA-256 of its Ed25519 public key (as SubjectPublicKeyInfo DER), shown the way
 * Syncthing shows device ids: base32 in eight dash-separated blocks of seven characters, each pair of
 * blocks carrying a Luhn mod-32 check character, so a mistyped id is caught before it is trusted.
 */
export type PeerId = string & { readonly __brand: 'PeerId' };

export const PUBLIC_KEY_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
export const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function spkiFromRawPublicKey(raw: Uint8Array): Buffer {
  return Buffer.concat([ED25519_SPKI_PREFIX, raw]);
}

export function rawPublicKeyFromSpki(spki: Uint8Array): Buffer {
  const der = Buffer.from(spki);
  if (der.length !== ED25519_SPKI_PREFIX.length + PUBLIC_KEY_LENGTH || !der.subarray(0, 12).equals(ED25519_SPKI_PREFIX)) {
    throw new GroupcastError(ErrorCode.BAD_ID, 'public key is not Ed25519');
  }
  return der.subarray(ED25519_SPKI_PREFIX.length);
}

export function peerIdFromSpki(spki: Uint8Array): PeerId {
  return formatId(createHash('sha256').update(spki).digest());
}

export function peerIdFromRawPublicKey(raw: Uint8Array): PeerId {
  return peerIdFromSpki(spkiFromRawPublicKey(raw));
}

/** The Luhn mod-32 check character of a string of base32 characters (ids and join codes use it). */
export function luhn32(chars: string): string {
  let factor = 1;
  let sum = 0;
  for (let i = chars.length - 1; i >= 0; i--) {
    let addend = factor * BASE32_ALPHABET.indexOf(chars[i] ?? 'A');
    factor = factor === 2 ? 1 : 2;
    addend = Math.floor(addend / 32) + (addend % 32);
    sum += addend;
  }
  return BASE32_ALPHABET[(32 - (sum % 32)) % 32] ?? 'A';
}

function formatId(digest: Buffer): PeerId {
  const plain = base32nopad.encode(digest); // 52 characters
  let checked = '';
  for (let i = 0; i < 4; i++) {
    const block = plain.slice(i * 13, i * 13 + 13);
    checked += block + luhn32(block);
  }
  return (checked.match(/.{7}/g) ?? []).join('-') as PeerId;
}

/** Accepts an id typed by a person: any case, with or without dashes or spaces. */
export function parsePeerId(text: string): PeerId {
  const compact = text.toUpperCase().replace(/[-\s]/g, '');
  if (!/^[A-Z2-7]{56}$/.test(compact)) {
    throw new GroupcastError(ErrorCode.BAD_ID, `not a groupcast id: "${text.slice(0, 80)}"`);
  }
  let plain = '';
  for (let i = 0; i < 4; i++) {
    const block = compact.slice(i * 14, i * 14 + 13);
    if (luhn32(block) !== compact[i * 14 + 13]) {
      throw new GroupcastError(ErrorCode.BAD_ID, `id has a wrong check character in block ${i * 2 + 2}: "${text.slice(0, 80)}"`);
    }
    plain += block;
  }
  let digest: Uint8Array;
  try {
    digest = base32nopad.decode(plain);
  } catch (err) {
    // Luhn-valid but not canonical: the last data character carries padding bits that are not zero.
    throw new GroupcastError(ErrorCode.BAD_ID, `not a groupcast id: "${text.slice(0, 80)}"`, { cause: err });
  }
  return formatId(Buffer.from(digest));
}

/** The first block: enough to tell peers apart in logs and tables. */
export function shortId(id: PeerId): string {
  return id.slice(0, 7);
}

/** The key material a daemon signs datagrams with. */
export interface Signer {
  readonly id: PeerId;
  readonly publicKey: Buffer;
  sign(data: Uint8Array): Buffer;
}

export function signerFromPrivateKey(privateKey: KeyObject): Signer {
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  return {
    id: peerIdFromSpki(spki),
    publicKey: rawPublicKeyFromSpki(spki),
    sign: (data) => sign(null, data, privateKey),
  };
}

const publicKeys = new Map<string, KeyObject>();
const PUBLIC_KEY_CACHE = 1024;

/** Verifies an Ed25519 signature by a raw public key; never throws on bad input. */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  const cacheKey = Buffer.from(publicKey).toString('base64');
  let key = publicKeys.get(cacheKey);
  try {
    if (!key) {
      key = createPublicKey({ key: spkiFromRawPublicKey(publicKey), format: 'der', type: 'spki' });
      if (publicKeys.size >= PUBLIC_KEY_CACHE) publicKeys.clear();
      publicKeys.set(cacheKey, key);
    }
    return verify(null, data, key, signature);
  } catch {
    return false;
  }
}
