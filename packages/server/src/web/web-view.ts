import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpHandler } from '@groupcast/shared';
import { WebAccess } from './access.js';
import type { LiveStatus } from './live-status.js';

/** The page's three static files, read once at start: they ship in the package next to this code. */
const ASSETS = new URL('../../src/web/assets/', import.meta.url);
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

/**
 * Every answer forbids what the page never needs: scripts and styles only from this listener (no
 * inline script, so markup smuggled into a member name could not run even if it were parsed), no
 * framing, no referrer, no caching of live data.
 */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/**
 * The read-only web view on the `--metrics` listener: `/` (the page), `/app.js`, `/app.css`,
 * `/events` (the live status as server-sent events); anything else goes on to `/metrics`. Access
 * is checked first for every path (see WebAccess).
 */
export function webView(options: { live: LiveStatus; token: string | undefined }): HttpHandler {
  const access = new WebAccess(options.token);
  const files = new Map(Object.entries(FILES).map(([path, { file, type }]) => [path, { type, body: readFileSync(new URL(file, ASSETS)) }]));
  return (request: IncomingMessage, response: ServerResponse, next: () => void): void => {
    const url = URL.parse(request.url ?? '/', 'http://listener');
    if (!url) {
      response.writeHead(400, { 'content-type': 'text/plain' }).end('bad request target\n');
      return;
    }
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.setHeader(name, value);
    if (!access.admit(request, response, url)) return;
    if (url.pathname === '/events') {
      if (request.method === 'HEAD') response.writeHead(200, { 'content-type': 'text/event-stream' }).end();
      else options.live.open(response);
      return;
    }
    const file = files.get(url.pathname);
    if (!file) {
      next();
      return;
    }
    response.writeHead(200, { 'content-type': file.type, 'content-length': file.body.length });
    response.end(request.method === 'HEAD' ? undefined : file.body);
  };
}
