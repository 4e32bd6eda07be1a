import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { get, type ClientRequest, type IncomingMessage } from 'node:http';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, MiB, writeRandomFile, type Member } from '../durability/cluster.js';
import { SERVER_BIN, harness, testPort } from '../support/daemons.js';

/**
 * The live web view on the --metrics listener, in a real headless browser (Debian's chromium driven
 * by playwright-core) against a real server and two real members on loopback: groups and members
 * online, per-member progress bars that move and reach 100% without a reload, a hostile member name
 * shown as text, and the token rule, checked over plain HTTP too.
 */
// Not a GROUPCAST_* variable: the daemons this test starts read those as their options.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) console.warn(`web-view.test: browser tests skipped: no chromium at ${CHROMIUM} (apt-get install -y chromium)`);

const HOSTILE = '<img src=x onerror="window.pwned=1">';
const TOKEN = 'test-token-0123456789abcdef';
const DOM_TIMEOUT_MS = 30_000;

/**
 * A relay between the members and the server's data port that passes the server's bytes at a bounded
 * rate, so a transfer lasts long enough for the page to show it in flight (the page pushes every 500 ms).
 */
class SlowRelay {
  private readonly sockets = new Set<Socket>();
  private readonly server: Server = createServer((member) => this.relay(member));
  target = 0;

  constructor(private readonly bytesPerSecond: number) {}

  async listen(): Promise<number> {
    await new Promise<void>((done) => this.server.listen(0, '127.0.0.1', done));
    return (this.server.address() as { port: number }).port;
  }

