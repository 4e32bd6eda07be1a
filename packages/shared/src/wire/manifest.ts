import { MAX_WIRE_NAME, SHA256_LENGTH } from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import { filePieces, isPieceSize, MAX_MANIFEST_PIECES, MAX_TREE_PIECES, pieceCount, TreePieces, type PieceLayout } from '../pieces.js';
import { MAX_TREE_ENTRIES } from '../tree-paths.js';
import { encode, Reader, type Sink } from './cursor.js';

/**
 * A transfer's manifest: the piece size and, per entry, its path, size, mode, SHA-256 and the SHA-256
 * of every piece. Version 1 is a single file: one entry, in a MANIFEST frame. Version 2 is a directory
 * tree: entries are files and directories with `/`-separated paths, carried in TREE frames (it is
 * larger than a frame); its SHA-256 is the tree's identity (PROTOCOL.md §7.7).
 */
export const MANIFEST_VERSION = 1;
export const TREE_MANIFEST_VERSION = 2;
/** Entries a version-1 manifest may list: one file. */
export const MAX_MANIFEST_ENTRIES = 1;
/** Permission bits only: type bits never travel. */
const MAX_MODE = 0o7777;

export type EntryKind = 'file' | 'directory';
const KIND_CODES: Record<EntryKind, number> = { file: 0, directory: 1 };

export interface ManifestEntry {
  path: string;
  size: number;
  mode: number;
  /** Empty for a directory. */
  sha256: Buffer;
  /** SHA-256 of every piece, concatenated: 32 × ceil(size / pieceSize) bytes (a one-piece file: its sha256). */
  pieces: Buffer;
  /** Only in a tree (version 2); a version-1 entry is a file. */
  kind?: EntryKind;
}

export interface Manifest {
  pieceSize: number;
  entries: ManifestEntry[];
  /** A directory tree (version 2). Absent: one file (version 1). */
  tree?: boolean;
}

export function writeManifest(sink: Sink, manifest: Manifest): void {
  if (manifest.tree) {
    writeTreeManifest(sink, manifest);
    return;
  }
  sink.u8(MANIFEST_VERSION);
  sink.u32(manifest.pieceSize);
  sink.u16(manifest.entries.length);
  for (const entry of manifest.entries) {
    sink.str16(entry.path);
    sink.u64(entry.size);
    sink.u32(entry.mode);
    sink.bytes(entry.sha256);
    sink.u32(entry.pieces.length / SHA256_LENGTH);
    sink.bytes(entry.pieces);
  }
}

/** Version 2: a u32 count, a kind per entry, directories without size or hashes, one-piece files without piece hashes. */
function writeTreeManifest(sink: Sink, manifest: Manifest): void {
  sink.u8(TREE_MANIFEST_VERSION);
  sink.u32(manifest.pieceSize);
  sink.u32(manifest.entries.length);
  for (const entry of manifest.entries) {
    const kind = entry.kind ?? 'file';
    sink.u8(KIND_CODES[kind]);
    sink.str16(entry.path);
    sink.u32(entry.mode);
    if (kind === 'directory') continue;
    sink.u64(entry.size);
    sink.bytes(entry.sha256);
    const pieces = entry.pieces.length / SHA256_LENGTH;
    sink.u32(pieces);
    if (pieces > 1) sink.bytes(entry.pieces);
  }
}

function field(message: string): GroupcastError {
  return new GroupcastError(ErrorCode.WIRE_FIELD, message);
}

function readPieceSize(reader: Reader): number {
  const pieceSize = reader.u32('piece size');
  if (!isPieceSize(pieceSize)) throw field(`piece size ${pieceSize} is not a power of two in range`);
  return pieceSize;
}

function readMode(reader: Reader): number {
  const mode = reader.u32('entry mode');
  if (mode > MAX_MODE) throw field(`entry mode ${mode.toString(8)} has bits beyond 7777`);
  return mode;
}

function readPieceCount(reader: Reader, size: number, pieceSize: number): number {
  const pieces = reader.u32('piece count');
  if (pieces !== pieceCount(size, pieceSize)) throw field(`${pieces} pieces listed for ${size} bytes in ${pieceSize}-byte pieces`);
  return pieces;
}

