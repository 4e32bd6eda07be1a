import { once, EventEmitter } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { NakReason, RateLimitedLog, type Logger } from '../../packages/shared/src/index.js';
import { AttemptLimiter } from '../../packages/server/src/control/attempt-limiter.js';
import { LIST_COOKIE_SLICE_MS, ListCookies } from '../../packages/server/src/control/list-cookie.js';
import { Membership } from '../../packages/server/src/control/membership.js';
import { freshSigner } from '../security/tools.js';

const silent = pino({ level: 'silent' });
const peer = { address: '192.0.2.7', port: 40_000 };
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('ListCookies', () => {
  it('proves one source address and port, for its time slice and the next only', () => {
    let now = 10 * LIST_COOKIE_SLICE_MS + 5;
    const cookies = new ListCookies(() => now);
    const cookie = cookies.issue(peer);
    expect(cookies.valid(cookie, peer)).toBe(true);
    expect(cookies.valid(cookie, { ...peer, port: 40_001 })).toBe(false);
    expect(cookies.valid(cookie, { ...peer, address: '192.0.2.8' })).toBe(false);
    expect(cookies.valid(Buffer.alloc(0), peer)).toBe(false);
    expect(new ListCookies(() => now).valid(cookie, peer)).toBe(false);
    now += LIST_COOKIE_SLICE_MS;
    expect(cookies.valid(cookie, peer)).toBe(true);
    now += LIST_COOKIE_SLICE_MS;
    expect(cookies.valid(cookie, peer)).toBe(false);
  });
});

describe('AttemptLimiter.take', () => {
  it('allows the burst, then one per refill interval', () => {
    const limiter = new AttemptLimiter({ burst: 3, refillMs: 100 });
    expect([0, 0, 0, 0].map(() => limiter.take('a', 0))).toEqual([true, true, true, false]);
    expect(limiter.take('b', 0)).toBe(true);
    expect(limiter.take('a', 99)).toBe(false);
    expect(limiter.take('a', 100)).toBe(true);
    expect(limiter.take('a', 100)).toBe(false);
  });
});

describe('RateLimitedLog', () => {
  function counting(): { log: Logger; lines: Array<Record<string, unknown>> } {
    const lines: Array<Record<string, unknown>> = [];
    const log = { warn: (fields: Record<string, unknown>) => lines.push(fields) } as unknown as Logger;
    return { log, lines };
  }

  it('logs a key once per interval with the count held back, and forgets the oldest keys past its cap', () => {
    const { log, lines } = counting();
    const limited = new RateLimitedLog(log, 60_000);
    for (let i = 0; i < 5; i++) limited.warn('refused', {}, 'refused');
    expect(lines).toHaveLength(1);
    for (let i = 0; i < 5_000; i++) limited.warn(`peer:${i}`, {}, 'other');
    // 'refused' was pushed out by the flood of keys: it is logged again rather than the table growing.
    limited.warn('refused', {}, 'refused');
    expect(lines).toHaveLength(5_002);
    limited.warn('peer:4999', {}, 'other');
    expect(lines).toHaveLength(5_002);
  });
});

