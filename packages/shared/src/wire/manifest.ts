import { MAX_WIRE_NAME, SHA256_LENGTH } from '../constants.js';
import { ErrorCode, GroupcastError } from '../errors.js';
import { isPieceSize, MAX_MANIFEST_PIECES, pieceCount } from '../pieces.js';
import type { Reader, Sink } from './cursor.js';

/**
 * A transfer's manifest: the piece size and, per entry, its path, size, mode, SHA-256 and the SHA-256
 * of every piece. A single file is a manifest of one entry; a directory tree is the same format with
 * more entries (paths with `/`), so trees need no new frame.
 */
export const MANIFEST_VERSION = 1;
/** Entries a manifest may list; a single-file transfer has one. Raised when trees arrive. */
export const MAX_MANIFEST_ENTRIES = 1;
/** Permission bits only: type bits never travel. */
const MAX_MODE = 0o7777;

export interface ManifestEntry {
  path: string;
  size: number;
  mode: number;
  sha256: Buffer;
  /** SHA-256 of every piece, concatenated: 32 × ceil(size / pieceSize) bytes. */
  pieces: Buffer;
}

export interface Manifest {
  pieceSize: number;
  entries: ManifestEntry[];
}

export function writeManifest(sink: Sink, manifest: Manifest): void {
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

function field(message: string): GroupcastError {
  return new GroupcastError(ErrorCode.WIRE_FIELD, message);
}

export function readManifest(reader: Reader): Manifest {
  const version = reader.u8('manifest version');
  if (version !== MANIFEST_VERSION) throw field(`manifest version ${version}, this build reads ${MANIFEST_VERSION}`);
  const pieceSize = reader.u32('piece size');
  if (!isPieceSize(pieceSize)) throw field(`piece size ${pieceSize} is not a power of two in range`);
  const count = reader.u16('entry count');
  if (count < 1 || count > MAX_MANIFEST_ENTRIES) throw field(`manifest lists ${count} entries, limit ${MAX_MANIFEST_ENTRIES}`);
  const entries: ManifestEntry[] = [];
  let totalPieces = 0;
  for (let i = 0; i < count; i++) {
    const path = reader.str16('entry path', MAX_WIRE_NAME);
    const size = reader.u64('entry size');
    const mode = reader.u32('entry mode');
    if (mode > MAX_MODE) throw field(`entry mode ${mode.toString(8)} has bits beyond 7777`);
    const sha256 = reader.bytes(SHA256_LENGTH, 'entry sha256');
    const pieces = reader.u32('piece count');
    if (pieces !== pieceCount(size, pieceSize)) throw field(`${pieces} pieces listed for ${size} bytes in ${pieceSize}-byte pieces`);
    totalPieces += pieces;
    // Checked before the hashes are read, so a lying count never makes the reader allocate.
    if (totalPieces > MAX_MANIFEST_PIECES) throw field(`manifest lists over ${MAX_MANIFEST_PIECES} pieces`);
    entries.push({ path, size, mode, sha256, pieces: reader.bytes(pieces * SHA256_LENGTH, 'piece hashes') });
  }
  return { pieceSize, entries };
}
