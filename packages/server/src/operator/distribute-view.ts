import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type cliProgress from 'cli-progress';
import {
  ErrorCode, formatBytes, formatDuration, formatTable, GroupcastError, printable, shortId, type PeerId,
} from '@groupcast/shared';
import { callDaemon } from './control-socket.js';
import { transferLabel, type DeliveryView, type DistributeEvent, type DistributeResult } from './operations.js';
import { fitProgress, type ProgressParts } from './progress-line.js';
import { isConnectionLoss, reattach } from './reconnect.js';

export interface DistributeFlags {
  group: string;
  files: string[];
  waitAll: boolean;
  json: boolean;
  /** Without a terminal: at most one progress line per delivery this often (0: every update). */
  progressIntervalMs: number;
  timeoutMs?: number;
  /** `--rate`: bytes per second these files' deliveries take together. */
  rate?: number;
  /** `--to`: only these members of the group (names or ids, resolved by the daemon). */
  to?: string[];
  /** `--reconnect-timeout`: how long to try to reach a daemon that went away (RECONNECT_LIMIT_MS unless set). */
  reconnectLimitMs?: number;
}

/** 0 all delivered, 1 some failed, 3 some still pending (offline members), 4 nobody to deliver to (5, the daemon lost: see DaemonLost). */
export function exitCodeFor(result: DistributeResult): number {
  if (result.deliveries.length === 0) return 4;
  if (result.deliveries.some((d) => d.state === 'failed')) return 1;
  if (result.deliveries.some((d) => d.state !== 'delivered')) return 3;
  return 0;
}

const memberLabel = (member: PeerId, name: string): string => (name ? `${printable(name)} (${shortId(member)})` : shortId(member));

/** The rate over the last few seconds, so the ETA follows the link as it is now, not its average. */
export class RateMeter {
  private readonly samples: Array<{ at: number; position: number }> = [];

  constructor(private readonly windowMs = 5_000) {}

  add(at: number, position: number): void {
    this.samples.push({ at, position });
    while (this.samples.length > 2 && at - (this.samples[0]?.at ?? at) > this.windowMs) this.samples.shift();
  }

  /** Bytes per second, or 0 until two samples are apart in time. */
  get rate(): number {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.at <= first.at) return 0;
    return Math.max(0, (last.position - first.position) / ((last.at - first.at) / 1_000));
  }

  /** Milliseconds left for `remaining` bytes at the current rate, or undefined while unknown. */
  eta(remaining: number): number | undefined {
    const rate = this.rate;
    return rate > 0 ? (remaining / rate) * 1_000 : undefined;
  }
}

/** What the view tracks of one delivery (a member and a file). */
interface Row {
  label: string;
  file: string;
  size: number;
  position: number;
  fromServer: number;
  fromPeers: number;
  meter: RateMeter;
  startedAt: number | undefined;
  finishedAt: number | undefined;
  lastLineAt: number;
  bar: cliProgress.SingleBar | undefined;
  /** A store's ingest of a file (no member, no sources) rather than a delivery. */
  storing: boolean;
  /** The delivery's state and reason last shown: re-attaching sends every delivery again, shown only if it changed. */
  shown: string;
}

/** "from server 12.0 MiB, from peers 57.3 MiB": where a member's bytes came from. */
export function sourcesText(fromServer: number, fromPeers: number): string {
  return `from server ${formatBytes(fromServer)}, from peers ${formatBytes(fromPeers)}`;
}

type ProgressRow = Pick<Row, 'label' | 'file' | 'size' | 'position' | 'meter' | 'fromServer' | 'fromPeers' | 'storing'>;

/** A row's figures as the line shows them. The position is what the member holds, from anyone (or what is stored). */
function partsOf(row: ProgressRow): ProgressParts {
  const eta = row.meter.eta(row.size - row.position);
  return {
    label: row.label,
    file: row.file,
    fraction: row.size > 0 ? row.position / row.size : 1,
    sent: `${formatBytes(row.position)} of ${formatBytes(row.size)}`,
    rate: `${formatBytes(row.meter.rate)}/s`,
    eta: eta === undefined ? '?' : formatDuration(eta),
    sources: row.storing ? '' : sourcesText(row.fromServer, row.fromPeers),
  };
}

