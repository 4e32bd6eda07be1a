// Join storm: `members` simulated members (bench/join-storm-agent.js, `agents` processes on as many
// hosts) send their signed JOINs at the same moment. Measured: time until the last is acknowledged,
// how many never were (lost), how many needed a retry, and the server's CPU.

import { resolve } from 'node:path';
import readline from 'node:readline';
import { cpuSeconds } from './lib/lab.js';

const AGENT = resolve(import.meta.dirname, 'join-storm-agent.js');
const DEADLINE_MS = 30_000;

function lines(child) {
  const queue = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
    else queue.push(line);
  });
  return () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)))])
    .finally(() => clearTimeout(timer));
}

export async function joinStorm(lab, { members, agents }) {
  const group = await lab.startGroup('storm', 0);
  const children = [];
  try {
    const per = Math.ceil(members / agents);
    for (let i = 0; i < agents; i++) {
      const host = lab.hosts[1 + i];
      const count = Math.min(per, members - i * per);
      const child = host.spawn(process.execPath, [AGENT, '--count', String(count), '--group', 'Bench', '--server-id', group.id, '--interface', host.ipv4, '--deadline-ms', String(DEADLINE_MS)], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push({ child, next: lines(child) });
    }
    for (const c of children) await withTimeout(c.next(), 60_000, 'agent ready');
    const pid = group.server.proc.pid;
    const cpuStart = await cpuSeconds(pid);
    for (const c of children) c.child.stdin.write('go\n');
    const results = await Promise.all(children.map((c) => withTimeout(c.next(), DEADLINE_MS + 10_000, 'agent result').then(JSON.parse)));
    const serverCpuSeconds = (await cpuSeconds(pid)) - cpuStart;
    const sum = (key) => results.reduce((s, r) => s + r[key], 0);
    const joinedLogged = group.server.logs.filter((l) => l.msg === 'member joined').length;
    return {
      members,
      agents,
      acked: sum('acked'),
      refused: sum('refused'),
      lost: sum('lost'),
      retried: sum('retried'),
      sends: sum('sends'),
      allAckedSeconds: Math.max(...results.map((r) => r.lastAckMs ?? Infinity)) / 1000,
      serverJoinedLogged: joinedLogged,
      serverCpuSeconds,
    };
  } finally {
    for (const c of children) c.child.kill('SIGKILL');
    await lab.endGroup(group);
  }
}

export function joinStormTables(r) {
  return [{
    title: `Join storm (${r.members} members, ${r.agents} processes)`,
    header: ['acknowledged', 'lost', 'refused', 'needed a retry', 'JOINs sent', 'all acknowledged after', 'server CPU s'],
    rows: [[`${r.acked}/${r.members}`, String(r.lost), String(r.refused), String(r.retried), String(r.sends), `${r.allAckedSeconds.toFixed(2)} s`, r.serverCpuSeconds.toFixed(2)]],
  }];
}
