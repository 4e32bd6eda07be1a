import { describe, expect, it } from 'vitest';
import { basename, dirname } from 'node:path';
import { Bitfield, filePieces, heldPrefix, missingRanges } from '../../packages/shared/src/index.js';
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
