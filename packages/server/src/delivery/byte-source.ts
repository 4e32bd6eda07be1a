import { closeSync, openSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCode, GroupcastError, LoopTurns, SMALL_FILE_BYTES } from '@groupcast/shared';

/**
 * What a stream reads a transfer's bytes from: one store file, or a tree's files one after the other
 * (PROTOCOL.md §7.7: DATA offsets run over the concatenation), so the stream need not know which.
 */
export interface ByteSource {
  /** Fills `into` from `position` and returns the bytes read; short only at the end. */
  read(into: Buffer, position: number): Promise<number>;
  close(): Promise<void>;
}

export async function fileSource(path: string): Promise<ByteSource> {
  const handle = await open(path, 'r');
  return {
    read: async (into, position) => (await handle.read(into, 0, into.length, position)).bytesRead,
    close: () => handle.close(),
  };
}

export interface SourceFile {
  path: string;
  size: number;
}

/** Reads `length` bytes of a small file (SMALL_FILE_BYTES) at `position` with one open, read and close. */
function readSmallSync(path: string, into: Buffer, offset: number, length: number, position: number): number {
  const fd = openSync(path, 'r');
  try {
    return readSync(fd, into, offset, length, position);
  } finally {
    closeSync(fd);
  }
}

/**
 * The files of a tree as one run of bytes. One file is open at a time (the one being read), so a tree
 * of many small files costs one descriptor, and a read that spans several files reads each in turn:
 * a small one synchronously (SMALL_FILE_BYTES), a large one through a handle kept open across reads.
 */
export function concatenatedSource(files: readonly SourceFile[]): ByteSource {
  const starts: number[] = [];
  let total = 0;
  for (const file of files) {
    starts.push(total);
    total += file.size;
  }
  let current: { index: number; handle: FileHandle } | undefined;
  const turns = new LoopTurns();
  const handleFor = async (index: number): Promise<FileHandle> => {
    if (current?.index === index) return current.handle;
    await current?.handle.close();
    current = undefined;
    current = { index, handle: await open(files[index]!.path, 'r') };
    return current.handle;
  };
  /** The file holding byte `position`: the last one starting at or before it that is not empty. */
  const fileAt = (position: number): number => {
    let low = 0;
    let high = files.length - 1;
    while (low < high) {
      const middle = Math.ceil((low + high) / 2);
      if (starts[middle]! <= position) low = middle;
      else high = middle - 1;
    }
    while (low < files.length && starts[low]! + files[low]!.size <= position) low++;
    return low;
  };
  return {
    async read(into, position) {
      let filled = 0;
      let index = fileAt(position);
      while (filled < into.length && index < files.length) {
        const file = files[index]!;
        const within = position + filled - starts[index]!;
        const want = Math.min(into.length - filled, file.size - within);
        if (want > 0) {
          let bytesRead: number;
          if (file.size <= SMALL_FILE_BYTES) {
            bytesRead = readSmallSync(file.path, into, filled, want, within);
            await turns.made();
          } else {
            ({ bytesRead } = await (await handleFor(index)).read(into, filled, want, within));
          }
          if (bytesRead !== want) throw new GroupcastError(ErrorCode.NOT_FOUND, `store file ${file.path} is shorter than recorded`);
          filled += want;
        }
        index++;
      }
      return filled;
    },
    async close() {
      await current?.handle.close();
      current = undefined;
    },
  };
}
