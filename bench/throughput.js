// Throughput and memory: one file to 1, 4 and 8 members, each member on its own host, against the
// two fan-out baselines run on the same hosts in the same run.
//
// groupcast's time runs from "distribution recorded" (the file is in the store and the deliveries
// are in the outbox: the moment a sender could start) to the last "delivered" (the member verified,
// fsynced and renamed the file and said so), both from the server's log clock. The baselines' time
// runs from the first byte sent to the last receiver's answer after its write (and fsync). Each of the
// three runs `repeat` times, in turns, and the fastest run of each is reported (all are in the JSON).

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cpuSeconds, deliveryBytes, GiB, MiB, peakRss, SERVER_BIN } from './lib/lab.js';

const round = (n, d = 2) => Number(n.toFixed(d));

/** Bytes the members served each other, from their status files (a piece sent twice counts twice); each is rewritten a few times a second, so 1.5 s after the last delivery it holds the final counters. */
async function servedToPeers(group) {
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  const statuses = await Promise.all(group.clients.map(async (c) => JSON.parse(await readFile(join(c.state, 'status.json'), 'utf8'))));
  return statuses.reduce((sum, s) => sum + (s.peers?.toPeers ?? 0), 0);
}

/** Distributes `file` to the group's members and measures the server while it does. */
async function distributeMeasured(lab, group, file, members) {
  const pid = group.server.proc.pid;
  const done = lab.run(group.serverHost, SERVER_BIN, ['distribute', 'Bench', file, '--json', '--state-dir', group.state]);
  const clientPids = group.clients.map((c) => c.daemon.proc.pid);
  const clientsCpu = async () => (await Promise.all(clientPids.map(cpuSeconds))).reduce((a, b) => a + b, 0);
  const recorded = await group.server.waitForMsg('distribution recorded', {}, 600_000);
  const [cpuStart, clientsStart] = [await cpuSeconds(pid), await clientsCpu()];
  const result = await done;
  if (result.code !== 0) throw new Error(`distribute exited ${result.code}: ${result.stdout}\n${result.stderr}`);
  const [cpuEnd, clientsEnd] = [await cpuSeconds(pid), await clientsCpu()];
  const delivered = group.server.logs.filter((l) => l.msg === 'delivered');
  if (delivered.length !== members) throw new Error(`${delivered.length} of ${members} delivered`);
  const times = delivered.map((l) => Number(l.time));
  const last = Math.max(...times);
  return {
    wallSeconds: (last - Number(recorded.time)) / 1000,
    /** The first member done: a wide gap to wallSeconds means members were not served evenly. */
    firstDeliveredSeconds: (Math.min(...times) - Number(recorded.time)) / 1000,
    serverCpuSeconds: cpuEnd - cpuStart,
    clientsCpuSeconds: clientsEnd - clientsStart,
    serverPeakRssBytes: await peakRss(pid),
    clientPeakRssBytes: await peakRss(group.clients[0].daemon.proc.pid),
    largestClientPeakRssBytes: Math.max(...(await Promise.all(clientPids.map(peakRss)))),
    ...(await deliveryBytes(lab, group, JSON.parse(result.stdout).transfers[0].id)),
    servedToPeersBytes: await servedToPeers(group),
  };
}

async function groupcastRun(lab, file, n, clientArgs = []) {
  const group = await lab.startGroup(`tp${clientArgs.length ? 'n' : ''}${n}`, n, { clientArgs });
  try {
    return await distributeMeasured(lab, group, file, n);
  } finally {
    await lab.endGroup(group);
  }
}

/**
 * The same distribution with `--no-peers` on the members (every byte streamed from the server), against
 * today's default (peers on: on one box a swarm moves every byte through a second TLS link and hash).
 * CPU is compared by the round's median of all processes: a swarm on one box must not cost more.
 */
