import type { ServerResponse } from 'node:http';
import { RateLimitedLog, type Logger, type PeerId } from '@groupcast/shared';
import type { Distributor } from '../delivery/distributor.js';
import type { Membership } from '../control/membership.js';
import type { StatusView } from '../operator/operations.js';
import { positionKey, webSnapshot } from './snapshot.js';

/** Pushes are coalesced to at most one per this interval, however many progress events arrive. */
export const WEB_PUSH_INTERVAL_MS = 500;
/** Without any event, the snapshot is rebuilt this often anyway (a retry coming due changes what a delivery waits for). */
export const WEB_REFRESH_MS = 5_000;
/** Event streams open at once; one more is answered 503, so a page left open in many tabs cannot pile up work. */
export const MAX_EVENT_STREAMS = 16;
/** A stream whose reader leaves more than this unread in our buffer is dropped (it reconnects when it reads again). */
export const MAX_STREAM_BUFFERED_BYTES = 1 << 20;
/** A comment line this often keeps proxies from closing an idle stream and shows up a reader that is gone. */
const KEEPALIVE_MS = 15_000;

/**
 * The web view's server-sent events: every open `/events` stream gets the current snapshot at once,
 * then a new one whenever something changed, at most every WEB_PUSH_INTERVAL_MS. The snapshot is
 * built once per push for every stream, and only while a stream is open.
 */
export class LiveStatus {
  readonly counters = { streams: 0, refused: 0, dropped: 0 };
  private readonly streams = new Set<ServerResponse>();
  private readonly positions = new Map<string, number>();
  private readonly warn: RateLimitedLog;
  private dirty = true;
  private lastBody = '';
  private builtAt = 0;
  private pushing = false;
  private timer: NodeJS.Timeout | undefined;
  private keepalive: NodeJS.Timeout | undefined;
  private readonly unsubscribe: Array<() => void> = [];

  constructor(private readonly options: { log: Logger; status: () => Promise<StatusView>; distributor: Distributor; membership: Membership }) {
    this.warn = new RateLimitedLog(options.log);
    const { distributor, membership } = options;
    const changed = (): void => {
      this.dirty = true;
    };
    const onProgress = (transfer: string, member: PeerId, position: number): void => {
      this.positions.set(positionKey(transfer, member), position);
      this.dirty = true;
    };
    const onDelivery = (delivery: { transfer: string; member: PeerId; state: string }): void => {
      if (delivery.state !== 'sending') this.positions.delete(positionKey(delivery.transfer, delivery.member));
      this.dirty = true;
    };
    distributor.on('progress', onProgress);
    distributor.on('delivery', onDelivery);
    for (const event of ['presence', 'joined', 'left', 'revoked'] as const) membership.on(event, changed);
    this.unsubscribe.push(
      () => distributor.off('progress', onProgress),
      () => distributor.off('delivery', onDelivery),
      ...(['presence', 'joined', 'left', 'revoked'] as const).map((event) => () => membership.off(event, changed)),
    );
  }

  /** Serves one `/events` request: refused past MAX_EVENT_STREAMS, else kept open until the reader goes. */
  open(response: ServerResponse): void {
    if (this.streams.size >= MAX_EVENT_STREAMS) {
      this.counters.refused++;
      this.warn.warn('streams', { limit: MAX_EVENT_STREAMS }, 'web view: too many event streams open; refusing another');
      response.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5' }).end(`at most ${MAX_EVENT_STREAMS} live views at once\n`);
      return;
    }
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    response.write('retry: 2000\n\n');
    this.streams.add(response);
    this.counters.streams++;
    response.on('close', () => this.streams.delete(response));
    if (this.lastBody) this.write(response, this.lastBody);
    this.dirty = true;
    this.schedule(0);
    this.keepalive ??= setInterval(() => {
      for (const stream of this.streams) this.write(stream, undefined);
    }, KEEPALIVE_MS);
  }

  private schedule(delayMs: number): void {
    if (this.timer || this.streams.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.push();
    }, delayMs);
  }

  /** Builds and sends a snapshot if something changed since the last one; then waits for the next interval. */
  private async push(): Promise<void> {
    if (this.pushing || this.streams.size === 0) return;
    this.pushing = true;
    try {
      const now = Date.now();
      if (this.dirty || now - this.builtAt >= WEB_REFRESH_MS) {
        this.dirty = false;
        this.builtAt = now;
        const body = JSON.stringify(webSnapshot(await this.options.status(), this.positions));
        if (body !== this.lastBody) {
          this.lastBody = body;
          for (const stream of this.streams) this.write(stream, body);
        }
      }
    } catch (err) {
      this.warn.warn('build', { err }, 'web view: cannot build the status snapshot');
    } finally {
      this.pushing = false;
    }
    if (this.streams.size === 0) {
      clearInterval(this.keepalive);
      this.keepalive = undefined;
      return;
    }
    this.schedule(WEB_PUSH_INTERVAL_MS);
  }

  /** One event (or a keep-alive comment); a reader that lets our buffer fill is dropped instead. */
  private write(stream: ServerResponse, body: string | undefined): void {
    if (stream.writableLength > MAX_STREAM_BUFFERED_BYTES) {
      this.counters.dropped++;
      this.warn.warn('slow', { bufferedBytes: stream.writableLength }, 'web view: dropped an event stream that does not read');
      this.streams.delete(stream);
      stream.destroy();
      return;
    }
    stream.write(body === undefined ? ': keep-alive\n\n' : `event: status\ndata: ${`{"now":${Date.now()},${body.slice(1)}`}\n\n`);
  }

  close(): void {
    clearTimeout(this.timer);
    clearInterval(this.keepalive);
    for (const off of this.unsubscribe) off();
    for (const stream of this.streams) stream.destroy();
    this.streams.clear();
  }
}
