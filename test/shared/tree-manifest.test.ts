import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../packages/shared/src/errors.js';
import { MAX_TREE_ENTRIES, MAX_TREE_PATH, sortTreePaths, treeProblems, validateTree, type TreePath } from '../../packages/shared/src/tree-paths.js';
import { decodeManifest, encodeManifest, type Manifest, type ManifestEntry } from '../../packages/shared/src/wire/manifest.js';
import { decodeFrame, encodeFrame, MAX_TREE_MANIFEST_BYTES } from '../../packages/shared/src/wire/frames.js';
import { expectCode, plain } from './helpers.js';

const sha = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
const dir = (path: string): TreePath => ({ path, kind: 'directory' });
const file = (path: string): TreePath => ({ path, kind: 'file' });

function fileEntry(path: string, data: Buffer, pieceSize: number): ManifestEntry {
  const pieces: Buffer[] = [];
  for (let at = 0; at < data.length; at += pieceSize) pieces.push(sha(data.subarray(at, at + pieceSize)));
  return { kind: 'file', path, size: data.length, mode: 0o644, sha256: sha(data), pieces: Buffer.concat(pieces) };
}

describe('manifest version 2', () => {
  it('round-trips files of zero, one and several pieces and directories', () => {
    const pieceSize = 262_144;
    const manifest: Manifest = {
      pieceSize, tree: true,
      entries: [
        fileEntry('a', Buffer.alloc(0), pieceSize),
        { kind: 'directory', path: 'd', size: 0, mode: 0o755, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) },
        fileEntry('d/big', Buffer.alloc(pieceSize * 2 + 5, 7), pieceSize),
        fileEntry('d/small', Buffer.from('x'), pieceSize),
      ],
    };
    const bytes = encodeManifest(manifest);
    expect(plain(decodeManifest(bytes))).toEqual(plain(manifest));
    // Only the three-piece file lists piece hashes; the one-piece file's is its sha256.
    expect(decodeManifest(bytes).entries[2]!.pieces.length).toBe(3 * 32);
  });

  it('still reads and writes version 1 for a single file', () => {
    const v1: Manifest = { pieceSize: 262_144, entries: [{ path: 'x', size: 1, mode: 0o644, sha256: sha(Buffer.from('x')), pieces: sha(Buffer.from('x')) }] };
    const bytes = encodeManifest(v1);
    expect(bytes[0]).toBe(1);
    expect(plain(decodeManifest(bytes))).toEqual(plain(v1));
  });

  it('refuses a count over MAX_TREE_ENTRIES before reading any entry, and a bad kind', () => {
    const header = Buffer.from([2, 0, 4, 0, 0, 0, 0, 0, 0]);
    header.writeUInt32BE(100_000, 5);
    expectCode(() => decodeManifest(header), ErrorCode.WIRE_FIELD);
    const badKind = Buffer.concat([Buffer.from([2, 0, 4, 0, 0, 0, 0, 0, 1, 9]), Buffer.from([0, 1, 0x61, 0, 0, 1, 0xa4])]);
    expectCode(() => decodeManifest(badKind), ErrorCode.WIRE_FIELD);
  });

  it('TREE parts must fit their total, which is capped', () => {
    const transfer = Buffer.alloc(16, 1);
    const part = encodeFrame({ type: 'tree', transfer, total: 10, offset: 4, chunk: Buffer.alloc(6) });
    expect(plain(decodeFrame(part.subarray(4)))).toEqual(plain({ type: 'tree', transfer, total: 10, offset: 4, chunk: Buffer.alloc(6) }));
    const past = encodeFrame({ type: 'tree', transfer, total: 10, offset: 5, chunk: Buffer.alloc(6) });
    expectCode(() => decodeFrame(past.subarray(4)), ErrorCode.WIRE_FIELD);
    const huge = encodeFrame({ type: 'tree', transfer, total: MAX_TREE_MANIFEST_BYTES + 1, offset: 0, chunk: Buffer.alloc(1) });
    expectCode(() => decodeFrame(huge.subarray(4)), ErrorCode.WIRE_FIELD);
    const empty = encodeFrame({ type: 'tree', transfer, total: 10, offset: 0, chunk: Buffer.alloc(0) });
    expectCode(() => decodeFrame(empty.subarray(4)), ErrorCode.WIRE_FIELD);
  });
});

