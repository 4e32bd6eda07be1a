// Scale: one file (or, with --scale-tree, a generated build-like tree) to 1, 4, 8 and 16 members, each on its own host whose link is shaped like a switch
// port (tc tbf, `mbit` each way), with peer-assisted delivery and, in the same run, with `--no-peers`
// on the members (every byte from the server). Reported against N = 1 of the same mode and run:
// t(N)/t(1), the server's bytes sent (from status --json) as a multiple of the file, the bytes members
// took from peers, and the CPU seconds of every process (server and members, /proc utime + stime).
//
// The time runs, as in the throughput benchmark, from "distribution recorded" to the last "delivered"
// on the server's log clock.

import { availableParallelism } from 'node:os';
import { cpuSeconds, deliveryBytes, MiB, SERVER_BIN } from './lib/lab.js';

const round = (n, d = 2) => Number(n.toFixed(d));

/**
 * `--scale-trace`: where the time went, from every member's "piece kept" debug lines (one clock: every
 * process runs on this machine). Seconds from "distribution recorded": when the first piece was kept
 * anywhere; per member the first piece, its last piece from the server, and its last piece; when the
 * server's last piece landed (the end of seeding: the tail is what follows); how long a member kept a
 * server's piece after the server's socket took it (the server's "piece sent", debug); how long pieces
 * took from their first holder to their last; and each half second's bytes kept over every member as a share of
 * what their downlinks could take (`mbit` each).
 */
function traceOf(group, t0, { size, mbit }) {
  const at = (line) => (Number(line.time) - t0) / 1000;
  const members = group.clients.map((c) => c.daemon.logs.filter((l) => l.msg === 'piece kept'));
  const all = members.flat();
  if (all.length === 0) return undefined;
  const fromServer = all.filter((l) => l.from === 'server');
  const perMember = members.map((lines) => {
    const server = lines.filter((l) => l.from === 'server');
    return {
      first: round(Math.min(...lines.map(at))),
      lastFromServer: server.length ? round(Math.max(...server.map(at))) : null,
      fromServer: server.length,
      last: round(Math.max(...lines.map(at))),
    };
  });
  const byPiece = new Map();
  for (const l of all) byPiece.set(l.piece, [...(byPiece.get(l.piece) ?? []), at(l)]);
  const spread = [...byPiece.values()].map((times) => Math.max(...times) - Math.min(...times)).sort((a, b) => a - b);
  const pieceBytes = size / byPiece.size;
  const bucket = 0.5;
  const end = Math.max(...all.map(at));
  const linkBytesPerBucket = (mbit * 1e6 / 8) * bucket * members.length;
  const use = [];
  for (let from = 0; from < end; from += bucket) {
    const kept = all.filter((l) => at(l) >= from && at(l) < from + bucket).length;
    use.push(round((kept * pieceBytes) / linkBytesPerBucket));
  }
  // The server's "piece sent" (its socket took the piece) against the member's "piece kept": how far
  // ahead of the wire the sockets' buffers run.
  const sent = new Map(group.server.logs.filter((l) => l.msg === 'piece sent').map((l) => [`${l.member}:${l.piece}`, at(l)]));
  const shortIds = group.clients.map((c) => c.id.slice(0, 7));
  const lag = members.flatMap((lines, i) => lines.filter((l) => l.from === 'server').map((l) => at(l) - (sent.get(`${shortIds[i]}:${l.piece}`) ?? NaN)))
    .filter((s) => !Number.isNaN(s)).sort((a, b) => a - b);
  return {
    firstPiece: round(Math.min(...all.map(at))),
    sentToKept: lag.length ? { median: round(lag[Math.floor(lag.length / 2)]), max: round(lag.at(-1)) } : null,
    seedingEnd: round(Math.max(...fromServer.map(at))),
    lastDone: round(end),
    spreadMedian: round(spread[Math.floor(spread.length / 2)]),
    spreadMax: round(spread.at(-1)),
    downlinkUse: use,
    perMember,
  };
}

async function scaleRun(lab, { file, size, members, peers, serverArgs, trace, mbit }) {
  const group = await lab.startGroup(`sc${peers ? 'p' : 'n'}${members}`, members, {
    clientArgs: peers ? [] : ['--no-peers'], serverArgs: [...serverArgs, ...(trace ? ['--log-level', 'debug'] : [])], clientLogLevel: trace ? 'debug' : 'warn',
  });
  try {
    const pids = [group.server.proc.pid, ...group.clients.map((c) => c.daemon.proc.pid)];
    const cpu = async () => (await Promise.all(pids.map(cpuSeconds))).reduce((a, b) => a + b, 0);
    const done = lab.run(group.serverHost, SERVER_BIN, ['distribute', 'Bench', file, '--json', '--state-dir', group.state]);
    const recorded = await group.server.waitForMsg('distribution recorded', {}, 600_000);
    const cpuStart = await cpu();
    const result = await done;
    if (result.code !== 0) throw new Error(`distribute exited ${result.code}: ${result.stdout}\n${result.stderr}`);
    const cpuEnd = await cpu();
    const delivered = group.server.logs.filter((l) => l.msg === 'delivered');
    if (delivered.length !== members) throw new Error(`${delivered.length} of ${members} delivered`);
    const times = delivered.map((l) => Number(l.time));
    const bytes = await deliveryBytes(lab, group, JSON.parse(result.stdout).transfers[0].id);
    return {
      members,
      peers,
      wallSeconds: (Math.max(...times) - Number(recorded.time)) / 1000,
      firstDeliveredSeconds: (Math.min(...times) - Number(recorded.time)) / 1000,
      ...bytes,
      serverCopies: round(bytes.serverBytes / size, 3),
      cpuSeconds: round(cpuEnd - cpuStart, 2),
      ...(trace && peers ? { trace: traceOf(group, Number(recorded.time), { size, mbit }) } : {}),
    };
  } finally {
    await lab.endGroup(group);
  }
}

