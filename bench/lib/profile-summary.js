#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from --cpu-prof / BENCH_CPU_PROF): self time by function and by file,
// the heaviest first, so a hot path shows without opening DevTools.
//
//   node bench/lib/profile-summary.js PROFILE.cpuprofile [top=25]

import { readFileSync } from 'node:fs';

const [path, topText = '25'] = process.argv.slice(2);
if (!path) {
  process.stderr.write('usage: profile-summary.js PROFILE.cpuprofile [top]\n');
  process.exit(2);
}
const top = Number(topText);
process.stdout.on('error', () => process.exit(0)); // piped into head
const profile = JSON.parse(readFileSync(path, 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const byFunction = new Map();
const byFile = new Map();
let total = 0;
profile.samples.forEach((id, i) => {
  const { callFrame } = nodes.get(id);
  const us = profile.timeDeltas[i] ?? 0;
  total += us;
  const file = (callFrame.url || '(native)').replace(/^file:\/\//, '').replace(/.*node_modules\//, 'node_modules/');
  const fn = `${callFrame.functionName || '(anonymous)'}  ${file}:${callFrame.lineNumber + 1}`;
  byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  byFile.set(file, (byFile.get(file) ?? 0) + us);
});
const show = (title, map) => {
  process.stdout.write(`\n${title} (total ${(total / 1000).toFixed(0)} ms)\n`);
  for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${(us / 1000).toFixed(1).padStart(9)} ms  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${key}\n`);
  }
};
show('self time by function', byFunction);
show('self time by file', byFile);