function noPeersFigures(runs, delivered, gc) {
  const off = fastest(runs.gcNoPeers);
  const all = (r) => r.serverCpuSeconds + r.clientsCpuSeconds;
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const perGiB = (seconds) => round(seconds / (delivered / GiB), 3);
  return {
    wallSeconds: off.wallSeconds,
    allCpuSecondsPerGiB: perGiB(all(off)),
    timeVsPeers: round(off.wallSeconds / gc.wallSeconds),
    cpuPeersVsNoPeers: round(median(runs.gc.map(all)) / median(runs.gcNoPeers.map(all))),
    allRuns: {
      peers: runs.gc.map((r) => ({ wallSeconds: round(r.wallSeconds, 3), allCpuSeconds: round(all(r), 2) })),
      noPeers: runs.gcNoPeers.map((r) => ({ wallSeconds: round(r.wallSeconds, 3), allCpuSeconds: round(all(r), 2) })),
    },
  };
}

/** The run with the shortest time: other work on the machine only ever makes a run slower. */
const fastest = (runs) => runs.reduce((best, r) => (r.wallSeconds < best.wallSeconds ? r : best));

export async function throughput(lab, { size, memberCounts, repeat, file, smallSize, smallFile, compareNoPeers }) {
  const rows = [];
  for (const n of memberCounts) {
    const delivered = n * size;
    // The three take turns, `repeat` rounds, so that a burst of other work hits all of them alike.
    const runs = { raw: [], tls: [], gc: [], gcNoPeers: [] };
    for (let round = 0; round < repeat; round++) {
      runs.raw.push(await lab.fanout('raw', file, n));
      runs.tls.push(await lab.fanout('tls', file, n));
      runs.gc.push(await groupcastRun(lab, file, n));
      if (compareNoPeers) runs.gcNoPeers.push(await groupcastRun(lab, file, n, ['--no-peers']));
    }
    const [raw, tls, gc] = [fastest(runs.raw), fastest(runs.tls), fastest(runs.gc)];
    const goodput = (seconds) => round(delivered / MiB / seconds, 1);
    const perGiB = (seconds) => round(seconds / (delivered / GiB), 3);
    const baseline = (r) => ({
      wallSeconds: r.wallSeconds,
      goodputMiBps: goodput(r.wallSeconds),
      senderCpuSecondsPerGiB: perGiB(r.cpuSeconds),
      allCpuSecondsPerGiB: perGiB(r.cpuSeconds + r.receiversCpuSeconds),
      senderPeakRssBytes: r.maxRssBytes,
      ...(r.cipher ? { cipher: r.cipher } : {}),
    });
    rows.push({
      members: n,
      fileBytes: size,
      groupcast: {
        ...gc,
        goodputMiBps: goodput(gc.wallSeconds),
        serverCpuSecondsPerGiB: perGiB(gc.serverCpuSeconds),
        allCpuSecondsPerGiB: perGiB(gc.serverCpuSeconds + gc.clientsCpuSeconds),
      },
      raw: baseline(raw),
      tls: baseline(tls),
      timeVsRaw: round(gc.wallSeconds / raw.wallSeconds),
      timeVsSecureFloor: round(gc.wallSeconds / tls.wallSeconds),
      cpuVsSecureFloor: round((gc.serverCpuSeconds + gc.clientsCpuSeconds) / (tls.cpuSeconds + tls.receiversCpuSeconds)),
      allRunsWallSeconds: { raw: runs.raw.map((r) => r.wallSeconds), tls: runs.tls.map((r) => r.wallSeconds), groupcast: runs.gc.map((r) => round(r.wallSeconds, 3)) },
      ...(compareNoPeers ? { noPeers: noPeersFigures(runs, delivered, gc) } : {}),
    });
  }
  // Memory flat in file size: the largest fan-out again with a file `smallSize` long, on a fresh server.
  const n = Math.max(...memberCounts);
  const group = await lab.startGroup('tpsmall', n);
  let small;
  try {
    small = await distributeMeasured(lab, group, smallFile, n);
  } finally {
    await lab.endGroup(group);
  }
  return { rows, memory: { members: n, smallFileBytes: smallSize, serverPeakRssBytesSmall: small.serverPeakRssBytes, clientPeakRssBytesSmall: small.clientPeakRssBytes } };
}