describe('tree paths', () => {
  it('accepts a sorted tree with dotfiles, nested directories and parents first', () => {
    expect(treeProblems([file('.env'), dir('a'), file('a-b'), dir('a/b'), file('a/b/c'), file('z')])).toEqual([]);
  });

  it('orders paths by their UTF-8 bytes, also where UTF-16 code units order them otherwise', () => {
    // U+E000 is EE 80 80 in UTF-8, before U+10000 (F0 90 80 80); in UTF-16 the surrogate D800 comes first.
    const ordered = [dir('a'), file('a-b'), file('a/c'), file('b'), file('\u00e9'), file('\ue000'), file('\u{10000}')];
    expect(treeProblems(ordered)).toEqual([]);
    expect(sortTreePaths([...ordered].reverse())).toEqual(ordered);
  });

  it.each([
    ['a parent component', [file('../x')]],
    ['a nested parent component', [dir('a'), file('a/../../x')]],
    ['an absolute path', [file('/etc/passwd')]],
    ['an empty component', [dir('a'), file('a//b')]],
    ['a dot component', [dir('a'), file('a/./b')]],
    ['a trailing slash', [dir('a/')]],
    ['a backslash', [file('a\\b')]],
    ['a control character', [file('a\nb')]],
    ['a reserved folder name', [file('.groupcast-partial')]],
    ['a nested reserved folder name', [dir('a'), dir('a/.groupcast-versions')]],
    ['a child before its directory', [file('a/b'), dir('a')]],
    ['a child without its directory', [file('a/b')]],
    ['a child of a file', [file('a'), file('a/b')]],
    ['entries out of order', [file('b'), file('a')]],
    ['entries out of byte order, ASCII after UTF-8', [file('\u00e9'), file('b')]],
    ['entries in UTF-16 order, not byte order', [file('\u{10000}'), file('\ue000')]],
    ['a dot-dot last component under a listed directory', [dir('a'), file('a/..')]],
    ['a case collision in a listed directory', [dir('d'), file('d/A'), file('d/a')]],
    ['a repeated path', [file('a'), file('a')]],
    ['a case collision', [file('README'), file('readme')]],
    ['an NFC collision', [file('e\u0301'), file('\u00e9')]],
    ['a case collision through a parent', [dir('A'), dir('a')]],
    ['a sharp s collision', [file('SS'), file('ß')]],
    ['a 4 KiB path', [file('a'.repeat(200) + '/'.concat('b'.repeat(200)).repeat(20))]],
    ['a path over MAX_TREE_PATH', [file(`${'d/'.repeat(MAX_TREE_PATH / 2)}x`)]],
  ] as [string, TreePath[]][])('refuses %s', (_what, entries) => {
    expect(treeProblems(entries).length).toBeGreaterThan(0);
    expectCode(() => validateTree(entries), ErrorCode.NAME);
  });

  it('refuses more than MAX_TREE_ENTRIES entries (100,000) with one short message', () => {
    const entries = Array.from({ length: 100_000 }, (_, i) => file(`f${String(i).padStart(6, '0')}`));
    expect(treeProblems(entries)).toEqual([`the tree has 100000 entries, limit ${MAX_TREE_ENTRIES}`]);
  });

  it('lists a bounded number of problems', () => {
    const entries = Array.from({ length: 1000 }, (_, i) => file(`../x${i}`));
    expect(treeProblems(entries).length).toBe(20);
  });
});
