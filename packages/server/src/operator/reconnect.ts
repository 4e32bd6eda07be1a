import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay, ErrorCode, formatDuration, GroupcastError, isGroupcastError } from '@groupcast/shared';
import { callDaemon } from './control-socket.js';

/**
 * How long `distribute` keeps trying by default (--reconnect-timeout) to reach a daemon that went away (a restart, a crash a service
 * manager restarts) before it gives up with DaemonLost (exit 5). Long enough for a systemd restart
 * with its RestartSec and a slow start on a loaded machine; short enough that a script notices a
 * daemon that stays down. Counted again from each time it attached.
 */
export const RECONNECT_LIMIT_MS = 120_000;
/** Between attempts to reach it: backoff with jitter from this, doubling, up to the cap. */
const RECONNECT_BASE_MS = 200;
const RECONNECT_CAP_MS = 5_000;

/** The daemon went away while `distribute` watched and did not come back within RECONNECT_LIMIT_MS. */
export class DaemonLost extends GroupcastError {
  constructor(stateDir: string, limitMs: number) {
    super(ErrorCode.DAEMON_UNREACHABLE, `lost the daemon (state dir ${stateDir}) and it did not come back within ${formatDuration(limitMs)}; `
      + 'the distribution is on record and goes on when it starts again ("group-server status" shows it)');
  }
}

/** The connection ended before an answer (CLOSED), or could not be made (the daemon is not there yet). */
export function isConnectionLoss(err: unknown): boolean {
  return isGroupcastError(err) && (err.code === ErrorCode.CLOSED || err.code === ErrorCode.DAEMON_UNREACHABLE);
}

export interface Reattach {
  stateDir: string;
  /** How long to try each time the daemon is lost (RECONNECT_LIMIT_MS unless set). */
  limitMs?: number | undefined;
  /** The request that attaches again (method and params): called anew on each attempt. */
  request: () => { method: string; params: object };
  onEvent: (event: unknown) => void;
  /** Whether the last call got as far as attaching (the daemon answered with its first event). */
  attached: () => boolean;
  /** Told once each time the daemon is lost. */
  onLost: () => void;
}

/**
 * Calls the daemon again after it was lost, with backoff, until a call answers. A call that attached
 * and then lost the daemon again starts a new wait; one that never reached it counts against the
 * same limit. Errors other than a lost connection (an unknown transfer) are thrown.
 */
export async function reattach<T>(options: Reattach): Promise<T> {
  for (;;) {
    options.onLost();
    const limitMs = options.limitMs ?? RECONNECT_LIMIT_MS;
    const deadline = Date.now() + limitMs;
    for (let attempt = 0; ; attempt++) {
      const left = deadline - Date.now();
      if (left <= 0) throw new DaemonLost(options.stateDir, limitMs);
      await sleep(Math.min(left, backoffDelay(attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS)));
      try {
        const { method, params } = options.request();
        return await callDaemon<T>(options.stateDir, method, params, options.onEvent);
      } catch (err) {
        if (!isConnectionLoss(err)) throw err;
        if (options.attached()) break;
      }
    }
  }
}
