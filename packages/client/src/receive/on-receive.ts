import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import PQueue from 'p-queue';
import type { Logger } from '@groupcast/shared';
import type { ReceivedEvent } from './events.js';

export interface OnReceiveOptions {
  /** Run as `sh -c COMMAND`. */
  command: string;
  timeoutMs: number;
  /** Commands running at once; more deliveries wait their turn. */
  concurrency: number;
  log: Logger;
  /** After SIGTERM at the timeout, how long before SIGKILL. */
  killGraceMs?: number;
}

export type HookResult = 'ok' | 'failed' | 'timeout';

export interface OnReceiveEvents {
  done: [event: ReceivedEvent, result: HookResult];
}

/** Output kept for the log when a command fails: its last bytes, where the error usually is. */
const OUTPUT_TAIL = 2048;
const KILL_GRACE_MS = 5_000;

function tail(chunks: Buffer[]): string {
  const all = Buffer.concat(chunks);
  return all.subarray(Math.max(0, all.length - OUTPUT_TAIL)).toString('utf8').trim();
}

/**
 * `--on-receive`: runs the operator's command after each verified delivery, with the file described
 * in its environment. It runs after the file is in place and recorded, so whatever the command does
 * — fail, hang, crash — the file stays: a failure or a timeout is logged, and that is all.
 */
export class OnReceive extends EventEmitter<OnReceiveEvents> {
  private readonly queue: PQueue;
  private readonly running = new Set<number>();
  private closed = false;

  constructor(private readonly options: OnReceiveOptions) {
    super();
    this.queue = new PQueue({ concurrency: options.concurrency });
  }

  /** Queues the command for one received file. */
  run(event: ReceivedEvent): void {
    if (this.closed) return;
    void this.queue.add(() => this.execute(event));
  }

  private execute(event: ReceivedEvent): Promise<void> {
    const { command, timeoutMs, log } = this.options;
    const fields = { transfer: event.transfer, group: event.group, path: event.path };
    const started = Date.now();
    return new Promise<void>((resolve) => {
      const child = spawn('sh', ['-c', command], {
        // Its own process group, so a timeout ends what it started too (sh -c 'a | b').
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          GROUPCAST_FILE: event.path,
          GROUPCAST_GROUP: event.group,
          GROUPCAST_NAME: event.name,
          GROUPCAST_SHA256: event.sha256,
          GROUPCAST_SIZE: String(event.size),
          GROUPCAST_TRANSFER: event.transfer,
        },
      });
      const output: Buffer[] = [];
      let kept = 0;
      const keep = (chunk: Buffer): void => {
        output.push(chunk);
        kept += chunk.length;
        while (kept > OUTPUT_TAIL * 2 && output.length > 1) kept -= output.shift()?.length ?? 0;
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      let timedOut = false;
      let killTimer: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        timedOut = true;
        this.signal(child.pid, 'SIGTERM');
        killTimer = setTimeout(() => this.signal(child.pid, 'SIGKILL'), this.options.killGraceMs ?? KILL_GRACE_MS);
      }, timeoutMs);
      if (child.pid !== undefined) this.running.add(child.pid);
      const finish = (result: HookResult, extra: object): void => {
        clearTimeout(timer);
        clearTimeout(killTimer);
        if (child.pid !== undefined) this.running.delete(child.pid);
        const done = { ...fields, ...extra, ms: Date.now() - started };
        if (result === 'ok') log.info(done, 'on-receive command done');
        else log.warn({ ...done, output: tail(output) }, result === 'timeout' ? 'on-receive command timed out; the file is kept' : 'on-receive command failed; the file is kept');
        this.emit('done', event, result);
        resolve();
      };
      child.once('error', (err) => finish('failed', { err }));
      child.once('close', (code, signal) => {
        if (timedOut) finish('timeout', { timeoutMs, signal });
        else finish(code === 0 ? 'ok' : 'failed', { exitCode: code, signal });
      });
    });
  }

  private signal(pid: number | undefined, signal: NodeJS.Signals): void {
    if (pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch {
      // Already gone.
    }
  }

  /** Drops what has not started and ends what runs (SIGTERM); resolves when they are gone. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const skipped = this.queue.size;
    this.queue.clear();
    if (skipped > 0) this.options.log.warn({ skipped }, 'on-receive commands not run: shutting down');
    for (const pid of this.running) this.signal(pid, 'SIGTERM');
    await this.queue.onIdle();
  }
}
