import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_BIN, harness, SERVER_BIN } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { Cluster, finalPath, MiB, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * Rate limits are behaviour, not speed: with a cap of 4 MB/s a 16 MiB delivery (16.8 MB) cannot take
 * much less than 4 s, where on loopback it takes well under one without. The bound is generous (the
 * bucket starts full, a quarter second's worth), so a loaded machine only makes it easier to meet.
 */
const h = harness();
const c = new Cluster(h);
const GROUP = 'Developers';
const SIZE = 16 * MiB;
const AT_LEAST_MS = 3_500;
let member: Member;
let source: string;
let runs = 0;

/** Distributes a new 16 MiB file (a new name and content: the member holds nothing of it); how long it took, verified. */
async function timedDistribute(extra: string[] = []): Promise<number> {
  const name = `capped-${runs++}.bin`;
  const sha256 = await writeRandomFile(join(source, name), SIZE);
  const started = performance.now();
  const ran = await c.distribute(GROUP, [join(source, name)], extra);
  const took = performance.now() - started;
  expect(ran.code, ran.stdout + ran.stderr).toBe(0);
  expect(await sha256File(finalPath(member, GROUP, name))).toBe(sha256);
  return took;
}

beforeAll(async () => {
  [member] = await c.startGroup(GROUP, ['m']);
  source = await h.dir('source');
});

afterAll(() => h.cleanup());

describe('rate limits', () => {
  it('the server\'s rate from its config file ("rate": "4M") holds a 16 MiB delivery to about 4 s', async () => {
    // The config file's key, the flag's value: the server restarts on the same state with it.
    await writeFile(c.config, JSON.stringify({ groups: [{ name: GROUP, members: [member.id] }], rate: '4M' }));
    await c.server!.stop();
    await c.restartServer();
    await c.online(member);
    expect(await timedDistribute()).toBeGreaterThanOrEqual(AT_LEAST_MS);
  });

  it('--rate on the command line does the same', async () => {
    await writeFile(c.config, JSON.stringify({ groups: [{ name: GROUP, members: [member.id] }] }));
    await c.server!.stop();
    await c.restartServer(['--tcp-port', '0', '--rate', '4M']);
    await c.online(member);
    expect(await timedDistribute()).toBeGreaterThanOrEqual(AT_LEAST_MS);
  });

  it('distribute --rate caps one distribution on a server without a rate, and without it the same file goes at once', async () => {
    await c.server!.stop();
    await c.restartServer(['--tcp-port', '0']);
    await c.online(member);
    expect(await timedDistribute(['--rate', '4M'])).toBeGreaterThanOrEqual(AT_LEAST_MS);
    expect(await timedDistribute()).toBeLessThan(AT_LEAST_MS);
  });

  it('rates are checked where they are given: flags, distribute, the config file, with k/M/G and a range', async () => {
    const file = join(source, 'capped-0.bin');
    const bad = await h.run(SERVER_BIN, ['distribute', GROUP, file, '--rate', 'fast', '--state-dir', c.serverState]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('not a rate');
    const low = await h.run(SERVER_BIN, ['distribute', GROUP, file, '--rate', '10k', '--state-dir', c.serverState]);
    expect(low.code).toBe(2);
    expect(low.stderr).toContain('out of range');
    const member2 = await h.run(CLIENT_BIN, ['id', '--peer-rate', '1x', '--state-dir', await h.dir('m2')]);
    expect(member2.code).toBe(2);
    const config = join(await h.dir('badconfig'), 'server.json');
    await writeFile(config, JSON.stringify({ rate: 'lots' }));
    const server = await h.run(SERVER_BIN, ['status', '--config', config, '--state-dir', c.serverState]);
    expect(server.code).not.toBe(0);
    expect(server.stderr).toContain('rate');
  });

  it('--help lists --rate for the daemon and for distribute, and --peer-rate for the member', async () => {
    expect((await h.run(SERVER_BIN, ['--help'])).stdout).toMatch(/--rate +the most the server uploads/);
    expect((await h.run(SERVER_BIN, ['distribute', '--help'])).stdout).toMatch(/--rate +the most these files take/);
    expect((await h.run(CLIENT_BIN, ['--help'])).stdout).toMatch(/--peer-rate +the most this member uploads to its peers/);
  });
});
