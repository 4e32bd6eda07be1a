#!/usr/bin/env node
// npm run bench [-- --quick] [-- --only throughput,trees,discovery,join-storm] [-- --size 256MiB]
//               [-- --members 1,4,8] [-- --repeat 2] [-- --compare-no-peers] [-- --readme]
//               [-- --only scale] [-- --scale-members 1,4,8,16] [-- --scale-size 64MiB] [-- --scale-mbit 200] [-- --scale-skip-wide] [-- --scale-peers-only] [-- --scale-trace] [-- --scale-tree 2000]
//               [-- --only tree-versions] [-- --tree-size 1GiB]
//
// Runs each benchmark on a fresh network-namespace topology (a server host and up to eight member
// hosts on one bridge; sixteen for scale), prints its tables, and writes bench/results/<name>.json. With --readme the
// results section of bench/README.md is then rewritten from bench/results: the latest result of each
// benchmark, with the command and date it came from. Needs root (namespaces).
//
// Environment: BENCH_SIZE (file size for throughput, e.g. 1GiB; --size wins), BENCH_WORK (scratch on
// disk: server state, source files; default /var/tmp), BENCH_RECV (where receivers write; default
// /dev/shm, a tmpfs, so that the disk does not hide what the software costs).

import { cpus } from 'node:os';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { formatTable } from '@groupcast/shared';
import { discovery, discoveryTables } from './discovery.js';
import { joinStorm, joinStormTables } from './join-storm.js';
import { GiB, Lab, MiB, writeRandomFile } from './lib/lab.js';
import { scale, scaleTables } from './scale.js';
import { throughput, throughputFiles, throughputTables } from './throughput.js';
import { treeVersions, treeVersionsTables } from './tree-versions.js';
import { buildTreeRecipe, trees, treesTables, writeTree } from './trees.js';

const ROOT = resolve(import.meta.dirname, '..');
const RESULTS = join(ROOT, 'bench/results');
const README = join(ROOT, 'bench/README.md');
const BENCHMARKS = ['throughput', 'trees', 'discovery', 'join-storm', 'scale', 'tree-versions'];

function parseSize(text) {
  const match = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(text.trim());
  if (!match) throw new Error(`not a size: ${text} (try 1GiB, 256MiB)`);
  const unit = { b: 1, kib: 1024, mib: MiB, gib: GiB }[(match[2] ?? 'b').toLowerCase()];
  return Math.round(Number(match[1]) * unit);
}

function settings(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      size: { type: 'string' },
      readme: { type: 'boolean', default: false },
      members: { type: 'string', default: '1,4,8' },
      repeat: { type: 'string' },
      'scale-members': { type: 'string', default: '1,4,8,16' },
      'scale-size': { type: 'string', default: '64MiB' },
      'scale-mbit': { type: 'string', default: '200' },
      'scale-skip-wide': { type: 'boolean', default: false },
      'scale-peers-only': { type: 'boolean', default: false },
      'scale-trace': { type: 'boolean', default: false },
      'scale-tree': { type: 'string' },
      'compare-no-peers': { type: 'boolean', default: false },
      'tree-size': { type: 'string' },
    },
  });
  const only = values.only ? values.only.split(',') : BENCHMARKS;
  for (const name of only) if (!BENCHMARKS.includes(name)) throw new Error(`unknown benchmark ${name}; have ${BENCHMARKS.join(', ')}`);
  const sizeText = values.size ?? process.env.BENCH_SIZE;
  const size = sizeText ? parseSize(sizeText) : values.quick ? 64 * MiB : GiB;
  return {
    only,
    readme: values.readme,
    quick: values.quick,
    throughput: { size, smallSize: Math.max(MiB, Math.round(size / 8)), memberCounts: values.members.split(',').map(Number), repeat: Number(values.repeat ?? (values.quick ? 1 : 2)), compareNoPeers: values['compare-no-peers'] },
    trees: { files: 10_000, bytes: 100 * MiB, members: 4, repeat: Number(values.repeat ?? (values.quick ? 1 : 2)), small: { count: 1000, bytes: 10 * 1024 } },
    discovery: { starts: values.quick ? 20 : 50 },
    joinStorm: { members: 1000, agents: 4 },
    scale: {
      memberCounts: values['scale-members'].split(',').map(Number),
      size: parseSize(values['scale-size']),
      mbit: Number(values['scale-mbit']),
      wideConcurrency: !values['scale-skip-wide'],
      modes: values['scale-peers-only'] ? [true] : [true, false],
      trace: values['scale-trace'],
      /** Files of a generated build-like tree of --scale-size bytes to distribute instead of one file. */
      treeFiles: values['scale-tree'] === undefined ? undefined : Number(values['scale-tree']),
    },
    treeVersions: { size: values['tree-size'] ? parseSize(values['tree-size']) : values.quick ? 256 * MiB : GiB, fileBytes: 256 * 1024 },
    // The scratch placement changes the figures (a store on disk or on tmpfs): it is part of the command.
    command: `${['BENCH_WORK', 'BENCH_RECV', 'BENCH_SIZE'].filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]} `).join('')}npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
  };
}