  private relay(member: Socket): void {
    const upstream = createConnection({ host: '127.0.0.1', port: this.target });
    for (const socket of [member, upstream]) {
      this.sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('close', () => {
        member.destroy();
        upstream.destroy();
      });
    }
    member.pipe(upstream);
    const tick = 50;
    let budget = this.bytesPerSecond / (1000 / tick);
    const refill = setInterval(() => {
      budget = this.bytesPerSecond / (1000 / tick);
      if (upstream.isPaused()) upstream.resume();
    }, tick);
    upstream.once('close', () => clearInterval(refill));
    upstream.on('data', (chunk: Buffer) => {
      member.write(chunk);
      budget -= chunk.length;
      if (budget <= 0) upstream.pause();
    });
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}

const h = harness();
const relay = new SlowRelay(8 * MiB);
let cluster: Cluster;
let alice: Member;
let mallory: Member;
let web: string;
let browser: Browser | undefined;

beforeAll(async () => {
  cluster = new Cluster(h);
  alice = await cluster.member('alice', ['Developers', 'Designers']);
  mallory = await cluster.member('mallory', ['Developers']);
  mallory.name = HOSTILE;
  const metricsPort = testPort();
  web = `http://127.0.0.1:${metricsPort}`;
  const relayPort = await relay.listen();
  const server = await cluster.startServer(
    [{ name: 'Developers', members: [alice, mallory] }, { name: 'Designers', members: [alice] }],
    ['--metrics', `127.0.0.1:${metricsPort}`, '--advertise-port', String(relayPort)],
  );
  relay.target = Number((await server.waitForMsg('group-server started')).tcpPort);
  await server.waitForMsg('metrics endpoint listening');
  await cluster.startOnline([alice, mallory]);
  if (haveBrowser) browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});

afterAll(async () => {
  await browser?.close();
  relay.close();
  await h.cleanup();
});

const waitFor = (page: Page, what: string, check: (arg: never) => boolean, arg?: unknown): Promise<unknown> =>
  page.waitForFunction(check, arg as never, { timeout: DOM_TIMEOUT_MS }).catch((err: unknown) => {
    throw new Error(`the page never showed ${what}: ${(err as Error).message}`);
  });

describe.skipIf(!haveBrowser)('web view in chromium', () => {
  let page: Page;

  beforeAll(async () => {
    page = await browser!.newPage();
    await page.goto(`${web}/`);
    // Set once: still there at the end means the page never reloaded.
    await page.evaluate(() => {
      (window as unknown as { sameDocument: boolean }).sameDocument = true;
    });
  });

  it('shows both groups and both members online', async () => {
    await waitFor(page, 'two groups', () => document.querySelectorAll('#groups tr').length === 2);
    expect(await page.$$eval('#groups td.name', (cells) => cells.map((c) => c.textContent))).toEqual(['Developers', 'Designers']);
    await waitFor(page, 'both members online', (ids: string[]) => ids.every((id) => document.querySelector<HTMLElement>(`tr[data-member="${id}"]`)?.dataset.online === 'true'), [alice.id, mallory.id]);
    expect(await page.textContent(`tr[data-member="${alice.id}"] td.status`)).toMatch(/^online/);
    expect(await page.textContent('#connection')).toBe('live');
  });

  it('shows a hostile member name as text: no element made from it, no script run', async () => {
    expect(await page.textContent(`tr[data-member="${mallory.id}"] td.name`)).toBe(HOSTILE);
    expect(await page.evaluate(() => document.querySelectorAll('img').length)).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();
  });

  it('a distribution shows a progress bar per member that moves and reaches 100%, live, without a reload', async () => {
    const file = join(cluster.serverState, '..', 'live.bin');
    await writeRandomFile(file, 24 * MiB);
    const distributing = cluster.distribute('Developers', [file]);
    const transfer = await cluster.transferOf('live.bin');
    const rows = (state?: string) => [...[alice.id, mallory.id].map((id) => `tr[data-delivery="${transfer}/${id}"]${state ? `[data-state="${state}"]` : ''}`)];

    await waitFor(page, 'a row per member for the new transfer', (selectors: string[]) => selectors.every((s) => document.querySelector(s)), rows());
    await waitFor(page, 'a bar part-way', (selectors: string[]) => selectors.some((s) => {
      const bar = document.querySelector<HTMLProgressElement>(`${s} progress`);
      return bar !== null && bar.value > 0 && bar.value < bar.max;
    }), rows());
    await waitFor(page, 'every bar full and delivered', (selectors: string[]) => selectors.every((s) => {
      const bar = document.querySelector<HTMLProgressElement>(`${s} progress`);
      return bar !== null && bar.value === bar.max && document.querySelector(`${s} td.percent`)?.textContent === '100%';
    }), rows('delivered'));
    expect((await distributing).code).toBe(0);
    expect(await page.textContent(`details[data-transfer="${transfer}"] summary`)).toMatch(/^live\.bin → Developers · 24\.0 MiB · 2 delivered, 0 pending, 0 failed/);
    expect(await page.textContent(`tr[data-delivery="${transfer}/${mallory.id}"] td.name`)).toBe(HOSTILE);
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
  });

  it('a tree sent --to one member says how many files it holds and whom it went to', async () => {
    const tree = join(cluster.serverState, '..', 'docs-tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await Promise.all([writeFile(join(tree, 'a.txt'), 'a'), writeFile(join(tree, 'b.txt'), 'b'), writeFile(join(tree, 'sub', 'c.txt'), 'c')]);
    const distributing = cluster.distribute('Developers', [tree], ['--to', 'alice']);
    const transfer = await cluster.transferOf('docs-tree');
    const summary = `details[data-transfer="${transfer}"] summary`;
    await waitFor(page, 'the tree delivered', (s: string) => /1 delivered/.test(document.querySelector(s)?.textContent ?? ''), summary);
    expect((await distributing).code).toBe(0);
    expect(await page.textContent(summary)).toMatch(/^docs-tree\/ \(3 files\) → Developers \(to alice\) · /);
    expect(await page.$$eval(`details[data-transfer="${transfer}"] tbody tr`, (rows) => rows.length)).toBe(1);
  });
});

/** One HTTP GET without a browser: status, headers, body. */
async function fetchText(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: string }> {
  const response = await fetch(url, { headers, redirect: 'manual' });
  return { status: response.status, headers: response.headers, body: await response.text() };
}

describe('web access with a token', () => {
  const tokenCluster = new Cluster(h);
  let url: string;

  beforeAll(async () => {
    const port = testPort();
    url = `http://127.0.0.1:${port}`;
    await tokenCluster.startServer([{ name: 'Developers', members: [] }], ['--metrics', `127.0.0.1:${port}`, '--web-token', TOKEN]);
    await tokenCluster.server!.waitForMsg('metrics endpoint listening');
  });

  it('refuses the page, the events and the metrics without the token (401), and serves them with it', async () => {
    for (const path of ['/', '/events', '/metrics', '/app.js']) {
      const refused = await fetchText(`${url}${path}`);
      expect(refused.status, path).toBe(401);
      expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
    expect((await fetchText(`${url}/`, { authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
    const page = await fetchText(`${url}/`, { authorization: `Bearer ${TOKEN}` });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    const scrape = await fetchText(`${url}/metrics`, { authorization: `Bearer ${TOKEN}` });
    expect(scrape.status).toBe(200);
    expect(scrape.body).toMatch(/^groupcast_members_online 0$/m);
  });

  it('?token= once sets an HttpOnly SameSite=Strict cookie (not the token itself) and drops the token from the address', async () => {
    const swap = await fetchText(`${url}/?token=${TOKEN}`);
    expect(swap.status).toBe(303);
    expect(swap.headers.get('location')).toBe('/');
    const cookie = swap.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(TOKEN);
    const withCookie = await fetchText(`${url}/`, { cookie: cookie.split(';')[0] ?? '' });
    expect(withCookie.status).toBe(200);
  });

  it('a hostile request target neither redirects to another site nor stops the listener', async () => {
    const port = Number(new URL(url).port);
    const raw = (target: string): Promise<string> => new Promise((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      let answer = '';
      socket.on('data', (chunk) => (answer += chunk.toString()));
      socket.on('error', () => resolve(answer));
      socket.on('close', () => resolve(answer));
      socket.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
    });
    expect(await raw(`/.//evil.example/?token=${TOKEN}`)).toMatch(/^HTTP\/1\.1 303[^]*\r\nlocation: \/evil\.example\/\r\n/i);
    expect(await raw('http://[/')).toMatch(/^(HTTP\/1\.1 400|$)/);
    expect((await fetchText(`${url}/`, { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  // Before any browser page on this server: a page closed moments ago may still hold its stream.
  it('holds at most 16 event streams at once, and frees a slot when a reader goes', async () => {
    const open = (): Promise<{ request: ClientRequest; response: IncomingMessage }> => new Promise((resolve, reject) => {
      const request = get(`${url}/events`, { agent: false, headers: { authorization: `Bearer ${TOKEN}` } }, (response) => resolve({ request, response }));
      request.on('error', reject);
    });
    const streams: ClientRequest[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const { request, response } = await open();
        streams.push(request);
        expect(response.statusCode).toBe(200);
      }
      const refused = await open();
      streams.push(refused.request);
      expect(refused.response.statusCode).toBe(503);
      streams.shift()?.destroy();
      const deadline = Date.now() + DOM_TIMEOUT_MS;
      for (;;) {
        const again = await open();
        streams.push(again.request);
        if (again.response.statusCode === 200) break;
        expect(Date.now(), 'a slot is freed once a reader leaves').toBeLessThan(deadline);
      }
    } finally {
      for (const stream of streams) stream.destroy();
    }
  });

  it.skipIf(!haveBrowser)('in the browser, the page opened once with ?token= stays live on the cookie', async () => {
    const context = await browser!.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${url}/?token=${TOKEN}`);
      expect(page.url()).toBe(`${url}/`);
      await waitFor(page, 'the live view', () => document.querySelector('#connection')?.getAttribute('data-state') === 'live' && document.querySelectorAll('#groups tr').length === 1);
    } finally {
      await context.close();
    }
  });

  it('refuses to start on an address other machines can reach without a token, before binding anything', async () => {
    const state = await h.dir('open');
    await writeFile(join(state, 'x'), '');
    const result = await h.run(SERVER_BIN, ['--state-dir', state, '--interface', '127.0.0.1', '--port', String(testPort()), '--tcp-port', '0', '--metrics', `0.0.0.0:${testPort()}`]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--metrics 0\.0\.0\.0: the web view and metrics on an address other machines can reach need a token: set --web-token/);
  });
});
