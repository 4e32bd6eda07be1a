import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { LIST_COOKIE_LENGTH, type Peer } from '@groupcast/shared';

/**
 * How long a cookie's time slice is. A cookie is accepted in its slice and the next, so it lives 30 to
 * 60 s: a member uses it within one round trip, and a captured cookie is worth little for long.
 */
export const LIST_COOKIE_SLICE_MS = 30_000;
const LABEL = Buffer.from('groupcast-list-cookie-v1\0', 'latin1');

/**
 * Stateless proof of a LIST's source address, as QUIC's Retry token: an HMAC, under a secret made at
 * start and never stored, of the address, the port and the time slice. Only whoever receives what is
 * sent to that address can echo it, so a forged source address never gets the (larger) GROUPS pages.
 */
export class ListCookies {
  private readonly secret = randomBytes(32);

  constructor(private readonly clock: () => number = Date.now) {}

  private cookieFor(peer: Peer, slice: number): Buffer {
    const port = Buffer.alloc(2);
    port.writeUInt16BE(peer.port);
    const sliceBytes = Buffer.alloc(8);
    sliceBytes.writeBigUInt64BE(BigInt(Math.max(0, slice)));
    return createHmac('sha256', this.secret)
      .update(LABEL).update(sliceBytes).update(port).update(peer.address, 'utf8')
      .digest()
      .subarray(0, LIST_COOKIE_LENGTH);
  }

  issue(peer: Peer): Buffer {
    return this.cookieFor(peer, Math.floor(this.clock() / LIST_COOKIE_SLICE_MS));
  }

  valid(cookie: Buffer, peer: Peer): boolean {
    if (cookie.length !== LIST_COOKIE_LENGTH) return false;
    const slice = Math.floor(this.clock() / LIST_COOKIE_SLICE_MS);
    return [slice, slice - 1].some((s) => timingSafeEqual(this.cookieFor(peer, s), cookie));
  }
}
