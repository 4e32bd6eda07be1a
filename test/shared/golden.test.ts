import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parsePeerId } from '../../packages/shared/src/identity.js';
import { deriveInviteKey, parseJoinCode } from '../../packages/shared/src/invite.js';
import { decodeDatagram, encodeDatagram } from '../../packages/shared/src/wire/control.js';
import { decodeFrame, encodeFrame } from '../../packages/shared/src/wire/frames.js';
import { createHash } from 'node:crypto';
import { GOLDEN, GOLDEN_CODE, GOLDEN_IDS, GOLDEN_INVITE_KEY, GOLDEN_TREE, GOLDEN_TREE_BYTES } from './golden-examples.js';
import { decodeManifest } from '../../packages/shared/src/wire/manifest.js';
import { plain } from './helpers.js';

/**
 * docs/PROTOCOL.md is the fixture: its worked examples are read from the document and compared with
 * what the encoder makes, so the spec cannot drift from the code.
 */
const PROTOCOL = readFileSync(fileURLToPath(new URL('../../docs/PROTOCOL.md', import.meta.url)), 'utf8');

/** The code block after each `<!-- MARKER:name -->` comment, by name. */
function blocks(marker: string): Map<string, string> {
  const found = new Map<string, string>();
  const pattern = new RegExp(`<!-- ${marker}:([\\w-]+) -->\\s*\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``, 'g');
  for (const match of PROTOCOL.matchAll(pattern)) {
    expect(found.has(match[1]!), `${marker}:${match[1]} appears twice`).toBe(false);
    found.set(match[1]!, match[2]!);
  }
  return found;
}

/** Hex bytes from an annotated block: each line is hex pairs, then `#` and a note. */
function hexOf(block: string): string {
  const hex = block
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').replace(/\s+/g, ''))
    .join('');
  expect(hex).toMatch(/^([0-9a-f]{2})*$/);
  return hex;
}

const examples = blocks('golden');
const ids = blocks('golden-id');
const invite = blocks('golden-invite');

describe('docs/PROTOCOL.md worked examples', () => {
  it('has every example and no unknown ones', () => {
    expect([...examples.keys()].sort()).toEqual(Object.keys(GOLDEN).sort());
    expect([...ids.keys()].sort()).toEqual(Object.keys(GOLDEN_IDS).sort());
  });

  it.each(Object.entries(GOLDEN))('%s: the document shows exactly what the encoder makes, and it decodes back', (name, example) => {
    const documented = hexOf(examples.get(name) ?? '');
    if (example.kind === 'datagram') {
      const { signer, timestamp, nonce, message } = example;
      expect(documented).toBe(encodeDatagram(message, signer, { timestamp, nonce }).toString('hex'));
      const decoded = decodeDatagram(Buffer.from(documented, 'hex'));
      expect(decoded.sender).toBe(signer.id);
      expect(plain({ timestamp: decoded.timestamp, nonce: decoded.nonce, message: decoded.message })).toEqual(plain({ timestamp, nonce, message }));
    } else {
      expect(documented).toBe(encodeFrame(example.frame).toString('hex'));
      const buf = Buffer.from(documented, 'hex');
      expect(buf.readUInt32BE(0)).toBe(buf.length - 4);
      expect(plain(decodeFrame(buf.subarray(4)))).toEqual(plain(example.frame));
    }
  });

  it.each(Object.entries(GOLDEN_IDS))('the %s id shown is the id of its key', (name, signer) => {
    const shown = (ids.get(name) ?? '').trim();
    expect(shown).toBe(signer.id);
    expect(parsePeerId(shown)).toBe(signer.id);
  });

  it('the join code shown is for the example server and stretches to the key shown', async () => {
    const code = parseJoinCode((invite.get('code') ?? '').trim());
    expect(code.text).toBe(GOLDEN_CODE);
    expect(GOLDEN_IDS.server!.id.startsWith(code.serverPrefix)).toBe(true);
    expect((invite.get('key') ?? '').trim()).toBe(GOLDEN_INVITE_KEY.toString('hex'));
    expect((await deriveInviteKey(code)).toString('hex')).toBe(GOLDEN_INVITE_KEY.toString('hex'));
  });

  it('the tree example decodes to its manifest, and its sha256 is the one the document shows', () => {
    expect(plain(decodeManifest(GOLDEN_TREE_BYTES))).toEqual(plain(GOLDEN_TREE));
    const sha256 = createHash('sha256').update(GOLDEN_TREE_BYTES).digest('hex');
    expect(PROTOCOL).toContain(`\`${sha256.slice(0, 8)}…${sha256.slice(-8)}\``);
  });

  it('shows the raw public keys of the example keys', () => {
    for (const signer of Object.values(GOLDEN_IDS)) expect(PROTOCOL).toContain(signer.publicKey.toString('hex'));
  });
});
