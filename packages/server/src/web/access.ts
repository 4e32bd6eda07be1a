import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { ErrorCode, GroupcastError } from '@groupcast/shared';

/**
 * Who may read the web view and the metrics on the `--metrics` listener. The page names every member,
 * its address and what it receives, so off loopback it needs a token (`--web-token`); a token, once
 * set, guards every path of the listener, /metrics included (Prometheus sends it as a bearer token).
 */

/** A token shorter than this is refused: it guards the member list from the whole network. */
export const MIN_WEB_TOKEN = 16;
export const MAX_WEB_TOKEN = 256;
const COOKIE = 'groupcast_web';

/** `--web-token` / `webToken` / GROUPCAST_WEB_TOKEN: printable ASCII, no spaces, 16..256 characters. */
export function parseWebToken(text: string): string {
  if (text.length < MIN_WEB_TOKEN || text.length > MAX_WEB_TOKEN || !/^[\x21-\x7e]+$/.test(text)) {
    throw new GroupcastError(ErrorCode.CONFIG, `--web-token must be ${MIN_WEB_TOKEN} to ${MAX_WEB_TOKEN} printable characters without spaces (e.g. from "openssl rand -hex 24")`);
  }
  return text;
}

/** 127.0.0.0/8, ::1 and localhost: addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').replace(/^::ffff:/i, '');
  if (bare === 'localhost' || bare === '::1') return true;
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/** Refuses, before anything binds, a listener off loopback that would show the member list to anyone. */
export function requireTokenOffLoopback(host: string, token: string | undefined): void {
  if (token === undefined && !isLoopback(host)) {
    throw new GroupcastError(ErrorCode.CONFIG, `--metrics ${host}: the web view and metrics on an address other machines can reach need a token: `
      + 'set --web-token (or "webToken" in the config, or GROUPCAST_WEB_TOKEN), or listen on 127.0.0.1');
  }
}

/** Equal-length digests, so the comparison takes the same time whatever the guess. */
function sameSecret(given: string, expected: Buffer): boolean {
  return timingSafeEqual(createHash('sha256').update(given).digest(), expected);
}

function cookieValue(request: IncomingMessage): string | undefined {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === COOKIE) return rest.join('=');
  }
  return undefined;
}

/** A Host header naming this machine's loopback: what a page fetched by a DNS-rebinding site does not send. */
function loopbackHost(request: IncomingMessage): boolean {
  const host = request.headers.host ?? '';
  const name = /^\[([^\]]+)\](?::\d+)?$/.exec(host)?.[1] ?? host.replace(/:\d+$/, '');
  return isLoopback(name);
}

export class WebAccess {
  private readonly digest: Buffer | undefined;
  /** What the cookie holds: a digest of the token, so the browser never stores the token itself. */
  private readonly cookie: string | undefined;

  constructor(token: string | undefined) {
    this.digest = token === undefined ? undefined : createHash('sha256').update(token).digest();
    this.cookie = token === undefined ? undefined : createHash('sha256').update(`groupcast-web-cookie:${token}`).digest('hex');
  }

  /**
   * True when the request may go on. Otherwise it has been answered: 401 without a valid token, a
   * redirect that swaps `?token=` for an HttpOnly cookie (so the token leaves the address bar and the
   * history), or 403 for a tokenless listener reached under a name that is not loopback.
   */
  admit(request: IncomingMessage, response: ServerResponse, url: URL): boolean {
    if (!this.digest || !this.cookie) {
      if (loopbackHost(request)) return true;
      response.writeHead(403, { 'content-type': 'text/plain' }).end('this listener answers only to 127.0.0.1 / localhost\n');
      return false;
    }
    const bearer = /^Bearer (\S+)$/i.exec(request.headers.authorization ?? '')?.[1];
    if (bearer !== undefined && sameSecret(bearer, this.digest)) return true;
    const cookie = cookieValue(request);
    if (cookie !== undefined && cookie.length === this.cookie.length && timingSafeEqual(Buffer.from(cookie), Buffer.from(this.cookie))) return true;
    const query = url.searchParams.get('token');
    if (query !== null && sameSecret(query, this.digest)) {
      url.searchParams.delete('token');
      response.writeHead(303, {
        // One leading slash: "//host/…" would send the browser to another site.
        location: `${url.pathname.replace(/^\/+/, '/')}${url.search}`,
        'set-cookie': `${COOKIE}=${this.cookie}; HttpOnly; SameSite=Strict; Path=/`,
        'cache-control': 'no-store',
      }).end();
      return false;
    }
    response.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="groupcast"' })
      .end('a token is needed: open /?token=<token> once in the browser, or send "Authorization: Bearer <token>"\n');
    return false;
  }
}
