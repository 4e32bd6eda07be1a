// Trees (issue 11): a directory distributed as one transfer to `members` members, against, in the same
// run and on the same hosts, `tar -c` of the same directory streamed over TLS to each member and
// unpacked there by `tar -x` (bench/baselines/fanout.js --tar/--untar), which then syncs its file
// system once, as a member does before it places a tree.
//
// Two trees: a generated build-like tree (`files` files, about `bytes` in all, sizes drawn from a
// seeded log-normal, so every run distributes the same tree) and many small files (`small.count` ×
// `small.bytes` in one directory). groupcast's time is what the operator waits: from starting
// `distribute` to its exit with every member's tree verified and placed; it includes storing the tree
// (copy, hash, one sync), which the baseline does not have, so the delivery alone (`distribution
// recorded` → exit) is reported too. The baseline's time runs from the first byte sent (connections
// up, as a member's is) to the last receiver's answer after its unpack and sync. So groupcast's time
// also holds starting the `distribute` command (node and its modules), which tar's does not: each
// round times `group-server --version` on the same host just before (the same start-up, no work), and
// the table shows groupcast's time without it beside the time the operator waits.

import { createCipheriv } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuSeconds, MiB, SERVER_BIN } from './lib/lab.js';

const round = (n, d = 2) => Number(n.toFixed(d));
/** The largest file of the generated tree before scaling: a build tree's few large artefacts. */
const LARGEST_FILE = 8 * MiB;

/** A seeded PRNG (mulberry32): the same tree on every run and machine. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The recipe of a build-like tree: nested directories (packages, their src/lib/test folders, modules),
 * file sizes log-normal around a few KiB (median ~3 KiB, a long tail to a few MiB), scaled so they sum
 * to about `bytes`; 1% empty files, 5% executable, a few dotfiles.
 */
export function buildTreeRecipe({ files, bytes, seed = 11 }) {
  const random = prng(seed);
  const dirs = [];
  for (let p = 0; p < 40; p++) {
    for (const part of ['src', 'lib', 'test']) {
      dirs.push(`pkg${p}/${part}`);
      for (let m = 0; m < 3; m++) dirs.push(`pkg${p}/${part}/mod${m}`);
    }
  }
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const drawn = [];
  for (let i = 0; i < files; i++) {
    const empty = random() < 0.01;
    drawn.push(empty ? 0 : Math.min(LARGEST_FILE, Math.exp(Math.log(3000) + 1.7 * normal())));
  }
  const scale = bytes / drawn.reduce((a, b) => a + b, 0);
  return drawn.map((size, i) => {
    const dir = dirs[Math.floor(random() * dirs.length)];
    const dot = random() < 0.01 ? '.' : '';
    const executable = random() < 0.05;
    return { path: `${dir}/${dot}f${i}${executable ? '.sh' : '.o'}`, size: Math.round(size * scale), mode: executable ? 0o755 : 0o644 };
  });
}

/** Writes a recipe's files under `root`, each with its own bytes (an AES-CTR keystream: unique, the same each run). */
export async function writeTree(root, recipe) {
  const made = new Set();
  for (const [i, file] of recipe.entries()) {
    const dir = join(root, file.path, '..');
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true });
      made.add(dir);
    }
    const iv = Buffer.alloc(16);
    iv.writeUInt32BE(i, 0);
    const bytes = createCipheriv('aes-128-ctr', Buffer.alloc(16, 11), iv).update(Buffer.alloc(file.size));
    await writeFile(join(root, file.path), bytes, { mode: file.mode });
  }
}

async function countFiles(dir) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).length;
}

/** One `distribute` of `dir` to a fresh group of `members`, measured; the placed tree is counted on the first member. */
export async function distributeTree(lab, dir, members, files) {
  const group = await lab.startGroup('trees', members);
  try {
    const pid = group.server.proc.pid;
    const clientsCpu = async () => (await Promise.all(group.clients.map((c) => cpuSeconds(c.daemon.proc.pid)))).reduce((a, b) => a + b, 0);
    const cliStart = performance.now();
    await lab.run(group.serverHost, SERVER_BIN, ['--version']);
    const cliStartSeconds = (performance.now() - cliStart) / 1000;
    const [serverStart, clientsStart] = [await cpuSeconds(pid), await clientsCpu()];
    const started = performance.now();
    const startedAt = Date.now();
    const result = await lab.run(group.serverHost, SERVER_BIN, ['distribute', 'Bench', dir, '--json', '--state-dir', group.state]);
    const seconds = (performance.now() - started) / 1000;
    const endedAt = Date.now();
    if (result.code !== 0) throw new Error(`distribute exited ${result.code}: ${result.stdout.slice(0, 2000)}\n${result.stderr}`);
    const summary = JSON.parse(result.stdout);
    const delivered = summary.deliveries.filter((d) => d.state === 'delivered').length;
    if (delivered !== members) throw new Error(`${delivered} of ${members} trees delivered`);
    const placed = await countFiles(join(group.clients[0].downloads, 'Bench', basename(dir)));
    if (placed !== files) throw new Error(`the first member holds ${placed} files of ${files}`);
    const recorded = Number(group.server.logs.find((l) => l.msg === 'distribution recorded').time);
    return {
      wallSeconds: seconds,
      cliStartSeconds,
      storedSeconds: (recorded - startedAt) / 1000,
      deliverySeconds: (endedAt - recorded) / 1000,
      serverCpuSeconds: (await cpuSeconds(pid)) - serverStart,
      clientsCpuSeconds: (await clientsCpu()) - clientsStart,
    };
  } finally {
    await lab.endGroup(group);
  }
}