describe('Membership of an open group', () => {
  async function membership(now: () => number, saved?: object): Promise<Membership> {
    const dir = await mkdtemp(join(tmpdir(), 'gc-membership-'));
    dirs.push(dir);
    if (saved) await writeFile(join(dir, 'members.json'), JSON.stringify(saved));
    return new Membership({
      log: silent, stateDir: dir, clock: now, maxOpenMembers: 2, openMemberExpiryMs: 1_000,
      groups: [{ name: 'Lobby', description: '', open: true, members: [] }],
    });
  }

  it('caps guests, frees a place when one leaves or expires, and never records an id for its connection alone', async () => {
    let now = 0;
    const m = await membership(() => now);
    const [a, b, c, d] = [freshSigner(), freshSigner(), freshSigner(), freshSigner()].map((s) => s.id);
    const seen = { address: '192.0.2.1' };
    expect(m.join(a!, 'Lobby', seen)).toEqual({ ok: true });
    expect(m.join(b!, 'Lobby', seen)).toEqual({ ok: true });
    expect(m.join(c!, 'Lobby', seen)).toMatchObject({ ok: false, reason: NakReason.GROUP_FULL });
    expect(m.join(a!, 'Lobby', seen)).toEqual({ ok: true });
    m.leave(b!, 'Lobby', seen);
    expect(m.join(c!, 'Lobby', seen)).toEqual({ ok: true });

    m.setOnline(d!, true, { name: 'tls-only', address: '192.0.2.9' });
    expect(m.member(d!)).toBeUndefined();

    // a is online (never expires while connected); c went quiet.
    m.setOnline(a!, true, { name: 'a', address: '192.0.2.1' });
    now = 5_000;
    m.expireIdle();
    expect(m.member(c!)).toBeUndefined();
    expect(m.targets('Lobby')).toEqual([a]);
    // An allowed id is never expired, even offline and silent.
    m.allow('Lobby', b!);
    m.join(b!, 'Lobby', seen);
    now = 100_000;
    m.setOnline(a!, false);
    now = 200_000;
    m.expireIdle();
    expect(m.targets('Lobby')).toEqual([b]);
    await m.close();
  });

  it('state saved before the cap is trimmed to it on start, keeping the most recently seen', async () => {
    const ids = Array.from({ length: 5 }, () => freshSigner().id);
    const records = ids.map((id, i) => ({ id, name: '', address: '', joined: ['Lobby'], firstSeen: 0, lastSeen: 100 + i }));
    const m = await membership(() => 200, { version: 1, allowed: {}, revoked: {}, members: records });
    await m.load();
    m.start();
    expect(m.targets('Lobby').sort()).toEqual([ids[3], ids[4]].sort());
    expect(m.member(ids[0]!)).toBeUndefined();
    await m.close();
  });
});

describe('Membership on a state disk that refuses a write', () => {
  /** A logger whose lines are kept, and announced by message. */
  function recording(): { log: Logger; messages: string[]; logged: (msg: string) => Promise<unknown> } {
    const messages: string[] = [];
    const events = new EventEmitter();
    const log = pino({ level: 'info' }, {
      write(line: string) {
        const { msg } = JSON.parse(line) as { msg: string };
        messages.push(msg);
        events.emit(msg);
      },
    });
    return { log, messages, logged: (msg) => once(events, msg, { signal: AbortSignal.timeout(10_000) }) };
  }

  it('keeps the change and writes it once the disk takes it again, with one error logged meanwhile', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'gc-membership-'));
    dirs.push(parent);
    // Not there yet: every write of members.json fails until it is made.
    const stateDir = join(parent, 'state');
    const { log, messages, logged } = recording();
    const m = new Membership({ log, stateDir, groups: [{ name: 'Lobby', description: '', open: true, members: [] }] });
    const id = freshSigner().id;
    const failed = logged('cannot persist membership; trying again');
    expect(m.join(id, 'Lobby', { address: '192.0.2.1' })).toEqual({ ok: true });
    await failed;
    // An operator's change (allow, revoke) is told the write failed, and what becomes of the change.
    m.allow('Lobby', id);
    await expect(m.save()).rejects.toThrow(/cannot write the membership: .*; the change holds until the server stops/);

    const written = logged('membership written again');
    await mkdir(stateDir);
    await written;
    await m.save();
    const saved = JSON.parse(await readFile(join(stateDir, 'members.json'), 'utf8')) as { members: Array<{ id: string; joined: string[] }>; allowed: object };
    expect(saved.members.map((record) => [record.id, record.joined])).toEqual([[id, ['Lobby']]]);
    expect(saved.allowed).toEqual({ Lobby: [id] });
    expect(messages.filter((msg) => msg.startsWith('cannot persist'))).toHaveLength(1);
    await m.close();
  });
});
