import cliProgress from 'cli-progress';
import { formatBytes, formatDuration, formatTable, shortId, type PeerId } from '@groupcast/shared';
import { callDaemon } from './control-socket.js';
import type { DeliveryView, DistributeEvent, DistributeResult } from './operations.js';

export interface DistributeFlags {
  group: string;
  files: string[];
  waitAll: boolean;
  json: boolean;
  timeoutMs?: number;
}

/** 0 all delivered, 1 some failed, 3 some still pending (offline members), 4 nobody to deliver to. */
export function exitCodeFor(result: DistributeResult): number {
  if (result.deliveries.length === 0) return 4;
  if (result.deliveries.some((d) => d.state === 'failed')) return 1;
  if (result.deliveries.some((d) => d.state !== 'delivered')) return 3;
  return 0;
}

const memberLabel = (d: { member: PeerId; memberName: string }): string => d.memberName ? `${d.memberName} (${shortId(d.member)})` : shortId(d.member);

function summary(result: DistributeResult, started: Map<string, number>): string {
  const rows = result.deliveries.map((d) => {
    const began = started.get(`${d.transfer}/${d.member}`);
    return [
      memberLabel(d), d.file, d.state, formatBytes(d.bytesSent),
      began && d.state === 'delivered' ? formatDuration(d.updatedAt - began) : '', d.state === 'delivered' ? '' : d.reason || (d.online ? '' : 'offline'),
    ];
  });
  const count = (state: string): number => result.deliveries.filter((d) => d.state === state).length;
  const pending = result.deliveries.length - count('delivered') - count('failed');
  return [
    formatTable(['MEMBER', 'FILE', 'STATE', 'SENT', 'TIME', 'REASON'], rows),
    '',
    `${count('delivered')} delivered, ${pending} pending, ${count('failed')} failed${result.timedOut ? ' (timed out waiting)' : ''}`,
  ].join('\n');
}

/**
 * Runs `distribute` against the daemon and shows it: progress bars on a terminal, one line per
 * finished delivery otherwise, a summary table at the end, or one JSON document with --json.
 */
export async function runDistribute(stateDir: string, flags: DistributeFlags): Promise<number> {
  const tty = process.stdout.isTTY && !flags.json;
  const bars = tty ? new cliProgress.MultiBar({
    format: '{member} {file} [{bar}] {percentage}% {sent} {speed}/s eta {eta_formatted}',
    hideCursor: true,
    clearOnComplete: false,
  }, cliProgress.Presets.shades_classic) : undefined;
  const barFor = new Map<string, cliProgress.SingleBar>();
  const started = new Map<string, number>();
  const sizes = new Map<string, number>();
  const names = new Map<string, string>();
  const say = (line: string): void => {
    if (flags.json) return;
    if (bars) bars.log(`${line}\n`);
    else process.stdout.write(`${line}\n`);
  };

  const onEvent = (raw: unknown): void => {
    const event = raw as DistributeEvent;
    if (event.kind === 'start') {
      for (const t of event.transfers) {
        sizes.set(t.id, t.size);
        names.set(t.id, t.name);
        say(`distributing ${t.name} (${formatBytes(t.size)}, sha256 ${t.sha256.slice(0, 16)}…) to ${flags.group}: transfer ${t.id}`);
      }
      const offline = event.members.filter((m) => !m.online);
      say(`${event.members.length} member(s), ${offline.length} offline${offline.length ? `: ${offline.map((m) => memberLabel({ member: m.id, memberName: m.name })).join(', ')}` : ''}`);
    } else if (event.kind === 'progress') {
      const k = `${event.transfer}/${event.member}`;
      if (!started.has(k)) started.set(k, Date.now());
      if (!bars) return;
      let bar = barFor.get(k);
      if (!bar) {
        bar = bars.create(event.size, 0, { member: shortId(event.member), file: names.get(event.transfer) ?? '', sent: '', speed: '' });
        barFor.set(k, bar);
      }
      const elapsed = (Date.now() - (started.get(k) ?? Date.now())) / 1000;
      bar.update(event.position, { sent: formatBytes(event.position), speed: formatBytes(elapsed > 0 ? event.position / elapsed : 0) });
    } else if (event.kind === 'delivery') {
      const d: DeliveryView = event.delivery;
      const k = `${d.transfer}/${d.member}`;
      if (d.state === 'sending' && !started.has(k)) started.set(k, Date.now());
      if (d.state === 'delivered') say(`✓ ${memberLabel(d)} ${d.file} delivered`);
      if (d.state === 'failed') say(`✗ ${memberLabel(d)} ${d.file} failed: ${d.reason}`);
      if (d.state === 'pending' && d.reason) say(`… ${memberLabel(d)} ${d.file} will retry: ${d.reason}`);
    }
  };

  try {
    const result = await callDaemon<DistributeResult>(stateDir, 'distribute', {
      group: flags.group, files: flags.files, waitAll: flags.waitAll, timeoutMs: flags.timeoutMs,
    }, onEvent);
    bars?.stop();
    const code = exitCodeFor(result);
    if (flags.json) process.stdout.write(`${JSON.stringify({ ...result, exitCode: code }, null, 2)}\n`);
    else if (result.deliveries.length === 0) process.stdout.write(`no member has joined ${flags.group}; nothing was sent (the file is kept for members that join within the retention time)\n`);
    else process.stdout.write(`${summary(result, started)}\n`);
    return code;
  } finally {
    bars?.stop();
  }
}