const fastest = (runs) => runs.reduce((best, r) => (r.wallSeconds < best.wallSeconds ? r : best));

/** One tree, `repeat` rounds of the baseline and groupcast taking turns; the fastest of each counts. */
async function compare(lab, { label, dir, files, bytes, members, repeat }) {
  const runs = { tar: [], gc: [] };
  for (let r = 0; r < repeat; r++) {
    runs.tar.push(await lab.fanout('tls', dir, members, { tar: true }));
    runs.gc.push(await distributeTree(lab, dir, members, files));
  }
  const [tar, gc] = [fastest(runs.tar), fastest(runs.gc)];
  return {
    tree: label,
    files,
    bytes,
    members,
    groupcast: gc,
    tarOverTls: {
      wallSeconds: tar.wallSeconds,
      tarStreamBytes: tar.fileBytes,
      cpuSeconds: round(tar.cpuSeconds + tar.tarCpuSeconds + tar.receiversCpuSeconds, 3),
      cipher: tar.cipher,
    },
    timeVsTar: round(gc.wallSeconds / tar.wallSeconds),
    withoutCliStartVsTar: round((gc.wallSeconds - gc.cliStartSeconds) / tar.wallSeconds),
    deliveryVsTar: round(gc.deliverySeconds / tar.wallSeconds),
    allRunsWallSeconds: { tar: runs.tar.map((t) => t.wallSeconds), groupcast: runs.gc.map((g) => round(g.wallSeconds, 3)) },
  };
}

export async function trees(lab, { files, bytes, members, repeat, small }) {
  const build = join(lab.work, 'trees', 'build');
  const recipe = buildTreeRecipe({ files, bytes });
  await writeTree(build, recipe);
  const flat = join(lab.work, 'trees', 'small');
  await writeTree(flat, Array.from({ length: small.count }, (_, i) => ({ path: `f${String(i).padStart(5, '0')}.bin`, size: small.bytes, mode: 0o644 })));
  const total = recipe.reduce((sum, f) => sum + f.size, 0);
  const sizes = recipe.map((f) => f.size).sort((a, b) => a - b);
  return {
    recipe: { files, bytes: total, medianBytes: sizes[Math.floor(sizes.length / 2)], largestBytes: sizes[sizes.length - 1], under16KiB: sizes.filter((s) => s < 16384).length },
    rows: [
      await compare(lab, { label: 'build tree', dir: build, files, bytes: total, members, repeat }),
      await compare(lab, { label: 'small files', dir: flat, files: small.count, bytes: small.count * small.bytes, members, repeat }),
    ],
  };
}

export function treesTables({ recipe, rows }) {
  const size = (b) => (b >= MiB ? `${(b / MiB).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`);
  return [{
    title: `Trees to members (fastest of the rounds; build tree: ${recipe.files} files, median ${size(recipe.medianBytes)}, largest ${size(recipe.largestBytes)}, ${recipe.under16KiB} under 16 KiB)`,
    header: [
      'tree', 'files', 'bytes', 'members', 'groupcast s', 'CLI start s', 'stored after s', 'delivery s', 'tar over TLS s', 'gc ÷ tar', 'gc − CLI start ÷ tar',
      'delivery ÷ tar', 'CPU s gc (server + members)', 'CPU s tar',
    ],
    rows: rows.map((r) => [
      r.tree, String(r.files), size(r.bytes), String(r.members), r.groupcast.wallSeconds.toFixed(2), r.groupcast.cliStartSeconds.toFixed(2),
      r.groupcast.storedSeconds.toFixed(2), r.groupcast.deliverySeconds.toFixed(2), r.tarOverTls.wallSeconds.toFixed(2), `${r.timeVsTar.toFixed(2)}×`,
      `${r.withoutCliStartVsTar.toFixed(2)}×`, `${r.deliveryVsTar.toFixed(2)}×`,
      `${r.groupcast.serverCpuSeconds.toFixed(1)} + ${r.groupcast.clientsCpuSeconds.toFixed(1)}`, r.tarOverTls.cpuSeconds.toFixed(1),
    ]),
  }];
}
