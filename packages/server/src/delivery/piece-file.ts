import { readFile } from 'node:fs/promises';
import {
  errnoCode, isPieceSize, MAX_MANIFEST_PIECES, pieceCount, SHA256_LENGTH, writeFileAtomic,
  type Manifest,
} from '@groupcast/shared';
import type { TransferRecord } from './outbox.js';

/** Beside each store file: its piece size (u32) then the SHA-256 of every piece. */
export const PIECES_SUFFIX = '.pieces';
/** Mode a single file is delivered with; trees will carry each entry's own. */
const FILE_MODE = 0o644;

export interface StoredPieces {
  pieceSize: number;
  hashes: Buffer;
}

export async function savePieces(storePath: string, pieces: StoredPieces): Promise<void> {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(pieces.pieceSize, 0);
  await writeFileAtomic(`${storePath}${PIECES_SUFFIX}`, Buffer.concat([header, pieces.hashes]));
}

/** The pieces kept for a store file, or undefined if there are none or they do not fit the file. */
export async function loadPieces(storePath: string, size: number): Promise<StoredPieces | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(`${storePath}${PIECES_SUFFIX}`);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  if (bytes.length < 4) return undefined;
  const pieceSize = bytes.readUInt32BE(0);
  const hashes = bytes.subarray(4);
  if (!isPieceSize(pieceSize) || hashes.length !== pieceCount(size, pieceSize) * SHA256_LENGTH) return undefined;
  return { pieceSize, hashes };
}

/** A transfer's manifest, or undefined for a file too large to list (it is streamed whole). */
export function manifestOf(transfer: TransferRecord, pieces: StoredPieces): Manifest | undefined {
  if (pieceCount(transfer.size, pieces.pieceSize) > MAX_MANIFEST_PIECES) return undefined;
  return {
    pieceSize: pieces.pieceSize,
    entries: [{
      path: transfer.name, size: transfer.size, mode: FILE_MODE, sha256: Buffer.from(transfer.sha256, 'hex'), pieces: pieces.hashes,
    }],
  };
}
