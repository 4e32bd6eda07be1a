// Discovery: a member daemon started from nothing (a new process) until it logs "joined", over
// `starts` starts on one host, the server on another. Split into process start-up (until the
// control plane is open) and the protocol (LIST → GROUPS → JOIN → ACK), from the member's log clock.

import { join } from 'node:path';
import { CLIENT_BIN, percentile } from './lib/lab.js';

const JOIN_WAIT_MS = 15_000;

export async function discovery(lab, { starts }) {
  const group = await lab.startGroup('disc', 0);
  const host = lab.hosts[1];
  const state = join(lab.work, 'disc-member');
  const downloads = join(lab.recv, 'disc-member');
  const args = ['--join', 'Bench', '--server-id', group.id, '--state-dir', state, '--downloads', downloads, '--interface', host.ipv4];
  const samples = [];
  try {
    // The first start makes the member's key pair; that is set-up, not discovery.
    for (let i = -1; i < starts; i++) {
      const spawnedAt = Date.now();
      const daemon = lab.spawn(host, 'member', CLIENT_BIN, args);
      const joined = await daemon.waitForMsg('joined', {}, JOIN_WAIT_MS);
      const arrived = Date.now();
      const open = daemon.logs.find((l) => l.msg === 'control plane open');
      await daemon.stop('SIGTERM');
      if (i < 0) continue;
      samples.push({
        totalMs: arrived - spawnedAt,
        startupMs: Number(open?.time) - spawnedAt,
        protocolMs: Number(joined.time) - Number(open?.time),
      });
    }
  } finally {
    await lab.endGroup(group);
  }
  const stats = (key) => {
    const sorted = samples.map((s) => s[key]).sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] };
  };
  return { starts, total: stats('totalMs'), startup: stats('startupMs'), protocol: stats('protocolMs'), samples };
}

export function discoveryTables(r) {
  const row = (name, s) => [name, `${s.p50} ms`, `${s.p99} ms`, `${s.max} ms`];
  return [{
    title: `Discovery (client start → joined, ${r.starts} starts)`,
    header: ['span', 'p50', 'p99', 'max'],
    rows: [row('start → joined', r.total), row('process start-up (→ control plane open)', r.startup), row('LIST → GROUPS → JOIN → ACK', r.protocol)],
  }];
}
