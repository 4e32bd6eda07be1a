// Only what changed travels, for a tree (issue 11): version 1 of a tree of `size` bytes — one large file of a
// quarter of it and the rest in `fileBytes` files — to one member, then version 2, where 1% of the small files
// are rewritten and the large file changed in one 1 MiB region. The figure is the server's count of the bytes
// its stream carried to the member for version 2 (its "delivered" line), as a ratio of the tree's size; the
// target is ≤ 3%. One member: the ratio does not depend on how many there are (each gets the same stream).

import { randomBytes } from 'node:crypto';
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MiB, SERVER_BIN, writeRandomFile } from './lib/lab.js';

/** Share of the small files rewritten in version 2. */
const CHANGED_SHARE = 0.01;
const REGION = MiB;

async function overwrite(path, at, data) {
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.length, at);
  } finally {
    await handle.close();
  }
}

export async function treeVersions(lab, { size, fileBytes }) {
  const dir = join(lab.work, 'tree-versions', 'bundle');
  await mkdir(join(dir, 'files'), { recursive: true });
  const bigBytes = Math.floor(size / 4);
  const count = Math.floor((size - bigBytes) / fileBytes);
  const name = (i) => join(dir, 'files', `f${String(i).padStart(5, '0')}.bin`);
  await writeRandomFile(join(dir, 'large.img'), bigBytes);
  for (let i = 0; i < count; i++) await writeRandomFile(name(i), fileBytes);
  const treeBytes = bigBytes + count * fileBytes;
  const group = await lab.startGroup('tree-versions', 1);
  try {
    const deliver = async () => {
      const started = performance.now();
      const result = await lab.run(group.serverHost, SERVER_BIN, ['distribute', 'Bench', dir, '--json', '--state-dir', group.state]);
      const seconds = (performance.now() - started) / 1000;
      if (result.code !== 0) throw new Error(`distribute exited ${result.code}: ${result.stdout.slice(0, 2000)}\n${result.stderr}`);
      const { transfers } = JSON.parse(result.stdout);
      const transfer = transfers[0].id;
      const line = group.server.logs.find((l) => l.msg === 'delivered' && l.transfer === transfer);
      if (!line) throw new Error(`no "delivered" line for ${transfer}`);
      return { seconds, bytesSent: Number(line.bytesSent) };
    };
    const first = await deliver();
    const changedFiles = Math.max(1, Math.round(count * CHANGED_SHARE));
    // Spread over the tree, every hundredth file; the large file's region starts inside a piece, as an edit would.
    for (let i = 0; i < changedFiles; i++) await writeRandomFile(name(Math.floor((i * count) / changedFiles)), fileBytes);
    await overwrite(join(dir, 'large.img'), Math.floor(bigBytes / 3) + 12_345, randomBytes(REGION));
    const second = await deliver();
    const changedBytes = changedFiles * fileBytes + REGION;
    return {
      treeBytes, files: count + 1, largeBytes: bigBytes, changedFiles, changedBytes,
      v1Seconds: first.seconds, v1BytesSent: first.bytesSent, v2Seconds: second.seconds, v2BytesSent: second.bytesSent,
      v2Ratio: second.bytesSent / treeBytes, target: 0.03,
    };
  } finally {
    await lab.endGroup(group);
  }
}

export function treeVersionsTables(r) {
  const mib = (bytes) => (bytes / MiB).toFixed(1);
  return [{
    title: 'Version 2 of a tree: only what changed travels',
    header: ['tree MiB', 'files', 'large file MiB', 'files changed', 'changed MiB', 'v1 sent MiB', 'v1 s', 'v2 sent MiB', 'v2 s', 'v2 sent / tree', 'target'],
    rows: [[
      mib(r.treeBytes), String(r.files), mib(r.largeBytes), String(r.changedFiles), mib(r.changedBytes), mib(r.v1BytesSent), r.v1Seconds.toFixed(1),
      mib(r.v2BytesSent), r.v2Seconds.toFixed(1), `${(r.v2Ratio * 100).toFixed(2)}%`, '≤ 3%',
    ]],
  }];
}