export function readManifest(reader: Reader): Manifest {
  const version = reader.u8('manifest version');
  if (version === TREE_MANIFEST_VERSION) return readTreeManifest(reader);
  if (version !== MANIFEST_VERSION) throw field(`manifest version ${version}, this build reads ${MANIFEST_VERSION} and ${TREE_MANIFEST_VERSION}`);
  const pieceSize = readPieceSize(reader);
  const count = reader.u16('entry count');
  if (count < 1 || count > MAX_MANIFEST_ENTRIES) throw field(`manifest lists ${count} entries, limit ${MAX_MANIFEST_ENTRIES}`);
  const entries: ManifestEntry[] = [];
  let totalPieces = 0;
  for (let i = 0; i < count; i++) {
    const path = reader.str16('entry path', MAX_WIRE_NAME);
    const size = reader.u64('entry size');
    const mode = readMode(reader);
    const sha256 = reader.bytes(SHA256_LENGTH, 'entry sha256');
    const pieces = readPieceCount(reader, size, pieceSize);
    totalPieces += pieces;
    // Checked before the hashes are read, so a lying count never makes the reader allocate.
    if (totalPieces > MAX_MANIFEST_PIECES) throw field(`manifest lists over ${MAX_MANIFEST_PIECES} pieces`);
    entries.push({ path, size, mode, sha256, pieces: reader.bytes(pieces * SHA256_LENGTH, 'piece hashes') });
  }
  return { pieceSize, entries };
}

/**
 * Version 2. Only the structure is checked here (counts, sizes, pieces); whether the paths are safe to
 * write is the tree rule's to say (tree-paths.ts), so a member can decline an unsafe tree politely.
 */
function readTreeManifest(reader: Reader): Manifest {
  const pieceSize = readPieceSize(reader);
  const count = reader.u32('entry count');
  if (count > MAX_TREE_ENTRIES) throw field(`tree lists ${count} entries, limit ${MAX_TREE_ENTRIES}`);
  const entries: ManifestEntry[] = [];
  let totalPieces = 0;
  for (let i = 0; i < count; i++) {
    const code = reader.u8('entry kind');
    if (code !== KIND_CODES.file && code !== KIND_CODES.directory) throw field(`entry kind ${code} is neither a file (0) nor a directory (1)`);
    // Any str16: a path over MAX_TREE_PATH is the tree rule's to refuse (BAD_NAME), not a broken manifest.
    const path = reader.str16('entry path');
    const mode = readMode(reader);
    if (code === KIND_CODES.directory) {
      entries.push({ kind: 'directory', path, size: 0, mode, sha256: Buffer.alloc(0), pieces: Buffer.alloc(0) });
      continue;
    }
    const size = reader.u64('entry size');
    const sha256 = reader.bytes(SHA256_LENGTH, 'entry sha256');
    const pieces = readPieceCount(reader, size, pieceSize);
    totalPieces += pieces;
    if (totalPieces > MAX_TREE_PIECES) throw field(`tree lists over ${MAX_TREE_PIECES} pieces`);
    // A one-piece file's only piece hash is its sha256, so it is not sent twice.
    const hashes = pieces > 1 ? reader.bytes(pieces * SHA256_LENGTH, 'piece hashes') : pieces === 1 ? Buffer.from(sha256) : Buffer.alloc(0);
    entries.push({ kind: 'file', path, size, mode, sha256, pieces: hashes });
  }
  return { pieceSize, entries, tree: true };
}

/** A manifest as bytes: what TREE frames carry, and what a tree's sha256 (its identity) is taken over. */
export function encodeManifest(manifest: Manifest): Buffer {
  return encode((sink) => writeManifest(sink, manifest));
}

/** Decodes a whole manifest (the reassembled TREE parts); trailing bytes are refused. */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const reader = new Reader(bytes);
  const manifest = readManifest(reader);
  reader.end('manifest');
  return manifest;
}

/** Where a transfer's pieces lie in its bytes: a tree's per file over the concatenation, a file's evenly. */
export function manifestPieces(manifest: Manifest): PieceLayout {
  if (!manifest.tree) return filePieces(manifest.entries[0]?.size ?? 0, manifest.pieceSize);
  return new TreePieces(manifest.entries.filter((entry) => entry.kind === 'file').map((entry) => entry.size), manifest.pieceSize);
}

/** Every piece's SHA-256 in the transfer's numbering (manifestPieces), concatenated: a tree's files' lists one after the other. */
export function manifestHashes(manifest: Manifest): Buffer {
  if (!manifest.tree) return manifest.entries[0]?.pieces ?? Buffer.alloc(0);
  return Buffer.concat(manifest.entries.filter((entry) => entry.kind === 'file').map((entry) => entry.pieces));
}
