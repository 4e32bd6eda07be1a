import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import type { Counter } from 'prom-client';
import { ErrorCode, GroupcastError } from '../errors.js';
import type { Logger } from './logger.js';
import { listenFailure, parseHostPort } from './network.js';

export const DEFAULT_METRICS_PORT = 9477;

/**
 * `--metrics` value: `PORT` (loopback), `ADDR` (port 9477) or `ADDR:PORT`. Loopback unless an address
 * is named, because the numbers describe the network and who is on it.
 */
export function parseMetricsAddress(text: string): { host: string; port: number } {
  const value = text.trim();
  if (/^\d+$/.test(value)) {
    const port = Number(value);
    if (port < 1 || port > 65535) throw new GroupcastError(ErrorCode.USAGE, `--metrics: port ${value} is not 1..65535`);
    return { host: '127.0.0.1', port };
  }
  const usage = new GroupcastError(ErrorCode.USAGE, `--metrics: "${text}" is not PORT, ADDR or ADDR:PORT (e.g. 9477 or 0.0.0.0:9477)`);
  let parsed: { host: string; port: number };
  try {
    parsed = parseHostPort(value, DEFAULT_METRICS_PORT);
  } catch {
    throw usage;
  }
  if (isIP(parsed.host) === 0 && parsed.host !== 'localhost') throw usage;
  return parsed;
}

type Labelled = Record<string, number>;

let promClient: typeof import('prom-client') | undefined;

/**
 * prom-client is loaded with the first Metrics, i.e. only by a daemon started with --metrics: it costs
 * ~45 ms of every start otherwise, and a member's start-up is most of its discovery time.
 */
function prom(): typeof import('prom-client') {
  promClient ??= createRequire(import.meta.url)('prom-client') as typeof import('prom-client');
  return promClient;
}

/**
 * A daemon's Prometheus metrics. Most values already live in the components' counters, so they are
 * read at scrape time rather than mirrored: nothing on the hot path changes for metrics.
 */
export class Metrics {
  readonly registry = new (prom().Registry)();

  constructor() {
    prom().collectDefaultMetrics({ register: this.registry });
  }

  /** A counter whose value is read from a live count at scrape time. */
  counter(name: string, help: string, read: () => number): void {
    new (prom().Counter)({
      name, help, registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  /** A counter per label value, read at scrape time. */
  counterBy(name: string, help: string, label: string, read: () => Labelled): void {
    new (prom().Counter)({
      name, help, labelNames: [label], registers: [this.registry],
      collect() {
        this.reset();
        for (const [value, count] of Object.entries(read())) this.inc({ [label]: value }, count);
      },
    });
  }

  gauge(name: string, help: string, read: () => number): void {
    new (prom().Gauge)({
      name, help, registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  gaugeBy(name: string, help: string, label: string, read: () => Labelled): void {
    new (prom().Gauge)({
      name, help, labelNames: [label], registers: [this.registry],
      collect() {
        this.reset();
        for (const [value, count] of Object.entries(read())) this.set({ [label]: value }, count);
      },
    });
  }

  /** A counter the daemon increments itself, for events no component counts. */
  incrementer(name: string, help: string): Counter {
    return new (prom().Counter)({ name, help, registers: [this.registry] });
  }
}

export interface MetricsEndpoint {
  /** The address actually bound (port 0 picks one). */
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Something else served on the metrics listener (the server's web view): it answers the request, or
 * calls `next()` to let `/metrics` be served. It sees every request first, so it can also refuse one.
 */
export type HttpHandler = (request: IncomingMessage, response: ServerResponse, next: () => void) => void;

/**
 * Connections the listener holds at once: the page, its event streams (bounded on their own) and
 * scrapers need a few; past this the kernel queues and then refuses new ones, and nothing grows.
 */
const MAX_HTTP_CONNECTIONS = 64;

/**
 * Serves `GET /metrics` in the Prometheus text format, and whatever `handler` serves besides. A failed
 * bind is fatal, like any listener's.
 */
export async function serveMetrics(metrics: Metrics, listen: { host: string; port: number }, log: Logger, handler?: HttpHandler): Promise<MetricsEndpoint> {
  const serveScrape = (request: IncomingMessage, response: ServerResponse): void => {
    if (request.url !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are at /metrics\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(request.method === 'HEAD' ? undefined : text),
      (err: unknown) => {
        log.warn({ err }, 'metrics collection failed');
        response.writeHead(500).end();
      },
    );
  };
  const server: Server = createServer((request, response) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (handler) handler(request, response, () => serveScrape(request, response));
    else serveScrape(request, response);
  });
  server.maxConnections = MAX_HTTP_CONNECTIONS;
  server.on('clientError', (_err, socket) => socket.destroy());
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen.port, listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    throw listenFailure(err, 'HTTP (--metrics)', listen.host, listen.port, 'another group-server or exporter? choose another with --metrics');
  }
  const bound = server.address();
  const port = typeof bound === 'object' && bound ? bound.port : listen.port;
  log.info({ address: `${listen.host}:${port}` }, 'metrics endpoint listening');
  return {
    address: listen.host,
    port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
