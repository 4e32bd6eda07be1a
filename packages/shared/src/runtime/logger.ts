import { createRequire } from 'node:module';
import type * as Pino from 'pino';
import type { Logger, LevelWithSilent } from 'pino';
import type PinoPretty from 'pino-pretty';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * The root logger a CLI makes once; components take `log.child({ component })`. JSON lines on stderr,
 * pretty when stderr is a terminal (a person is reading) unless a format is given.
 */
export function createLogger(options: { name: string; level: LevelWithSilent; format?: LogFormat | undefined }): Logger {
  const format = options.format ?? (process.stderr.isTTY ? 'pretty' : 'json');
  const base = { name: options.name, level: options.level, base: { pid: process.pid } };
  // Loaded only here, by the commands that log: the operator's commands (distribute, status) start faster without them.
  const load = createRequire(import.meta.url);
  const { pino } = load('pino') as typeof Pino;
  if (format === 'pretty') {
    // A daemon under a service manager logs JSON and does not need pino-pretty either.
    const pretty = load('pino-pretty') as typeof PinoPretty;
    return pino(base, pretty({ destination: 2, sync: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' }));
  }
  return pino(base, pino.destination({ dest: 2, sync: true }));
}

/**
 * How many keys a RateLimitedLog remembers. Keys may name what the network sent (a sender id), so the
 * table is capped; past it the oldest key is forgotten, which at worst logs that key once more.
 */
const MAX_RATE_LIMITED_KEYS = 1_024;

/** Logs a recurring warning once per key per interval, counting what it held back. */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 60_000,
  ) {}

  warn(key: string, fields: object, message: string): void {
    const now = Date.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    this.last.delete(key);
    this.last.set(key, { at: now, suppressed: 0 });
    for (const oldest of this.last.keys()) {
      if (this.last.size <= MAX_RATE_LIMITED_KEYS) break;
      this.last.delete(oldest);
    }
    this.log.warn({ ...fields, suppressed: entry?.suppressed ?? 0 }, message);
  }
}