/**
 * Without a terminal, a plain line of any length:
 * `alice (PKHMN3L)  big.iso  36%  69.3 MiB of 190.7 MiB  24.6 MiB/s  eta 6.0s  from server 12.0 MiB, from peers 57.3 MiB`
 */
export function progressLine(row: ProgressRow): string {
  const parts = partsOf(row);
  return [parts.label, parts.file, `${Math.floor(parts.fraction * 100)}%`, parts.sent, parts.rate, `eta ${parts.eta}`, parts.sources].filter(Boolean).join('  ');
}

/** The terminal's width now (it may be resized while the bars run). */
const terminalColumns = (): number => process.stdout.columns || DEFAULT_COLUMNS;
/** What a terminal that does not say its width is taken to have. */
const DEFAULT_COLUMNS = 80;

function summary(result: DistributeResult, rows: Map<string, Row>): string {
  const table = result.deliveries.map((d) => {
    const row = rows.get(`${d.transfer}/${d.member}`);
    const took = row?.startedAt !== undefined && row.finishedAt !== undefined && d.state === 'delivered' ? formatDuration(row.finishedAt - row.startedAt) : '';
    const reason = d.state === 'delivered' ? '' : printable(d.reason || d.waiting || (d.online ? '' : 'member offline'));
    return [memberLabel(d.member, d.memberName), printable(deliveryLabel(d)), d.state, formatBytes(d.bytesSent), formatBytes(d.bytesFromPeers), took, reason];
  });
  const count = (state: string): number => result.deliveries.filter((d) => d.state === state).length;
  const pending = result.deliveries.length - count('delivered') - count('failed');
  return [
    formatTable(['MEMBER', 'FILE', 'STATE', 'FROM SERVER', 'FROM PEERS', 'TIME', 'REASON'], table),
    '',
    `${count('delivered')} delivered, ${pending} pending, ${count('failed')} failed${result.timedOut ? ' (timed out waiting)' : ''}`
      + (pending > 0 && !result.timedOut ? ': pending deliveries go out when those members come back (group-server status shows them)' : ''),
  ].join('\n');
}

/** A delivery's file as people see it: a tree as `name/ (N files)`. */
function deliveryLabel(d: DeliveryView): string {
  return d.files === undefined ? d.file : transferLabel({ name: d.file, kind: 'tree', files: d.files });
}

/**
 * Files and directories that do not exist here are a usage error before anything is sent to the
 * daemon; a directory is a tree, checked by the daemon as it walks it.
 */