const mib = (bytes) => (bytes / MiB).toFixed(0);

export function throughputTables({ rows, memory }) {
  const header = ['members', 'file', 'groupcast s', 'raw s', 'floor s', 'goodput MiB/s gc', 'raw', 'floor', 'time gc ÷ raw', 'time gc ÷ floor'];
  const table = rows.map((r) => [
    String(r.members), `${mib(r.fileBytes)} MiB`, r.groupcast.wallSeconds.toFixed(2), r.raw.wallSeconds.toFixed(2), r.tls.wallSeconds.toFixed(2),
    String(r.groupcast.goodputMiBps), String(r.raw.goodputMiBps), String(r.tls.goodputMiBps),
    `${r.timeVsRaw.toFixed(2)}×`, `${r.timeVsSecureFloor.toFixed(2)}×`,
  ]);
  const cpuHeader = ['members', 'server s/GiB', 'floor sender s/GiB', 'raw sender s/GiB', 'all processes s/GiB gc', 'raw', 'floor', 'CPU gc ÷ floor'];
  const cpuTable = rows.map((r) => [
    String(r.members), r.groupcast.serverCpuSecondsPerGiB.toFixed(2), r.tls.senderCpuSecondsPerGiB.toFixed(2), r.raw.senderCpuSecondsPerGiB.toFixed(2),
    r.groupcast.allCpuSecondsPerGiB.toFixed(2), r.raw.allCpuSecondsPerGiB.toFixed(2), r.tls.allCpuSecondsPerGiB.toFixed(2), `${r.cpuVsSecureFloor.toFixed(2)}×`,
  ]);
  const big = rows.find((r) => r.members === memory.members) ?? rows[rows.length - 1];
  const memoryHeader = ['process', `${mib(big.fileBytes)} MiB to ${memory.members}`, `${mib(memory.smallFileBytes)} MiB to ${memory.members}`];
  const memoryTable = [
    ['group-server (VmHWM)', `${mib(big.groupcast.serverPeakRssBytes)} MiB`, `${mib(memory.serverPeakRssBytesSmall)} MiB`],
    ['group-client, one member (VmHWM)', `${mib(big.groupcast.clientPeakRssBytes)} MiB`, `${mib(memory.clientPeakRssBytesSmall)} MiB`],
    ['raw fan-out sender (maxRSS)', `${mib(big.raw.senderPeakRssBytes)} MiB`, ''],
    ['secure-floor sender (maxRSS)', `${mib(big.tls.senderPeakRssBytes)} MiB`, ''],
  ];
  const compared = rows.filter((r) => r.noPeers);
  return [
    { title: 'Throughput (fastest of the rounds; wall time, goodput to all members)', header, rows: table },
    { title: 'CPU per GiB delivered (user + system, from /proc)', header: cpuHeader, rows: cpuTable },
    { title: 'Memory (peak RSS)', header: memoryHeader, rows: memoryTable },
    ...(compared.length ? [{
      title: 'Peers on (the default) against --no-peers on the members, same hosts, taking turns',
      header: ['members', 'peers s', '--no-peers s', 'all processes s/GiB peers', '--no-peers', 'CPU peers ÷ --no-peers (median of rounds)'],
      rows: compared.map((r) => [
        String(r.members), r.groupcast.wallSeconds.toFixed(2), r.noPeers.wallSeconds.toFixed(2),
        r.groupcast.allCpuSecondsPerGiB.toFixed(2), r.noPeers.allCpuSecondsPerGiB.toFixed(2), `${r.noPeers.cpuPeersVsNoPeers.toFixed(2)}×`,
      ]),
    }] : []),
  ];
}

export const throughputFiles = (work) => ({ file: join(work, 'payload.bin'), smallFile: join(work, 'payload-small.bin') });
