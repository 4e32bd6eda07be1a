import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCode, GroupcastError, lastStartAtOrBefore } from '@groupcast/shared';

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

/** A run of a transfer's bytes in one store file: `size` bytes from `offset` (a tree's small files are in its pack). */
export interface SourceFile {
  path: string;
  offset: number;
  size: number;
}

/**
 * The files of a tree as one run of bytes, from the runs where they are stored (TreeManifests: the
 * pack's runs and the large files). One store file is open at a time (the one being read), kept open
 * across reads, so a tree of many small files costs one descriptor and one open per run, and a read
 * that spans several runs reads each in turn.
 */
export function concatenatedSource(files: readonly SourceFile[]): ByteSource {
  const starts: number[] = [];
  let total = 0;
  for (const file of files) {
    starts.push(total);
    total += file.size;
  }
  let current: { path: string; handle: FileHandle } | undefined;
  const handleFor = async (path: string): Promise<FileHandle> => {
    if (current?.path === path) return current.handle;
    await current?.handle.close();
    current = undefined;
    current = { path, handle: await open(path, 'r') };
    return current.handle;
  };
  /** The run holding byte `position`: the last one starting at or before it that is not empty. */
  const fileAt = (position: number): number => {
    let low = lastStartAtOrBefore(starts, files.length, position);
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
          const { bytesRead } = await (await handleFor(file.path)).read(into, filled, want, file.offset + within);
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
