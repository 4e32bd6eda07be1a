import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../packages/shared/src/errors.js';
import {
  parsePeerId, peerIdFromRawPublicKey, peerIdFromSpki, rawPublicKeyFromSpki, shortId, signerFromPrivateKey,
  spkiFromRawPublicKey, verifySignature, type PeerId,
} from '../../packages/shared/src/identity.js';
import { counting, expectCode, memberSigner, serverSigner } from './helpers.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const ID_SHAPE = /^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$/;

describe('peer ids', () => {
  const id = serverSigner.id;

  it('are eight dash-separated blocks of seven base32 characters', () => {
    expect(id).toMatch(ID_SHAPE);
    expect(memberSigner.id).toMatch(ID_SHAPE);
    expect(shortId(id)).toBe(id.slice(0, 7));
  });

  it('are the SHA-256 of the SPKI DER, however the key is handed over', () => {
    const spki = createPublicKey(createPrivateKey({
      key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), counting(0, 32)]), format: 'der', type: 'pkcs8',
    })).export({ type: 'spki', format: 'der' });
    expect(peerIdFromSpki(spki)).toBe(id);
    expect(peerIdFromRawPublicKey(serverSigner.publicKey)).toBe(id);
    expect(peerIdFromSpki(spkiFromRawPublicKey(serverSigner.publicKey))).toBe(id);
    expect(rawPublicKeyFromSpki(spki).equals(serverSigner.publicKey)).toBe(true);
  });

  it('are stable: the same key always gives the same id', () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const first = signerFromPrivateKey(privateKey).id;
    expect(signerFromPrivateKey(privateKey).id).toBe(first);
    expect(peerIdFromRawPublicKey(signerFromPrivateKey(privateKey).publicKey)).toBe(first);
    expect(signerFromPrivateKey(generateKeyPairSync('ed25519').privateKey).id).not.toBe(first);
  });

  it('parse in any case, with or without dashes or spaces', () => {
    const compact = id.replace(/-/g, '');
    for (const text of [id, id.toLowerCase(), compact, compact.toLowerCase(), id.replace(/-/g, ' '), ` ${id} `,
      id.split('').map((c, i) => (i % 2 ? c.toLowerCase() : c)).join('')]) {
      expect(parsePeerId(text)).toBe(id);
    }
  });

  it('refuse any single-character typo with BAD_ID', () => {
    const compact = id.replace(/-/g, '');
    for (let at = 0; at < compact.length; at++) {
      for (const replacement of ALPHABET) {
        if (replacement === compact[at]) continue;
        const typo = compact.slice(0, at) + replacement + compact.slice(at + 1);
        expectCode(() => parsePeerId(typo), ErrorCode.BAD_ID);
      }
    }
  });

  it('refuse the wrong length, foreign characters, and ids that are not canonical', () => {
    for (const text of ['', id.slice(0, -1), `${id}A`, id.replace(/[A-Z]/, '0'), id.replace(/[A-Z]/, '1'), 'not an id']) {
      expectCode(() => parsePeerId(text), ErrorCode.BAD_ID);
    }
    // The 52nd data character holds one bit of the digest and four zero padding bits; a Luhn-valid
    // id with non-zero padding there decodes to no digest at all.
    const compact = id.replace(/-/g, '');
    const block = compact.slice(42, 55);
    const last = block[12]!;
    const bad = ALPHABET[(ALPHABET.indexOf(last) ^ 1)]!;
    const luhn = luhn32(block.slice(0, 12) + bad);
    expectCode(() => parsePeerId(compact.slice(0, 42) + block.slice(0, 12) + bad + luhn), ErrorCode.BAD_ID);
  });

  it('rawPublicKeyFromSpki refuses a key that is not Ed25519', () => {
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
    expectCode(() => rawPublicKeyFromSpki(p256), ErrorCode.BAD_ID);
    expectCode(() => rawPublicKeyFromSpki(Buffer.alloc(44)), ErrorCode.BAD_ID);
  });
});

/** The check character as docs/PROTOCOL.md describes it, written independently of identity.ts. */
function luhn32(block: string): string {
  let factor = 1;
  let sum = 0;
  for (let i = block.length - 1; i >= 0; i--) {
    const product = factor * ALPHABET.indexOf(block[i]!);
    sum += Math.floor(product / 32) + (product % 32);
    factor = factor === 1 ? 2 : 1;
  }
  return ALPHABET[(32 - (sum % 32)) % 32]!;
}

describe('the id algorithm as specified', () => {
  it('matches the description in docs/PROTOCOL.md for random keys', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (raw) => {
        const id = peerIdFromRawPublicKey(raw) as PeerId;
        const compact = id.replace(/-/g, '');
        for (let b = 0; b < 4; b++) {
          const block = compact.slice(b * 14, b * 14 + 13);
          expect(compact[b * 14 + 13]).toBe(luhn32(block));
        }
        expect(parsePeerId(id.toLowerCase())).toBe(id);
      }),
      { numRuns: 200 },
    );
  });
});

describe('signatures', () => {
  const message = Buffer.from('groupcast');

  it('a signer signs what verifySignature accepts, and nothing else', () => {
    const signature = serverSigner.sign(message);
    expect(signature.length).toBe(64);
    expect(verifySignature(serverSigner.publicKey, message, signature)).toBe(true);
    expect(verifySignature(memberSigner.publicKey, message, signature)).toBe(false);
    expect(verifySignature(serverSigner.publicKey, Buffer.from('groupcasT'), signature)).toBe(false);
    const flipped = Buffer.from(signature);
    flipped[10]! ^= 1;
    expect(verifySignature(serverSigner.publicKey, message, flipped)).toBe(false);
  });

  it('Ed25519 is deterministic: the same key and message give the same signature', () => {
    expect(serverSigner.sign(message).equals(serverSigner.sign(message))).toBe(true);
  });

  it('verifySignature never throws on garbage, and says false', () => {
    const garbage = fc.uint8Array({ maxLength: 80 });
    fc.assert(
      fc.property(garbage, garbage, garbage, (key, data, signature) => {
        expect(verifySignature(key, data, signature)).toBe(false);
      }),
      { numRuns: 300 },
    );
    expect(verifySignature(new Uint8Array(0), message, new Uint8Array(0))).toBe(false);
    expect(verifySignature(serverSigner.publicKey, message, new Uint8Array(63))).toBe(false);
    expect(verifySignature(serverSigner.publicKey, message, new Uint8Array(65))).toBe(false);
  });
});