/**
 * Runs every member count with peers and without (taking turns, so a burst of other work on the
 * machine hits both alike), then, if `wideConcurrency` is set, the largest count with peers again on a
 * server whose `--concurrency` admits every member at once: the difference is the delivery queue's share.
 */
export async function scale(lab, { file, size, memberCounts, mbit, wideConcurrency, modes, trace, treeFiles }) {
  const hosts = lab.hosts.slice(0, 1 + Math.max(...memberCounts));
  for (const host of hosts) await host.shapeLink(mbit);
  const runs = [];
  try {
    for (const members of memberCounts) {
      for (const peers of modes) {
        const run = await scaleRun(lab, { file, size, members, peers, serverArgs: [], trace, mbit });
        process.stderr.write(`scale: ${members} member(s), ${peers ? 'peers' : 'no peers'}: ${run.wallSeconds.toFixed(2)} s, server ${run.serverCopies}× the file\n`);
        if (run.trace) process.stderr.write(`scale trace: ${JSON.stringify(run.trace)}\n`);
        runs.push(run);
      }
    }
    let wide;
    if (wideConcurrency) {
      const members = Math.max(...memberCounts);
      wide = { ...(await scaleRun(lab, { file, size, members, peers: true, serverArgs: ['--concurrency', String(members)], trace, mbit })), concurrency: members };
      process.stderr.write(`scale: ${members} members, peers, --concurrency ${members}: ${wide.wallSeconds.toFixed(2)} s\n`);
    }
    const base = (peers) => runs.find((r) => r.peers === peers && r.members === Math.min(...memberCounts));
    const rows = runs.map((r) => ({
      ...r,
      timeVsOne: round(r.wallSeconds / base(r.peers).wallSeconds),
      cpuVsOne: round(r.cpuSeconds / base(r.peers).cpuSeconds),
    }));
    const wideRow = wide ? { ...wide, timeVsOne: round(wide.wallSeconds / base(true).wallSeconds), cpuVsOne: round(wide.cpuSeconds / base(true).cpuSeconds) } : undefined;
    const largest = rows.find((r) => r.peers && r.members === Math.max(...memberCounts));
    return {
      fileBytes: size,
      ...(treeFiles === undefined ? {} : { treeFiles }),
      mbit,
      cores: availableParallelism(),
      rows,
      ...(wideRow ? { wideConcurrency: wideRow } : {}),
      targets: {
        timeVsOneWithPeers: { target: 1.5, measured: largest.timeVsOne, met: largest.timeVsOne <= 1.5 },
        serverCopiesWithPeers: { target: 1.5, measured: largest.serverCopies, met: largest.serverCopies <= 1.5 },
      },
    };
  } finally {
    for (const host of hosts) await host.unlimitRate().catch(() => undefined);
  }
}

const mib = (bytes) => (bytes / MiB).toFixed(1);

export function scaleTables({ fileBytes, mbit, rows, wideConcurrency, treeFiles, cores }) {
  // How much of the machine's CPU the run kept busy: near 100%, the cores, not the shaped links, set its time.
  const busy = (r) => (cores ? `${Math.round((100 * r.cpuSeconds) / (r.wallSeconds * cores))}%` : '—');
  const header = ['members', 'peers', 'time s', 't(N)/t(1)', 'first done s', 'server sent MiB', 'server ÷ file', 'from peers MiB', 'CPU s (all)', 'CPU ÷ CPU(1)', 'cores busy'];
  const line = (r) => [
    `${r.members}${r.concurrency ? ` (--concurrency ${r.concurrency})` : ''}`, r.peers ? 'yes' : 'no', r.wallSeconds.toFixed(2), `${r.timeVsOne.toFixed(2)}×`,
    r.firstDeliveredSeconds.toFixed(2), mib(r.serverBytes), `${r.serverCopies.toFixed(2)}×`, mib(r.peerBytes), r.cpuSeconds.toFixed(1), `${r.cpuVsOne.toFixed(2)}×`, busy(r),
  ];
  return [{
    title: `Scale: ${treeFiles === undefined ? '' : `a tree of ${treeFiles} files, `}${mib(fileBytes)} MiB to N members, every host's link shaped to ${mbit} Mbit/s each way (tc tbf)`,
    header,
    rows: [...rows.map(line), ...(wideConcurrency ? [line(wideConcurrency)] : [])],
  }];
}
