// Many small files: `count` files of `bytes` each in one directory, distributed as one tree (one
// `distribute` of the directory, issue 11) to `members` members. The time is what the operator waits:
// from starting the command to its exit with every member's tree verified and placed, split into
// storing the tree (ingest, one sync, outbox) and delivering it.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuSeconds, cpuTimes, SERVER_BIN, writeRandomFile } from './lib/lab.js';

export async function smallFiles(lab, { count, bytes, members }) {
  const dir = join(lab.work, 'small', 'tree');
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) await writeRandomFile(join(dir, `f${String(i).padStart(5, '0')}.bin`), bytes);
  const group = await lab.startGroup('small', members);
  try {
    const pid = group.server.proc.pid;
    const clientsCpu = async () => {
      const times = await Promise.all(group.clients.map((c) => cpuTimes(c.daemon.proc.pid)));
      return { user: times.reduce((a, t) => a + t.user, 0), system: times.reduce((a, t) => a + t.system, 0) };
    };
    const cpuStart = await cpuSeconds(pid);
    const clientsStart = await clientsCpu();
    const started = performance.now();
    const startedAt = Date.now();
    const result = await lab.run(group.serverHost, SERVER_BIN, ['distribute', 'Bench', dir, '--json', '--state-dir', group.state]);
    const seconds = (performance.now() - started) / 1000;
    if (result.code !== 0) throw new Error(`distribute exited ${result.code}: ${result.stdout.slice(0, 2000)}\n${result.stderr}`);
    const summary = JSON.parse(result.stdout);
    const delivered = summary.deliveries.filter((d) => d.state === 'delivered').length;
    const recorded = group.server.logs.filter((l) => l.msg === 'distribution recorded').map((l) => Number(l.time));
    return {
      files: count,
      fileBytes: bytes,
      members,
      deliveries: summary.deliveries.length,
      delivered,
      seconds,
      storedSeconds: (Math.max(...recorded) - startedAt) / 1000,
      filesPerSecond: (delivered * count) / seconds,
      serverCpuSeconds: (await cpuSeconds(pid)) - cpuStart,
      ...(await clientsCpu().then((end) => ({
        clientsCpuSeconds: end.user + end.system - clientsStart.user - clientsStart.system,
        clientsSystemCpuSeconds: end.system - clientsStart.system,
      }))),
    };
  } finally {
    await lab.endGroup(group);
  }
}

export function smallFilesTables(r) {
  return [{
    title: 'Many small files',
    header: ['files (one tree)', 'size', 'members', 'trees delivered', 'total s', 'stored after s', 'files placed/s', 'server CPU s', 'members CPU s'],
    rows: [[
      String(r.files), `${r.fileBytes / 1024} KiB`, String(r.members), `${r.delivered}/${r.deliveries}`, r.seconds.toFixed(2),
      r.storedSeconds.toFixed(2), r.filesPerSecond.toFixed(0), r.serverCpuSeconds.toFixed(2), r.clientsCpuSeconds.toFixed(2),
    ]],
  }];
}