async function checkFiles(files: string[]): Promise<{ bytes: number; trees: number }> {
  let total = 0;
  let trees = 0;
  for (const file of files) {
    const info = await stat(file).catch((err: unknown) => {
      throw new GroupcastError(ErrorCode.USAGE, `${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { cause: err });
    });
    if (!info.isFile() && !info.isDirectory()) throw new GroupcastError(ErrorCode.USAGE, `${file} is neither a regular file nor a directory`);
    if (info.isFile()) total += info.size;
    else trees++;
  }
  return { bytes: total, trees };
}

/** What the command stores, for the line it says first: "2 file(s), 1.2 MiB and 1 directory as a tree". */
function storingWhat(files: number, bytes: number, trees: number): string {
  const parts: string[] = [];
  if (files > 0) parts.push(`${files} file(s), ${formatBytes(bytes)}`);
  if (trees > 0) parts.push(trees === 1 ? '1 directory as a tree' : `${trees} directories as trees`);
  return parts.join(' and ');
}

/**
 * Runs `distribute` against the daemon and shows it. On a terminal: a progress bar per delivery in
 * flight (bytes, rate, ETA), a line as each one ends. Otherwise: the same lines, plus a progress line
 * per delivery every `progressIntervalMs`. Then a summary table; or, with --json, one JSON document.
 * Ctrl-C stops watching, not the distribution: the daemon carries on with it.
 */
export async function runDistribute(stateDir: string, flags: DistributeFlags): Promise<number> {
  const { bytes: total, trees } = await checkFiles(flags.files);
  const tty = process.stdout.isTTY === true && !flags.json;
  // The bars' module only on a terminal: without one (scripts, CI) the command starts without it.
  const bars = tty ? new (await import('cli-progress')).default.MultiBar({
    // Each redraw lays the line out for the width the terminal has then (fitProgress).
    format: (_options, params, payload: ProgressParts) => fitProgress({ ...payload, fraction: params.progress }, terminalColumns()),
    hideCursor: true,
    clearOnComplete: false,
    // Lines logged above the bars (a delivery's outcome, with its transfer id) wrap instead of being cut.
    linewrap: true,
  }) : undefined;
  const rows = new Map<string, Row>();
  let labelWidth = 0;
  const say = (line: string): void => {
    if (flags.json) return;
    if (bars?.isActive) bars.log(`${line}\n`);
    else process.stdout.write(`${line}\n`);
  };
  const newRow = (key: string, label: string, file: string, size: number, storing: boolean): Row => {
    let row = rows.get(key);
    if (!row) {
      row = {
        label, file: printable(file), size, position: 0, fromServer: 0, fromPeers: 0, meter: new RateMeter(), startedAt: undefined, finishedAt: undefined,
        lastLineAt: 0, bar: undefined, storing, shown: '',
      };
      rows.set(key, row);
    }
    return row;
  };
  const rowFor = (transfer: string, member: PeerId, name: string, file: string, size: number): Row => newRow(`${transfer}/${member}`, memberLabel(member, name), file, size, false);
  /** A row's progress: its bar on a terminal; otherwise a plain line every progressIntervalMs. */
  const showProgress = (row: Row, position: number, now: number): void => {
    row.startedAt ??= now;
    row.position = position;
    row.meter.add(now, position);
    if (bars) {
      const payload = { ...partsOf(row), label: row.label.padEnd(labelWidth) };
      if (row.bar) row.bar.update(position, payload);
      else {
        row.bar = bars.create(row.size, position, payload);
        // Drawn at once, so even a delivery that ends before the next redraw is seen.
        bars.update();
      }
    } else if (!flags.json && now - row.lastLineAt >= flags.progressIntervalMs && now - row.startedAt >= flags.progressIntervalMs) {
      row.lastLineAt = now;
      say(progressLine(row));
    }
  };
  const closeBar = (row: Row): void => {
    if (row.bar) bars?.remove(row.bar);
    row.bar = undefined;
  };

  /** The transfers the daemon recorded (known from its first event): what a re-attach asks for. */
  let transferIds: string[] = [];
  let attached = false;
  let reconnects = 0;
  const onEvent = (raw: unknown): void => {
    const event = raw as DistributeEvent;
    const now = Date.now();
    if (event.kind === 'watching') {
      attached = true;
      say(`reconnected to the daemon: watching ${event.transfers.length} transfer(s) again`);
      return;
    }
    if (event.kind === 'storing') {
      const row = newRow(`storing/${event.file}`, 'storing', basename(event.file), event.size, true);
      showProgress(row, event.position, now);
      if (event.position >= event.size) closeBar(row);
      return;
    }
    if (event.kind === 'start') {
      transferIds = event.transfers.map((t) => t.id);
      for (const t of event.transfers) {
        say(`distributing ${printable(transferLabel(t))} (${formatBytes(t.size)}, sha256 ${t.sha256.slice(0, 16)}…) to ${flags.group}: transfer ${t.id}`);
        for (const m of event.members) labelWidth = Math.max(labelWidth, rowFor(t.id, m.id, m.name, transferLabel(t), t.size).label.length);
      }
      const offline = event.members.filter((m) => !m.online);
      say(`${event.members.length} member(s), ${offline.length} offline${offline.length ? `: ${offline.map((m) => memberLabel(m.id, m.name)).join(', ')}` : ''}`);
      return;
    }
    if (event.kind === 'progress') {
      const row = rows.get(`${event.transfer}/${event.member}`);
      if (!row) return;
      row.fromServer = event.fromServer;
      row.fromPeers = event.fromPeers;
      showProgress(row, event.position, now);
      return;
    }
    const d: DeliveryView = event.delivery;
    const row = rowFor(d.transfer, d.member, d.memberName, deliveryLabel(d), d.size);
    const shown = `${d.state}/${d.reason}`;
    if (row.shown === shown) return;
    row.shown = shown;
    if (d.state === 'sending') {
      row.startedAt ??= now;
      return;
    }
    if (d.state === 'delivered') {
      row.finishedAt = now;
      const took = row.startedAt === undefined ? 0 : now - row.startedAt;
      const taken = d.bytesSent + d.bytesFromPeers;
      const speed = took >= 1_000 ? `, ${formatBytes((taken / took) * 1_000)}/s` : '';
      say(`✓ ${row.label} ${row.file} delivered ${taken === 0 && d.size > 0 ? '(the member already had it)' : `(${sourcesText(d.bytesSent, d.bytesFromPeers)}, in ${formatDuration(took)}${speed})`}`);
    } else if (d.state === 'failed') {
      say(`✗ ${row.label} ${row.file} failed: ${printable(d.reason)}`);
    } else if (d.reason) {
      say(`… ${row.label} ${row.file} will retry: ${printable(d.reason)}`);
    }
    // After the line: removing a bar redraws, which prints what was logged.
    closeBar(row);
  };
  const stopBars = (): void => {
    if (bars?.isActive) {
      bars.update();
      bars.stop();
    }
  };
  const interrupted = (): void => {
    stopBars();
    process.stderr.write('\ngroup-server: stopped watching; the daemon goes on with the distribution ("group-server status" shows it)\n');
    process.exit(130);
  };
  process.once('SIGINT', interrupted);

  say(`storing ${storingWhat(flags.files.length - trees, total, trees)} in the server's content store…`);
  const began = Date.now();
  /** What is left of --timeout, for a watch that attaches again. */
  const timeoutLeft = (): number | undefined => (flags.timeoutMs === undefined ? undefined : Math.max(1, flags.timeoutMs - (Date.now() - began)));
  const watchAgain = (): Promise<DistributeResult> => reattach<DistributeResult>({
    stateDir,
    limitMs: flags.reconnectLimitMs,
    request: () => {
      attached = false;
      return { method: 'watch', params: { transfers: transferIds, waitAll: flags.waitAll, timeoutMs: timeoutLeft() } };
    },
    onEvent,
    attached: () => attached,
    onLost: () => {
      reconnects++;
      say('… lost the daemon (restarting?): the distribution is on record; reconnecting to go on watching');
    },
  });
  try {
    const result = await callDaemon<DistributeResult>(stateDir, 'distribute', {
      group: flags.group, files: flags.files, waitAll: flags.waitAll, timeoutMs: flags.timeoutMs, rate: flags.rate, to: flags.to,
    }, onEvent).catch((err: unknown) => {
      // Lost once the distribution was recorded: the daemon (restarted) still has it, so watch it there.
      if (transferIds.length === 0 || !isConnectionLoss(err)) throw err;
      return watchAgain();
    });
    stopBars();
    const code = exitCodeFor(result);
    if (flags.json) process.stdout.write(`${JSON.stringify({ ...result, reconnects, exitCode: code }, null, 2)}\n`);
    else if (result.deliveries.length === 0) process.stdout.write(`no member has joined ${flags.group}; nothing was sent (the file is kept for members that join within the retention time)\n`);
    else process.stdout.write(`${bars ? '' : '\n'}${summary(result, rows)}\n`);
    return code;
  } catch (err) {
    stopBars();
    throw err;
  } finally {
    process.off('SIGINT', interrupted);
  }
}
