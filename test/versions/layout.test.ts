import { describe, expect, it } from 'vitest';
import { basename, dirname } from 'node:path';
import { Bitfield, filePieces, heldPrefix, manifestHashes, manifestPieces, missingRanges, TreePieces } from '../../packages/shared/src/index.js';
import { placementFor } from '../../packages/client/src/receive/download-area.js';
import { parseReceivedLog } from '../../packages/client/src/receive/received-log.js';
import { notReplaceable, tempPathFor, versionPath, versionsFolder } from '../../packages/client/src/receive/versions.js';

/** The pure parts of versions (tree-design.md's layout) and of the held-pieces rule (PROTOCOL.md §7.5). */
const HEX = 'ab'.repeat(16);

describe('the versions layout', () => {
  it('keeps versions under <root>/.groupcast-versions/<group>/<name>/<transfer>', () => {
    expect(versionsFolder('/dl', 'Developers', 'tool.bin')).toBe('/dl/.groupcast-versions/Developers/tool.bin');
    expect(versionPath('/dl', 'Developers', 'tool.bin', HEX)).toBe(`/dl/.groupcast-versions/Developers/tool.bin/${HEX}`);
  });

  it('makes a temp name beside the final path, a dot name within NAME_MAX even for a 255-byte name', () => {
    const short = placementFor('/dl', 'Developers', 'tool.bin');
    expect(tempPathFor(short, 'tool.bin', HEX)).toBe(`/dl/Developers/.tool.bin.gc-${HEX}`);
    const name = 'é'.repeat(127);
    const long = tempPathFor(placementFor('/dl', 'Developers', name), name, HEX);
    expect(dirname(long)).toBe('/dl/Developers');
    expect(Buffer.byteLength(basename(long))).toBeLessThanOrEqual(255);
    expect(basename(long).endsWith(`.gc-${HEX}`)).toBe(true);
  });

  it('reads old received-log lines without kind as files, and a tree record never lets a file replace it', () => {
    const line = { transfer: HEX, group: 'G', name: 'f', sha256: '00'.repeat(32), size: 3, path: '/dl/G/f', time: '' };
    const { records } = parseReceivedLog(`${JSON.stringify(line)}\n`);
    const found = { stamp: { dev: 1, ino: 2, size: 3, mtimeNs: 0n, ctimeNs: 0n }, sha256: Buffer.alloc(32) };
    expect(notReplaceable(found, records[0]!)).toBeUndefined();
    expect(notReplaceable(found, { ...records[0]!, kind: 'tree' })).toMatch(/directory/);
    expect(notReplaceable({ ...found, sha256: undefined }, records[0]!)).toMatch(/changed/);
  });
});

describe('the held-pieces rule', () => {
  it('sends, from the offset, every piece not held, adjacent ones merged; the ACCEPT offset is the held prefix', () => {
    const held = Bitfield.fromWire(Buffer.from([0xe7, 0xc0]), 10);
    expect(heldPrefix(held, filePieces(10 * 4 - 1, 4))).toBe(12);
    expect(missingRanges(held, filePieces(10 * 4 - 1, 4), 12)).toEqual([{ start: 12, end: 20 }]);
    expect(missingRanges(Bitfield.empty(3), filePieces(10, 4), 0)).toEqual([{ start: 0, end: 10 }]);
    expect(missingRanges(Bitfield.full(3), filePieces(10, 4), 0)).toEqual([]);
    // The short last piece alone missing.
    expect(missingRanges(Bitfield.fromWire(Buffer.from([0xc0]), 3), filePieces(10, 4), 8)).toEqual([{ start: 8, end: 10 }]);
    expect(heldPrefix(Bitfield.full(3), filePieces(10, 4))).toBe(10);
  });
});

describe('the held-pieces rule over a tree (PROTOCOL.md §7.7)', () => {
  // Files of 10, 0 and 5 bytes in 4-byte pieces: pieces 0–2 are the first file's, 3–4 the third's.
  const tree = new TreePieces([10, 0, 5], 4);

  it('numbers pieces per file over the concatenation; an empty file has none', () => {
    expect(tree.count).toBe(5);
    expect(tree.size).toBe(15);
    expect([0, 1, 2, 3, 4].map((piece) => tree.span(piece))).toEqual([
      { start: 0, end: 4 }, { start: 4, end: 8 }, { start: 8, end: 10 }, { start: 10, end: 14 }, { start: 14, end: 15 },
    ]);
    expect([0, 2, 3, 4].map((piece) => tree.fileOf(piece))).toEqual([0, 0, 2, 2]);
  });

  it('finds the piece any byte of the concatenation lies in, as a file finds its own', () => {
    expect([0, 3, 4, 9, 10, 13, 14].map((offset) => tree.pieceAt(offset))).toEqual([0, 0, 1, 2, 3, 3, 4]);
    const file = filePieces(10, 4);
    expect([0, 3, 4, 9].map((offset) => file.pieceAt(offset))).toEqual([0, 0, 1, 2]);
    expect([tree.pieceSize, file.pieceSize]).toEqual([4, 4]);
  });

  it('merges missing pieces across files, and the ACCEPT offset is the start of the first one missing', () => {
    const held = Bitfield.fromWire(Buffer.from([0b11000000]), 5);
    expect(heldPrefix(held, tree)).toBe(8);
    expect(missingRanges(held, tree, 8)).toEqual([{ start: 8, end: 15 }]);
    const gaps = Bitfield.fromWire(Buffer.from([0b10101000]), 5);
    expect(missingRanges(gaps, tree, heldPrefix(gaps, tree))).toEqual([{ start: 4, end: 8 }, { start: 10, end: 14 }]);
    expect(heldPrefix(Bitfield.full(5), tree)).toBe(15);
  });

  it('a manifest gives the same layout to both ends', () => {
    const entry = (path: string, size: number) => ({ kind: 'file' as const, path, size, mode: 0o644, sha256: Buffer.alloc(32), pieces: Buffer.alloc(0) });
    const manifest = {
      pieceSize: 4, tree: true, entries: [entry('a', 10), { ...entry('d', 0), kind: 'directory' as const }, entry('d/e', 0), entry('z', 5)],
    };
    const layout = manifestPieces(manifest);
    expect([layout.count, layout.size, layout.span(3)]).toEqual([5, 15, { start: 10, end: 14 }]);
    expect(manifestPieces({ pieceSize: 4, entries: [entry('f', 9)] }).count).toBe(3);
    // One hash per piece in the same numbering: the tree's files' lists one after the other.
    const hashed = (path: string, pieces: number, fill: number) => ({ ...entry(path, pieces * 4), pieces: Buffer.alloc(32 * pieces, fill) });
    const hashes = manifestHashes({ pieceSize: 4, tree: true, entries: [hashed('a', 2, 1), { ...entry('d', 0), kind: 'directory' as const }, hashed('z', 1, 2)] });
    expect(hashes).toEqual(Buffer.concat([Buffer.alloc(64, 1), Buffer.alloc(32, 2)]));
  });
});
