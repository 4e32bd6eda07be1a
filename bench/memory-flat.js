#!/usr/bin/env node
// Server memory stays flat in file size: distributes a file of SIZE_MIB (default 1024) to three members
// on loopback (interface 127.0.0.1) and prints the server's and members' peak RSS, with every copy
// verified. Compare two sizes:  for s in 256 1024; do SIZE_MIB=$s node bench/memory-flat.js; done
// (run inside `unshare -n sh -c 'ip link set lo up && …'` as root, like the tests).
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CLIENT_BIN, SERVER_BIN, harness, idOf, testPort } from '../test/support/daemons.js';
const h = harness();
const port = String(testPort());
const net = ['--interface', '127.0.0.1', '--port', port];
const hwm = async (pid) => (await readFile(`/proc/${pid}/status`, 'utf8')).match(/VmHWM:\s+(\d+)/)[1] / 1024;
const rss = async (pid) => (await readFile(`/proc/${pid}/status`, 'utf8')).match(/VmRSS:\s+(\d+)/)[1] / 1024;
async function sha(path) { const x = createHash('sha256'); await pipeline(createReadStream(path), x); return x.digest('hex'); }
const SIZE = Number(process.env.SIZE_MIB ?? 1024);
try {
  const st = await h.dir('srv');
  const ms = [];
  for (const n of ['a', 'b', 'c']) { const s = await h.dir(n); const d = await h.dir(n + 'dl'); ms.push({ n, s, d, id: await idOf(h, CLIENT_BIN, s) }); }
  const sid = await idOf(h, SERVER_BIN, st);
  const cfg = join(st, 'c.json'); await writeFile(cfg, JSON.stringify({ groups: [{ name: 'G', members: ms.map((m) => m.id) }] }));
  const srv = h.spawn('srv', SERVER_BIN, ['--config', cfg, '--state-dir', st, '--tcp-port', '0', ...net]);
  await srv.waitForMsg('group-server started');
  const cl = ms.map((m) => h.spawn(m.n, CLIENT_BIN, ['--join', 'G', '--server-id', sid, '--state-dir', m.s, '--downloads', m.d, ...net]));
  for (const m of ms) await srv.waitForMsg('member online', { member: m.id });
  const file = join(st, 'big.bin');
  // a 1 GiB file of pseudo-random data, written in 16 MiB blocks
  const out = createWriteStream(file); const block = Buffer.alloc(16 << 20);
  for (let i = 0; i < SIZE / 16; i++) { for (let j = 0; j < block.length; j += 4) block.writeUInt32LE((i * 2654435761 + j * 40503) >>> 0, j); if (!out.write(block)) await new Promise((r) => out.once('drain', r)); }
  await new Promise((r) => out.end(r));
  const want = await sha(file);
  const rssBefore = await rss(srv.proc.pid);
  let peakRss = rssBefore; const samples = [];
  const timer = setInterval(async () => { const v = await rss(srv.proc.pid); samples.push(v); peakRss = Math.max(peakRss, v); }, 200);
  const t0 = Date.now();
  const r = await h.run(SERVER_BIN, ['distribute', 'G', file, '--state-dir', st], 600_000);
  const secs = (Date.now() - t0) / 1000;
  clearInterval(timer);
  console.log(r.stdout);
  for (const m of ms) console.log(m.n, (await sha(join(m.d, 'G', 'big.bin'))) === want ? 'verified' : 'MISMATCH');
  console.log(JSON.stringify({ sizeMiB: SIZE, exit: r.code, seconds: secs, serverRssBeforeMiB: rssBefore.toFixed(1), serverPeakRssDuringMiB: peakRss.toFixed(1), serverVmHWMMiB: (await hwm(srv.proc.pid)).toFixed(1), clientVmHWMMiB: (await Promise.all(cl.map((c) => hwm(c.proc.pid)))).map((v) => v.toFixed(1)) }));
} finally { await h.cleanup(); }
