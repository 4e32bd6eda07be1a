import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../packages/shared/src/errors.js';
import { BASE32_ALPHABET } from '../../packages/shared/src/identity.js';
import {
  ackProof, codeIsForServer, deriveInviteKey, joinProof, newJoinCode, parseJoinCode, proofMatches,
} from '../../packages/shared/src/invite.js';
import { GOLDEN_CODE, GOLDEN_INVITE_KEY } from './golden-examples.js';
import { counting, expectCode, memberSigner, serverSigner } from './helpers.js';

describe('join codes', () => {
  it('a new code is 15 characters in blocks of five, starts with the server id, and parses back to itself', () => {
    const code = newJoinCode(serverSigner.id);
    expect(code.text).toMatch(/^[A-Z2-7]{5}-[A-Z2-7]{5}-[A-Z2-7]{5}$/);
    expect(codeIsForServer(code, serverSigner.id)).toBe(true);
    expect(codeIsForServer(code, memberSigner.id)).toBe(false);
    expect(parseJoinCode(code.text)).toEqual(code);
  });

  it('new codes do not repeat', () => {
    const secrets = new Set(Array.from({ length: 2000 }, () => newJoinCode(serverSigner.id).secret));
    expect(secrets.size).toBe(2000);
  });

  it('reads what a person types: any case, spaces, and 0 / 1 / 8 for O / I / B', () => {
    expect(parseJoinCode(' ubiik 7q2mx 4pnr0 ').text).toBe(GOLDEN_CODE);
    expect(parseJoinCode('UBIIK7Q2MX4PNRO').text).toBe(GOLDEN_CODE);
  });

  it('catches every single-character typo with the check character', () => {
    const compact = GOLDEN_CODE.replace(/-/g, '');
    for (let i = 0; i < compact.length; i++) {
      for (const char of BASE32_ALPHABET) {
        if (char === compact[i]) continue;
        expectCode(() => parseJoinCode(compact.slice(0, i) + char + compact.slice(i + 1)), ErrorCode.BAD_CODE);
      }
    }
  });

  it.each(['', 'UBIIK-7Q2MX-4PNR', 'UBIIK-7Q2MX-4PNROO', 'UBIIK-7Q2MX-4PN9O', 'ÜBIIK-7Q2MX-4PNRO'])('refuses %j', (text) => {
    expectCode(() => parseJoinCode(text), ErrorCode.BAD_CODE);
  });

  it('the key depends on the whole code', async () => {
    expect(await deriveInviteKey(parseJoinCode(GOLDEN_CODE))).toEqual(GOLDEN_INVITE_KEY);
    const other = newJoinCode(serverSigner.id);
    expect(await deriveInviteKey(other)).not.toEqual(GOLDEN_INVITE_KEY);
  });

  it('a JOIN proof is bound to the member key and the group; an ACK proof also to the server key and the request', () => {
    const key = GOLDEN_INVITE_KEY;
    const proof = joinProof(key, memberSigner.publicKey, 'Developers');
    expect(proof).toHaveLength(16);
    expect(proofMatches(joinProof(key, memberSigner.publicKey, 'Developers'), proof)).toBe(true);
    expect(proofMatches(joinProof(key, serverSigner.publicKey, 'Developers'), proof)).toBe(false);
    expect(proofMatches(joinProof(key, memberSigner.publicKey, 'Designers'), proof)).toBe(false);
    expect(proofMatches(joinProof(counting(0, 32), memberSigner.publicKey, 'Developers'), proof)).toBe(false);
    expect(proofMatches(proof, proof.subarray(0, 15))).toBe(false);
    expect(proofMatches(proof, Buffer.alloc(0))).toBe(false);

    const request = counting(0x40, 16);
    const ack = ackProof(key, serverSigner.publicKey, memberSigner.publicKey, request, 'Developers');
    expect(ack).not.toEqual(proof);
    expect(ackProof(key, memberSigner.publicKey, memberSigner.publicKey, request, 'Developers')).not.toEqual(ack);
    expect(ackProof(key, serverSigner.publicKey, memberSigner.publicKey, counting(0x41, 16), 'Developers')).not.toEqual(ack);
  });
});
