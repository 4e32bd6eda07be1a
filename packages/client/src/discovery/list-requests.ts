import type { RemoteInfo } from 'node:dgram';
import type { ControlEndpoint, ControlMessage, Peer } from '@groupcast/shared';

type Cookie = Extract<ControlMessage, { type: 'cookie' }>;

/** Enough to match late answers to recent retries, without growing while no server answers. */
const MAX_PENDING = 64;
const NO_COOKIE = Buffer.alloc(0);

/**
 * The LISTs a member has sent, for matching their answers. A server answers a LIST without a valid
 * cookie with a COOKIE; the member asks again, unicast to where the COOKIE came from, with it. Only a
 * COOKIE answering one of our cookie-less LISTs is answered, and only once: a forged COOKIE can never
 * make a member send more than it asked for, and two ends can never bounce COOKIEs and LISTs forever.
 */
export class ListRequests {
  /** Request nonce (hex) → whether a COOKIE may still answer it. */
  private readonly pending = new Map<string, boolean>();

  constructor(private readonly endpoint: ControlEndpoint) {}

  send(to?: Peer, cookie: Buffer = NO_COOKIE): void {
    const nonce = this.endpoint.send({ type: 'list', cookie }, to).toString('hex');
    this.pending.set(nonce, cookie.length === 0);
    for (const oldest of this.pending.keys()) {
      if (this.pending.size <= MAX_PENDING) break;
      this.pending.delete(oldest);
    }
  }

  /** Is this the nonce of one of our LISTs? */
  has(request: Buffer): boolean {
    return this.pending.has(request.toString('hex'));
  }

  /** Asks again with the cookie, if it answers a cookie-less LIST of ours not answered before. */
  answer(cookie: Cookie, from: RemoteInfo): boolean {
    const key = cookie.request.toString('hex');
    if (this.pending.get(key) !== true) return false;
    this.pending.set(key, false);
    this.send({ address: from.address, port: from.port }, cookie.cookie);
    return true;
  }
}