function markdown(table) {
  const row = (cells) => `| ${cells.join(' | ')} |`;
  return [`**${table.title}**`, '', row(table.header), row(table.header.map(() => '---')), ...table.rows.map(row)].join('\n');
}

async function save(name, config, params, result, tables) {
  await mkdir(RESULTS, { recursive: true });
  const record = {
    name,
    command: config.command,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version },
    params,
    result,
    tables,
  };
  await writeFile(join(RESULTS, `${name}.json`), `${JSON.stringify(record, null, 2)}\n`);
  for (const table of tables) process.stdout.write(`\n${table.title}\n${formatTable(table.header, table.rows)}\n`);
}

/** The README shows the latest result of every benchmark, each with the command and date it came from. */
async function updateReadme() {
  const records = [];
  for (const name of BENCHMARKS) {
    const text = await readFile(join(RESULTS, `${name}.json`), 'utf8').catch(() => undefined);
    if (text !== undefined) records.push(JSON.parse(text));
  }
  const start = '<!-- bench:results -->';
  const end = '<!-- /bench:results -->';
  const text = await readFile(README, 'utf8');
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${README} has no ${start} … ${end} section`);
  const body = records.map((r) => [`### ${r.name}`, '', `\`${r.command}\` — ${r.date}, ${r.machine.cpus} × ${r.machine.cpuModel}, Node ${r.machine.node}`, '', ...r.tables.map(markdown).flatMap((t) => [t, ''])].join('\n'));
  await writeFile(README, `${text.slice(0, from + start.length)}\n\n${body.join('\n')}\n${text.slice(to)}`);
}

async function main() {
  const config = settings(process.argv.slice(2));
  const work = join(process.env.BENCH_WORK ?? '/var/tmp', `groupcast-bench-${process.pid}`);
  const recv = join(process.env.BENCH_RECV ?? '/dev/shm', `groupcast-bench-${process.pid}`);
  const hosts = config.only.includes('scale') ? Math.max(9, 1 + Math.max(...config.scale.memberCounts)) : 9;
  const lab = await Lab.open({ hosts, work, recv });
  const stop = () => {
    lab.close().finally(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    if (config.only.includes('throughput')) {
      const files = throughputFiles(work);
      await writeRandomFile(files.file, config.throughput.size);
      await writeRandomFile(files.smallFile, config.throughput.smallSize);
      const params = { ...config.throughput, recv: 'receivers write to BENCH_RECV with fsync before answering' };
      const result = await throughput(lab, { ...config.throughput, ...files });
      await save('throughput', config, params, result, throughputTables(result));
    }
    if (config.only.includes('trees')) {
      const result = await trees(lab, config.trees);
      await save('trees', config, config.trees, result, treesTables(result));
    }
    if (config.only.includes('discovery')) {
      const result = await discovery(lab, config.discovery);
      await save('discovery', config, config.discovery, result, discoveryTables(result));
    }
    if (config.only.includes('join-storm')) {
      const result = await joinStorm(lab, config.joinStorm);
      await save('join-storm', config, config.joinStorm, result, joinStormTables(result));
    }
    if (config.only.includes('scale')) {
      const { treeFiles } = config.scale;
      const file = join(work, treeFiles === undefined ? 'scale.bin' : 'scale-tree');
      const recipe = treeFiles === undefined ? undefined : buildTreeRecipe({ files: treeFiles, bytes: config.scale.size });
      if (recipe) await writeTree(file, recipe);
      else await writeRandomFile(file, config.scale.size);
      // A tree's bytes are its files' (the recipe scales them to about --scale-size).
      const size = recipe ? recipe.reduce((sum, f) => sum + f.size, 0) : config.scale.size;
      const result = await scale(lab, { ...config.scale, size, file });
      await save(treeFiles === undefined ? 'scale' : 'scale-tree', config, config.scale, result, scaleTables(result));
    }
    if (config.only.includes('tree-versions')) {
      const result = await treeVersions(lab, config.treeVersions);
      await save('tree-versions', config, config.treeVersions, result, treeVersionsTables(result));
    }
  } finally {
    await lab.close();
  }
  if (config.readme) await updateReadme();
}

main().catch((err) => {
  process.stderr.write(`bench: ${err.stack ?? err}\n`);
  process.exit(1);
});
