import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, SERVER_BIN } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, partialDir, waitForNew, writeRandomFile, type Member } from './cluster.js';

/**
 * The operator's cancel and retry, through the CLI and the control socket, against real daemons:
 * carol and dan in Developers, taking the server's stream (--no-peers), so that a large file is
 * certainly mid-way when they are frozen (SIGSTOP) right after accepting it.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
let carol: Member;
let dan: Member;
let source: string;

beforeAll(async () => {
  [carol, dan] = await c.startGroup(GROUP, ['carol', 'dan']);
  source = await h.dir('source');
});

afterAll(async () => {
  for (const m of [carol, dan]) m.daemon?.proc.kill('SIGCONT');
  await h.cleanup();
});

function operator(args: string[]) {
  return h.run(SERVER_BIN, [...args, '--state-dir', c.serverState]);
}

interface Change { changed: Array<{ member: string; state: string; reason: string }>; unchanged: Array<{ member: string; why: string }> }

async function failedCount(member: Member): Promise<number> {
  const { code, stdout, stderr } = await operator(['members', '--json']);
  expect(code, stderr).toBe(0);
  return (JSON.parse(stdout) as Array<{ id: string; failed: number }>).find((m) => m.id === member.id)!.failed;
}

/** A file in the member's download folder that groupcast did not put there: a name clash. */
async function clashFor(member: Member, name: string): Promise<string> {
  const path = finalPath(member, GROUP, name);
  await mkdir(join(member.downloads, GROUP), { recursive: true });
  await writeFile(path, `${member.name}'s own ${name}`);
  return path;
}

describe('cancel and retry', () => {
  it('cancel stops a transfer mid-way: each member gets CANCEL and drops its partial; the deliveries fail "cancelled by the operator"', async () => {
    const path = join(source, 'big.bin');
    await writeRandomFile(path, 128 * MiB);
    const distributed = c.distribute(GROUP, [path], ['--json']);
    const transfer = await c.transferOf('big.bin');
    await Promise.all([carol, dan].map(async (m) => {
      await m.daemon!.waitForLog((l) => l.msg === 'accepted' && l.file === 'big.bin', 60_000);
      m.daemon!.proc.kill('SIGSTOP');
      expect((await stat(join(partialDir(m), transfer))).size).toBeLessThan(128 * MiB);
    }));
    const cancelling = waitForNew(c.server!, 'cancelling deliveries', { transfer });
    const cancelled = operator(['cancel', transfer.slice(0, 8), '--json']);
    await cancelling;
    for (const m of [carol, dan]) m.daemon!.proc.kill('SIGCONT');

    const answer = await cancelled;
    expect(answer.code, answer.stdout + answer.stderr).toBe(0);
    const change = JSON.parse(answer.stdout) as Change;
    expect(change.changed.map((d) => [d.state, d.reason])).toEqual([['failed', 'cancelled by the operator'], ['failed', 'cancelled by the operator']]);
    const result = await distributed;
    expect(result.code, result.stdout + result.stderr).toBe(1);
    for (const m of [carol, dan]) {
      await m.daemon!.waitForMsg('cancelled by the server', { file: 'big.bin' });
      expect(await readdir(partialDir(m))).toEqual([]);
      expect(m.daemon!.logs.some((l) => l.msg === 'received' && l.file === 'big.bin')).toBe(false);
    }

    // Nothing left to cancel: said so, exit 0.
    const again = await operator(['cancel', transfer.slice(0, 12)]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing cancelled for big\.bin/);
  });

  it('retry re-sends a delivery that failed (a name clash since removed) to that member only; its failed count drops', async () => {
    const path = join(source, 'notes.txt');
    const sha256 = await writeRandomFile(path, 256 * 1024);
    const clash = await clashFor(carol, 'notes.txt');
    const first = await c.distribute(GROUP, [path]);
    expect(first.code, first.stdout).toBe(1);
    const transfer = await c.transferOf('notes.txt');
    const failedBefore = await failedCount(carol);
    expect(failedBefore).toBeGreaterThanOrEqual(1);

    await rm(clash);
    const received = waitForNew(carol.daemon!, 'received', { file: 'notes.txt' }, 30_000);
    const retried = await operator(['retry', transfer.slice(0, 6), '--member', carol.id.slice(0, 7), '--json']);
    expect(retried.code, retried.stdout + retried.stderr).toBe(0);
    const change = JSON.parse(retried.stdout) as Change;
    // Queued again, and perhaps already on its way by the time the answer is written.
    expect(change.changed.map((d) => d.member)).toEqual([carol.id]);
    expect(['pending', 'sending', 'delivered']).toContain(change.changed[0]!.state);
    await received;
    expect(await sha256File(finalPath(carol, GROUP, 'notes.txt'))).toBe(sha256);
    expect(await failedCount(carol)).toBe(failedBefore - 1);
    expect(dan.daemon!.logs.filter((l) => l.msg === 'received' && l.file === 'notes.txt')).toHaveLength(1);
  });

  it('a re-send of the same name that arrives clears the failure from the count; retry of a file retention removed says so and exits 1', async () => {
    const old = join(source, 'one', 'report.pdf');
    await mkdir(join(source, 'one'));
    await writeRandomFile(old, 64 * 1024);
    const clash = await clashFor(carol, 'report.pdf');
    expect((await c.distribute(GROUP, [old])).code).toBe(1);
    const oldTransfer = await c.transferOf('report.pdf');
    const failedBefore = await failedCount(carol);

    // Carol's user moves the local file away; the operator distributes a new version to everyone.
    await rm(clash);
    const newer = join(source, 'two', 'report.pdf');
    await mkdir(join(source, 'two'));
    await writeRandomFile(newer, 64 * 1024);
    await rm(finalPath(dan, GROUP, 'report.pdf'));
    const resent = await c.distribute(GROUP, [newer]);
    expect(resent.code, resent.stdout).toBe(0);
    expect(await failedCount(carol)).toBe(failedBefore - 1);

    // The old version is superseded and every delivery of it ended: retention removed it.
    const retried = await operator(['retry', oldTransfer.slice(0, 8)]);
    expect(retried.code, retried.stdout + retried.stderr).toBe(1);
    expect(retried.stderr).toMatch(/the store no longer holds report\.pdf .*retention removed it/);
  });

  it('refuses a transfer id that is too short (usage, exit 2) or unknown (exit 1, as JSON with --json)', async () => {
    const short = await operator(['retry', 'abc']);
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/at least its first 6 hex characters/);
    const unknown = await operator(['cancel', '000000', '--json']);
    expect(unknown.code).toBe(1);
    expect(JSON.parse(unknown.stdout)).toMatchObject({ error: { code: 'GC_ERR_NOT_FOUND' } });
  });
});
